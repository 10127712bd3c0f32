//! Runs the voicebot1 binary against a fake ARI: writes a per-test config and starts it as a
//! [`Process`] (log captured, waited for, SIGTERM, killed on drop), which a `Voicebot` derefs to.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::fake_ari::FakeAri;
#[allow(unused_imports)]
pub use super::process::{http_get, Process, Scrape};

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
        Config {
            port_min: first,
            port_max: first + 3,
            ..Config::default()
        }
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

/// voicebot1 running against a fake ARI with `config`.
pub struct Voicebot {
    pub config: Config,
    process: Process,
    config_path: PathBuf,
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
        let probe: Vec<_> = (0..n)
            .map(|i| std::net::UdpSocket::bind(("127.0.0.1", first as u16 + i)))
            .collect();
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
        let config_path = std::env::temp_dir().join(format!(
            "voicebot1-test-{}-{}-{}.toml",
            std::process::id(),
            name,
            n
        ));
        std::fs::write(&config_path, config.to_toml(&fake.url())).expect("write config");
        let process = Process::spawn(name, &config_path, None);
        Voicebot {
            config,
            process,
            config_path,
        }
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
            self.log_text()
                .lines()
                .any(|l| l.contains("shutdown complete") && l.contains(&pool)),
            "no log line with `shutdown complete` and `{pool}`"
        );
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

impl Drop for Voicebot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_path);
    }
}
