//! Helpers for end-to-end tests against the real Asterisk sandbox (`scripts/asterisk-sandbox.sh`)
//! and real SIPp processes. Every process started here is killed when its guard drops, so a
//! failing assertion leaves nothing running.

#![allow(dead_code)]

use std::fs;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use voicebot1::ari::rest::Unobserved;
use voicebot1::ari::AriClient;
use voicebot1::config::{Config, ProcessEnv};

use crate::process::Process;

pub fn env_port(name: &str, default: u16) -> u16 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn ari_port() -> u16 {
    env_port("VB1_ARI_PORT", 8088)
}

pub fn sip_port() -> u16 {
    env_port("VB1_SIP_PORT", 5060)
}

pub fn dest_port() -> u16 {
    env_port("VB1_DEST_PORT", 5080)
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory for one test (SIPp needs `pcap/g711a.pcap` below its working directory).
/// Removed when the test passes; kept, with its logs and SIP traces, when it fails.
pub struct Workdir(PathBuf);

impl std::ops::Deref for Workdir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

pub fn workdir(test: &str) -> Workdir {
    let dir = std::env::temp_dir().join(format!("vb1-e2e-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("pcap")).unwrap();
    fs::copy(
        "/usr/share/sip-tester/g711a.pcap",
        dir.join("pcap/g711a.pcap"),
    )
    .expect("sip-tester's g711a.pcap (apt-get install sip-tester)");
    Workdir(dir)
}

/// A REST client for checks, from the same config code voicebot1 uses.
pub fn ari() -> AriClient {
    let config = Config::parse(&config_text(26500, 26519, 7000), "e2e", &ProcessEnv).unwrap();
    AriClient::new(&config.ari, std::sync::Arc::new(Unobserved))
}

pub fn config_text(port_min: u16, port_max: u16, phase_ms: u64) -> String {
    format!(
        "[ari]\nurl = \"http://127.0.0.1:{}\"\npassword = \"voicebot1-sandbox\"\n\
         [media]\nport_min = {port_min}\nport_max = {port_max}\nphase_ms = {phase_ms}\n\
         [transfer]\ndial_timeout_s = 10\n[service]\nworkers = 4\nlog_level = \"debug\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        ari_port()
    )
}

/// Fails the test early with a clear message when the sandbox is not up.
pub fn require_sandbox() {
    if let Err(e) = ari().asterisk_version() {
        panic!("the Asterisk sandbox is not answering ({e}); run: scripts/asterisk-sandbox.sh up");
    }
}

/// Asserts Asterisk holds no channel and no bridge (waiting a little for hang-ups to settle).
pub fn assert_asterisk_empty(log: &Path) {
    let ari = ari();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let channels = ari.list_channels().unwrap();
        let bridges = ari.list_bridges().unwrap();
        if channels.is_empty() && bridges.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let names: Vec<_> = channels
                .iter()
                .map(|c| format!("{} ({})", c.id, c.name))
                .collect();
            let bids: Vec<_> = bridges.iter().map(|b| b.id.clone()).collect();
            panic!("Asterisk still holds channels {names:?} and bridges {bids:?}\n--- voicebot1 log ---\n{}", read(log));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// A helper process (SIPp), killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn from_child(name: &str, child: Child) -> Proc {
        Proc {
            name: name.into(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// voicebot1 itself (the [`Process`] it derefs to), its log also in `dir/voicebot1.log`.
pub struct Voicebot {
    process: Process,
    pub log: PathBuf,
}

impl Voicebot {
    /// Starts voicebot1 and waits until it takes calls.
    pub fn start(dir: &Path, config: &str) -> Voicebot {
        let vb = Voicebot::spawn(dir, config);
        vb.expect_log("taking calls", Duration::from_secs(15));
        vb
    }

    /// Starts voicebot1 without waiting for anything.
    pub fn spawn(dir: &Path, config: &str) -> Voicebot {
        let conf = dir.join("voicebot1.toml");
        fs::write(&conf, config).unwrap();
        let log = dir.join("voicebot1.log");
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Voicebot {
            process: Process::spawn(&name, &conf, Some(&log)),
            log,
        }
    }

    /// Waits until `/health` answers `status`; its line.
    pub fn expect_health(&self, status: u16, timeout: Duration) -> String {
        match self.wait_health(status, timeout) {
            Ok(line) => line,
            Err((got, line)) => panic!("/health still answers {got} ({line}) after {timeout:?}, not {status}\n--- voicebot1 log ---\n{}", self.log_text()),
        }
    }

    /// SIGTERM; asserts exit status 0 and a full pool in the last line.
    pub fn stop_clean(mut self) -> String {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(8));
        let text = self.log_text();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "voicebot1 did not exit 0 after SIGTERM\n{text}"
        );
        let last = text
            .lines()
            .rev()
            .find(|l| l.contains("shutdown complete"))
            .unwrap_or_else(|| panic!("no shutdown line\n{text}"));
        let pool = last
            .split("pool ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap_or("");
        let (free, total) = pool.split_once('/').unwrap_or(("", "?"));
        assert_eq!(free, total, "pool not full at shutdown: {last}");
        text
    }
}

impl Deref for Voicebot {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl DerefMut for Voicebot {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// A SIPp process run in `dir` with a scenario from `scripts/sipp/`, its hold-time sample
/// rewritten to `hold_ms` when given.
pub fn sipp(dir: &Path, name: &str, scenario: &str, hold_ms: Option<u64>, args: &[&str]) -> Proc {
    let src = repo().join("scripts/sipp").join(scenario);
    let mut xml = fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    if let Some(ms) = hold_ms {
        xml = set_sample(&xml, ms);
    }
    sipp_xml(dir, name, &xml, args)
}

/// A SIPp process run in `dir` with the scenario `xml`.
pub fn sipp_xml(dir: &Path, name: &str, xml: &str, args: &[&str]) -> Proc {
    let path = dir.join(format!("{name}.xml"));
    fs::write(&path, xml).unwrap();
    let child = Command::new("sipp")
        .current_dir(dir)
        .arg("-sf")
        .arg(&path)
        .args(["-nostdin", "-trace_err", "-trace_msg", "-message_file"])
        .arg(dir.join(format!("{name}.msg")))
        .args(args)
        .stdout(fs::File::create(dir.join(format!("{name}.out"))).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (apt-get install sip-tester)");
    Proc::from_child(name, child)
}

/// Rewrites every uniform `<sample ... min=".." max="..">` in a scenario to a fixed value.
pub fn set_sample(xml: &str, ms: u64) -> String {
    let mut out = String::new();
    for line in xml.lines() {
        if line.contains("<sample") && line.contains("min=\"") && line.contains("max=\"") {
            out.push_str(&replace_attr(&replace_attr(line, "min", ms), "max", ms));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn replace_attr(line: &str, attr: &str, value: u64) -> String {
    let key = format!(" {attr}=\"");
    let Some(start) = line.find(&key) else {
        return line.to_string();
    };
    let from = start + key.len();
    let Some(len) = line[from..].find('"') else {
        return line.to_string();
    };
    format!("{}{}{}", &line[..from], value, &line[from + len..])
}

/// The transfer destination UAS on the sandbox's AVAYA-endpoint port.
pub fn destination(dir: &Path, scenario: &str, hold_ms: Option<u64>) -> Proc {
    let port = dest_port().to_string();
    let p = sipp(
        dir,
        "dest",
        scenario,
        hold_ms,
        &["-i", "127.0.0.1", "-p", &port, "-mp", "7100"],
    );
    // Let it bind before Asterisk may call it.
    std::thread::sleep(Duration::from_millis(300));
    p
}

/// One caller with audio to 3308487, on its own SIP and media ports.
pub fn caller(dir: &Path, hold_ms: u64, sip: u16, media: u16) -> Proc {
    let remote = format!("127.0.0.1:{}", sip_port());
    let (sip, media) = (sip.to_string(), media.to_string());
    let mut args = vec![
        remote.as_str(),
        "-s",
        "3308487",
        "-i",
        "127.0.0.1",
        "-p",
        &sip,
        "-mp",
        &media,
        "-m",
        "1",
    ];
    args.extend(["-timeout", "120s"]);
    sipp(dir, "caller", "uac-audio.xml", Some(hold_ms), &args)
}

/// SIP messages the named SIPp process received or sent.
pub fn sip_messages(dir: &Path, name: &str) -> String {
    read(&dir.join(format!("{name}.msg")))
}

/// Counts UDP packets to `port` on loopback for `duration`, with tcpdump.
pub fn count_udp_to(port: u16, duration: Duration) -> usize {
    let out = Command::new("timeout")
        .arg(format!("{}", duration.as_secs_f64()))
        .args(["tcpdump", "-i", "lo", "-n", "-q", "-l"])
        .arg(format!("udp and dst port {port}"))
        .stderr(Stdio::null())
        .output()
        .expect("tcpdump (apt-get install tcpdump)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" UDP"))
        .count()
}

/// A caller placed with a long hold time at `since` must have been hung up by the far side, well
/// before its own BYE would have gone, and its SIPp must count the call as ok.
pub fn assert_caller_hung_up(caller: &mut Proc, since: Instant, dir: &Path) {
    let status = caller
        .wait(Duration::from_secs(15))
        .expect("caller was not hung up");
    assert!(
        since.elapsed() < Duration::from_secs(30),
        "caller ended only after its own hold time"
    );
    assert!(
        status.success(),
        "caller SIPp failed:\n{}",
        sip_messages(dir, "caller")
    );
}

/// The end of every sandbox test: Asterisk empty, then a clean SIGTERM with the pool full.
/// Returns voicebot1's whole log.
pub fn finish(vb: Voicebot) -> String {
    assert_asterisk_empty(&vb.log);
    vb.stop_clean()
}

/// The value of one series of a `/metrics` text, written as there (`name{label="v"}`).
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}")) as u64
}

/// Runs `scripts/asterisk-sandbox.sh ARGS` (the version and ports follow the running sandbox).
pub fn sandbox_script(args: &[&str]) -> std::process::ExitStatus {
    Command::new(repo().join("scripts/asterisk-sandbox.sh"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("scripts/asterisk-sandbox.sh")
}
