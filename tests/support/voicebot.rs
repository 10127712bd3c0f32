//! Runs the voicebot1 binary against a fake ARI: writes a per-test config,
//! captures stderr/stdout line by line, waits for log lines, stops it with
//! SIGTERM and prints the captured log when a test fails.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::fake_ari::FakeAri;

/// Per-test configuration; `Default` matches the values in the test contract.
#[derive(Clone, Debug)]
pub struct Config {
    pub password: String,
    pub request_timeout_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub port_min: u16,
    pub port_max: u16,
    pub phase_ms: u64,
    pub endpoint: String,
    pub dial_timeout_s: u64,
    pub workers: u32,
    pub log_level: String,
    /// `[service] on_stop`: "handover" (the default) or "hangup".
    pub on_stop: String,
    /// `[service] janitor_s`.
    pub janitor_s: u64,
    /// Lines of the `[admission]` section.
    pub admission: String,
    /// `[metrics] listen`. The default, port 0, takes any free port (tests run in parallel);
    /// [`Voicebot::metrics_addr`] reads which one from the log.
    pub metrics_listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            password: super::fake_ari::DEFAULT_PASSWORD.into(),
            request_timeout_ms: 2000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 1000,
            port_min: 27100,
            port_max: 27103,
            phase_ms: 1000,
            endpoint: "PJSIP/4438007@AVAYA-endpoint".into(),
            dial_timeout_s: 5,
            workers: 2,
            log_level: "debug".into(),
            on_stop: "handover".into(),
            janitor_s: 60,
            admission: String::new(),
            metrics_listen: "127.0.0.1:0".into(),
        }
    }
}

impl Config {
    /// Default config with its own range of 4 free media ports (see `free_port_range`).
    pub fn new() -> Config {
        let first = free_port_range(4);
        Config { port_min: first, port_max: first + 3, ..Config::default() }
    }
    pub fn pool_size(&self) -> usize {
        (self.port_max - self.port_min + 1) as usize
    }
    pub fn to_toml(&self, url: &str) -> String {
        format!(
            "[ari]\nurl = \"{url}\"\nusername = \"voicebot1\"\npassword = \"{}\"\napp = \"voicebot1\"\n\
             request_timeout_ms = {}\nreconnect_min_ms = {}\nreconnect_max_ms = {}\n\n\
             [media]\nport_min = {}\nport_max = {}\nphase_ms = {}\n\n\
             [transfer]\nendpoint = \"{}\"\ndial_timeout_s = {}\n\n\
             [service]\nworkers = {}\nlog_level = \"{}\"\non_stop = \"{}\"\njanitor_s = {}\n\n\
             [admission]\n{}\n\n\
             [metrics]\nlisten = \"{}\"\n",
            self.password,
            self.request_timeout_ms,
            self.reconnect_min_ms,
            self.reconnect_max_ms,
            self.port_min,
            self.port_max,
            self.phase_ms,
            self.endpoint,
            self.dial_timeout_s,
            self.workers,
            self.log_level,
            self.on_stop,
            self.janitor_s,
            self.admission,
            self.metrics_listen,
        )
    }
}

#[derive(Default)]
struct LogBuf {
    lines: Vec<String>,
    closed_streams: usize,
}

