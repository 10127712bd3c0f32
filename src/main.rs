//! `voicebot1 [CONFIG]`: parses the command line, sets up logging and signals, and runs the
//! service. Exit status: 0 clean shutdown, 1 runtime failure, 2 configuration or usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use log::{error, info};
use simplelog::{CombinedLogger, ConfigBuilder, SharedLogger, WriteLogger};

use voicebot1::config::{Config, ProcessEnv};

const USAGE: &str = "\
usage: voicebot1 [--check [--online]] [CONFIG]
       voicebot1 --version | --help

Runs the voicebot1 Asterisk ARI application with CONFIG (default conf/voicebot1.toml).
  --check    validate CONFIG, print every error found, and exit (0 valid, 2 invalid)
  --online   with --check: also ask the configured Asterisk (credentials, version, modules,
             application name, transfer endpoint) and check the UDP port range and the
             metrics address are free here; one PASS/FAIL line each, exit 0 only if none
             fails (1 otherwise)
  --version  print the version and exit
Stop with Ctrl+C or SIGTERM: active calls are cleaned up; a second signal exits at once.";

fn main() -> ExitCode {
    let mut check = false;
    let mut online = false;
    let mut path: Option<PathBuf> = None;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--help" | "-h") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some("--version" | "-V") => {
                println!("voicebot1 {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            Some("--check") => check = true,
            Some("--online") => online = true,
            Some(s) if s.starts_with('-') => {
                eprintln!("voicebot1: unknown option {s}\n{USAGE}");
                return ExitCode::from(2);
            }
            _ if path.is_some() => {
                eprintln!("voicebot1: more than one CONFIG given\n{USAGE}");
                return ExitCode::from(2);
            }
            _ => path = Some(PathBuf::from(arg)),
        }
    }
    if online && !check {
        eprintln!("voicebot1: --online goes with --check\n{USAGE}");
        return ExitCode::from(2);
    }
    let path = path.unwrap_or_else(|| PathBuf::from("conf/voicebot1.toml"));
    let config = match Config::load(&path, &ProcessEnv) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    if check {
        println!("{}: configuration is valid", path.display());
        if !online {
            return ExitCode::SUCCESS;
        }
        let checks = voicebot1::preflight::run(&config);
        for c in &checks {
            println!("{c}");
        }
        let failed = checks.iter().filter(|c| c.failed()).count();
        if failed > 0 {
            println!("{failed} of {} checks failed", checks.len());
            return ExitCode::FAILURE;
        }
        println!("all checks passed: ready for calls");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging(&config) {
        eprintln!("config error in {}: service.log_file: {e}", path.display());
        return ExitCode::from(2);
    }

    let (sig_tx, sig_rx) = crossbeam_channel::bounded::<()>(1);
    let second = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = ctrlc::set_handler(move || {
        if second.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // The operator insists: leave now, cleanup or not.
            eprintln!("voicebot1: second signal, exiting at once");
            std::process::exit(130);
        }
        let _ = sig_tx.try_send(());
    }) {
        error!("cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }

    info!(
        "voicebot1 {} starting: ARI {} as {:?}, app {:?}, {} workers",
        env!("CARGO_PKG_VERSION"),
        config.ari.rest_base,
        config.ari.username,
        config.ari.app,
        config.service.workers
    );
    match voicebot1::app::run(config, sig_rx) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) -> Result<(), String> {
    let log_config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .set_location_level(log::LevelFilter::Off)
        .add_filter_allow_str("voicebot1")
        .build();
    let level = config.service.log_level;
    // Plain text on stderr (the journal under systemd), one write per line.
    let stderr = std::io::LineWriter::new(std::io::stderr());
    let mut loggers: Vec<Box<dyn SharedLogger>> =
        vec![WriteLogger::new(level, log_config.clone(), stderr)];
    if let Some(file) = &config.service.log_file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
        loggers.push(WriteLogger::new(level, log_config, f));
    }
    CombinedLogger::init(loggers).map_err(|e| e.to_string())
}
