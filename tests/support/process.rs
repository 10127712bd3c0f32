//! A voicebot1 process under test, for the fake-ARI tests and the sandbox end-to-end tests alike:
//! started with a config file, its log (stderr, and stdout marked `[stdout] `) captured line by
//! line as it comes, log lines waited for, stopped with a signal, killed when dropped.
//!
//! The log is kept in memory; when a file is given it is written there too, line by line, so that
//! a failed test's directory holds it. A test that panics prints the log (or says where it is).

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct LogBuf {
    lines: Vec<String>,
    closed_streams: usize,
}

/// The log lines, shared with the two threads that read the process's stderr and stdout.
type Log = Arc<(Mutex<LogBuf>, Condvar)>;

/// A running (or exited) voicebot1 process.
pub struct Process {
    /// Names the process in the log printed by a failing test.
    name: String,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    log: Log,
    log_file: Option<PathBuf>,
}

impl Process {
    /// Starts `voicebot1 CONFIG`; `log_file`, if given, receives the log as well.
    pub fn spawn(name: &str, config: &Path, log_file: Option<&Path>) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voicebot1"))
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn voicebot1");
        let log: Log = Arc::new((Mutex::new(LogBuf::default()), Condvar::new()));
        let file = log_file.map(|p| {
            Arc::new(Mutex::new(
                File::create(p).expect("create the voicebot1 log file"),
            ))
        });
        pump(child.stderr.take().unwrap(), log.clone(), file.clone(), "");
        pump(child.stdout.take().unwrap(), log.clone(), file, "[stdout] ");
        Process {
            name: name.to_string(),
            child: Some(child),
            exit: None,
            log,
            log_file: log_file.map(Path::to_path_buf),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        let g = self.log.0.lock().unwrap();
        g.lines.join("\n")
    }

    /// Number of log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_log_where(timeout, |l| l.contains(needle))
    }

    /// Waits for a log line containing all of `needles`.
    pub fn wait_log_all(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        self.wait_log_where(timeout, |l| needles.iter().all(|n| l.contains(n)))
    }

    /// Waits for a log line containing `needle`, panicking with the log if none comes in time.
    pub fn expect_log(&self, needle: &str, timeout: Duration) -> String {
        match self.wait_log(needle, timeout) {
            Some(line) => line,
            None => panic!(
                "no log line containing {needle:?} within {timeout:?}\n--- voicebot1 log ---\n{}",
                self.log_text()
            ),
        }
    }

    /// Waits for a log line that satisfies `pred`; None once `timeout` has passed or the
    /// process has closed its output.
    pub fn wait_log_where(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.log;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline || g.closed_streams >= 2 {
                return None;
            }
            g = c
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(100)))
                .unwrap()
                .0;
        }
    }

    /// The address `/metrics` and `/health` are served on, from the start-up line (the configs
    /// of the tests listen on port 0).
    pub fn metrics_addr(&self) -> String {
        let line = self
            .wait_log("metrics: serving", Duration::from_secs(10))
            .expect("no `metrics: serving` line in the log");
        let url = line
            .split("http://")
            .nth(1)
            .expect("metrics line without a URL");
        url.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// `GET path` on the metrics endpoint: status and body.
    pub fn get_metrics_path(&self, path: &str) -> (u16, String) {
        http_get(&format!("http://{}{path}", self.metrics_addr()))
    }

    /// A scrape of `/metrics`, asserting it answers 200.
    pub fn scrape(&self) -> Scrape {
        let (status, body) = self.get_metrics_path("/metrics");
        assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
        Scrape(body)
    }

    /// Scrapes until `series` has `value` (a gauge that follows a call's turn); the last scrape.
    pub fn wait_metric(&self, series: &str, value: u64, timeout: Duration) -> Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.scrape();
            if m.value(series) == Some(value as f64) || Instant::now() > deadline {
                return m;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /health`: status and its one line.
    pub fn health(&self) -> (u16, String) {
        let (status, body) = self.get_metrics_path("/health");
        (status, body.trim_end().to_string())
    }

    /// Waits until `/health` answers `status`; the last line it gave.
    pub fn wait_health(&self, status: u16, timeout: Duration) -> Result<String, (u16, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let (got, line) = self.health();
            if got == status {
                return Ok(line);
            }
            if Instant::now() > deadline {
                return Err((got, line));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(st))) => {
                self.exit = Some(st);
                false
            }
            _ => false,
        }
    }

    /// Sends signal `sig` (`TERM`, `KILL`, …) to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits up to `timeout` for the process to exit (on its own or after a signal); its status,
    /// or None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.wait_streams_closed(Duration::from_secs(2));
        self.exit
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit. Returns None if it
    /// did not exit in time (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exit {
            return Some(st);
        }
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                self.wait_streams_closed(Duration::from_secs(2));
                return self.exit;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        None
    }

    fn wait_streams_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.log;
        let mut g = m.lock().unwrap();
        while g.closed_streams < 2 && Instant::now() < deadline {
            g = c.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.is_running() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if thread::panicking() {
            match &self.log_file {
                Some(path) => eprintln!("voicebot1 log ({}): {}", self.name, path.display()),
                None => eprintln!(
                    "----- voicebot1 log ({}) -----\n{}\n----- end of voicebot1 log -----",
                    self.name,
                    self.log_text()
                ),
            }
            if let Some(st) = self.exit {
                eprintln!("voicebot1 exit status: {st}");
            }
        }
    }
}

/// Reads lines from one output stream of the process into the log (and its file) until it closes.
fn pump(
    r: impl Read + Send + 'static,
    log: Log,
    file: Option<Arc<Mutex<File>>>,
    prefix: &'static str,
) {
    thread::spawn(move || {
        let mut br = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match br.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = format!("{prefix}{}", String::from_utf8_lossy(&buf).trim_end());
                    if std::env::var_os("VOICEBOT1_TEST_ECHO").is_some() {
                        eprintln!("{line}");
                    }
                    if let Some(f) = &file {
                        let _ = writeln!(f.lock().unwrap(), "{line}");
                    }
                    let (m, c) = &*log;
                    m.lock().unwrap().lines.push(line);
                    c.notify_all();
                }
            }
        }
        let (m, c) = &*log;
        m.lock().unwrap().closed_streams += 1;
        c.notify_all();
    });
}

/// A plain HTTP GET (ureq, as voicebot1 itself uses): status and body, whatever the status.
pub fn http_get(url: &str) -> (u16, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    match agent.get(url).call() {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// One `/metrics` text, read by series.
#[derive(Clone, Debug)]
pub struct Scrape(pub String);

impl Scrape {
    /// The value of one series, written as in the text (`name` or `name{label="v",...}`).
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The value of one series, which must be there.
    pub fn get(&self, series: &str) -> u64 {
        match self.value(series) {
            Some(v) => v as u64,
            None => panic!("no series {series} in the scrape:\n{}", self.0),
        }
    }

    /// The sum over every series of the family `name` (all label values).
    pub fn sum(&self, name: &str) -> u64 {
        self.0
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}