/// A running voicebot1 process.
pub struct Voicebot {
    pub config: Config,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    log: Arc<(Mutex<LogBuf>, Condvar)>,
    config_path: PathBuf,
    name: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static NEXT_RANGE: AtomicUsize = AtomicUsize::new(0);

/// First port of `n` consecutive UDP ports on 127.0.0.1 that are free right
/// now, below the Linux ephemeral range. Ranges never repeat within one test
/// process (tests run in parallel threads), and the start depends on the
/// process id so that two test runs at once (two developers, or cargo test
/// run twice) most likely use different ranges; every candidate range is
/// probed by binding it.
pub fn free_port_range(n: u16) -> u16 {
    // 28000-31999: below the ephemeral range, above conf/voicebot1.toml's 26500-26999.
    const LOW: u32 = 28_000;
    const SPAN: u32 = 4_000;
    let base = (std::process::id().wrapping_mul(7919) % (SPAN / 16)) * 16;
    for _ in 0..500 {
        let k = NEXT_RANGE.fetch_add(1, Ordering::SeqCst) as u32;
        let first = LOW + (base + k * 16) % SPAN;
        let probe: Vec<_> =
            (0..n).map(|i| std::net::UdpSocket::bind(("127.0.0.1", first as u16 + i))).collect();
        if probe.iter().all(|r| r.is_ok()) {
            return first as u16;
        }
    }
    panic!("no free range of {n} UDP ports found");
}

impl Voicebot {
    /// Writes the config for `fake` and starts `voicebot1 CONFIGFILE`.
    pub fn start(name: &str, fake: &FakeAri, config: Config) -> Voicebot {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let config_path =
            std::env::temp_dir().join(format!("voicebot1-test-{}-{}-{}.toml", std::process::id(), name, n));
        std::fs::write(&config_path, config.to_toml(&fake.url())).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_voicebot1"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn voicebot1");
        let log = Arc::new((Mutex::new(LogBuf::default()), Condvar::new()));
        pump(child.stderr.take().unwrap(), log.clone(), "");
        pump(child.stdout.take().unwrap(), log.clone(), "[stdout] ");
        Voicebot { config, child: Some(child), exit: None, log, config_path, name: name.to_string() }
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
        self.log.0.lock().unwrap().lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_log_where(timeout, |l| l.contains(needle))
    }

    /// Waits for a log line containing all of `needles`.
    pub fn wait_log_all(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        self.wait_log_where(timeout, |l| needles.iter().all(|n| l.contains(n)))
    }

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
            g = c.wait_timeout(g, (deadline - now).min(Duration::from_millis(100))).unwrap().0;
        }
    }

    /// The address `/metrics` and `/health` are served on, from the start-up line.
    pub fn metrics_addr(&self) -> String {
        let line = self.wait_log("metrics: serving", Duration::from_secs(10)).expect("no `metrics: serving` line in the log");
        let url = line.split("http://").nth(1).expect("metrics line without a URL");
        url.split_whitespace().next().unwrap_or_default().to_string()
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

    /// Waits up to `timeout` for the process to exit on its own (no signal); its status, or None
    /// if it is still running.
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
        let pid = self.pid();
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
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

    /// SIGTERM, then asserts: exit status 0 within 5 s, a `shutdown complete`
    /// line and `pool N/N free` for the configured pool size.
    pub fn stop_and_assert_clean(&mut self) {
        let st = self.terminate(Duration::from_secs(5));
        assert!(st.is_some(), "voicebot1 did not exit within 5 s of SIGTERM");
        let st = st.unwrap();
        assert!(st.success(), "voicebot1 exited with {st} after SIGTERM");
        let n = self.config.pool_size();
        let pool = format!("pool {n}/{n} free");
        assert!(
            self.log_text().lines().any(|l| l.contains("shutdown complete") && l.contains(&pool)),
            "no log line with `shutdown complete` and `{pool}`"
        );
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

impl Drop for Voicebot {
    fn drop(&mut self) {
        if self.is_running() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if thread::panicking() {
            eprintln!("----- voicebot1 log ({}) -----\n{}\n----- end of voicebot1 log -----", self.name, self.log_text());
            if let Some(st) = self.exit {
                eprintln!("voicebot1 exit status: {st}");
            }
        }
        let _ = std::fs::remove_file(&self.config_path);
    }
}

fn pump(r: impl Read + Send + 'static, log: Arc<(Mutex<LogBuf>, Condvar)>, prefix: &'static str) {
    thread::spawn(move || {
        let mut br = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match br.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if std::env::var_os("VOICEBOT1_TEST_ECHO").is_some() {
                        eprintln!("{prefix}{line}");
                    }
                    let (m, c) = &*log;
                    m.lock().unwrap().lines.push(format!("{prefix}{line}"));
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
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
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
        self.0.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
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
            .filter(|l| !l.starts_with('#') && (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}
