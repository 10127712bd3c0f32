//! Benchmark: the resident memory of the voicebot1 binary, idle and with N calls talking to the
//! bot at once. Run by `scripts/bench-memory.sh` (`cargo bench --bench memory -- --help`).
//!
//! voicebot1 runs against the fake ARI of `tests/support` (no Asterisk needed, none disturbed):
//! RSS once it is connected and idle, then with N callers in the media phase (each with its
//! bridge, its externalMedia channel and its echo thread on a leased socket), then after they
//! hung up. RSS is `VmRSS` from /proc/PID/status, read a few times a second apart, the largest
//! kept.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{Config, FakeAri, Voicebot};

const USAGE: &str = "\
memory [--calls 300] [--workers 8]
  RSS of voicebot1 idle, with --calls bot sessions at once, and after they ended
";

struct Status {
    rss_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    threads: u64,
}

fn status(pid: u32) -> Status {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    Status {
        rss_kb: field("VmRSS:"),
        anon_kb: field("RssAnon:"),
        file_kb: field("RssFile:"),
        threads: field("Threads:"),
    }
}

/// The largest of a few readings, 300 ms apart, after things settled.
fn settled(pid: u32) -> Status {
    std::thread::sleep(Duration::from_secs(1));
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(300));
            status(pid)
        })
        .max_by_key(|s| s.rss_kb)
        .expect("readings")
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            eprintln!("memory: timed out waiting for {what}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (mut calls, mut workers) = (300u16, 8u32);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u32>().ok());
        match (flag.as_str(), value) {
            ("--calls", Some(v)) if (1..=2000).contains(&v) => calls = v as u16,
            ("--workers", Some(v)) if v > 0 => workers = v,
            ("-h" | "--help", _) => {
                print!("{USAGE}");
                return;
            }
            _ => {
                eprint!("memory: bad arguments\n{USAGE}");
                std::process::exit(2);
            }
        }
    }

    let fake = FakeAri::start();
    // A pool a little larger than the calls, and a media phase longer than the measurement.
    let first = support::voicebot::free_port_range(calls + 8);
    let config = Config {
        port_min: first,
        port_max: first + calls + 7,
        phase_ms: 600_000,
        workers,
        log_level: "info".into(),
        request_timeout_ms: 10_000,
        ..Config::default()
    };
    let mut vb = Voicebot::start("memory", &fake, config);
    let pid = vb.pid();
    wait_for("voicebot1 to connect", Duration::from_secs(20), || {
        fake.ws_connected() > 0
    });
    let idle = settled(pid);

    let ids: Vec<String> = (0..calls).map(|i| format!("1765000000.{i}")).collect();
    let started = Instant::now();
    for id in &ids {
        fake.new_inbound_call(id);
    }
    wait_for(
        "every caller to be bridged with the bot",
        Duration::from_secs(120),
        || vb.count_log("caller and media bridged") >= ids.len(),
    );
    let set_up = started.elapsed();
    let busy = settled(pid);

    for id in &ids {
        fake.caller_hangs_up(id);
    }
    wait_for("every call to end", Duration::from_secs(120), || {
        vb.count_log("ended (caller hung up)") >= ids.len()
    });
    let after = settled(pid);
    let clean = vb
        .terminate(Duration::from_secs(20))
        .is_some_and(|s| s.success());

    let per_call_kb = busy.rss_kb.saturating_sub(idle.rss_kb) as f64 / f64::from(calls);
    println!(
        "{:<28} {:>7} {:>8} {:>8} {:>8}",
        "voicebot1", "rss_MB", "anon_MB", "file_MB", "threads"
    );
    for (what, s) in [
        ("idle (connected, no call)", &idle),
        (&*format!("{calls} bot sessions"), &busy),
        ("after they ended", &after),
    ] {
        println!(
            "{what:<28} {:>7.1} {:>8.1} {:>8.1} {:>8}",
            mb(s.rss_kb),
            mb(s.anon_kb),
            mb(s.file_kb),
            s.threads
        );
    }
    println!(
        "per call: {per_call_kb:.1} KB ({calls} calls set up in {:.1} s; workers {workers}; exit after SIGTERM {})",
        set_up.as_secs_f64(),
        if clean { "clean" } else { "NOT clean" }
    );
    let goal = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "goal idle < 10 MB: {}; per call < 50 KB: {}",
        goal(idle.rss_kb < 10 * 1024),
        goal(per_call_kb < 50.0)
    );
}
