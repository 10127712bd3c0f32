//! The configuration file: TOML, every key optional with a documented default, unknown keys
//! rejected.
//!
//! The file is read into a `toml::Table` and checked key by key by hand instead of through a
//! `serde` derive: a derive stops at the first wrong value, and `voicebot1 --check` must report
//! every error in the file at once, each naming its key.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use log::LevelFilter;
use toml::{Table, Value};

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub ari: AriConfig,
    pub media: MediaConfig,
    pub transfer: TransferConfig,
    pub service: ServiceConfig,
    pub admission: AdmissionConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone)]
pub struct AriConfig {
    /// REST base, ending in `/ari` (e.g. `http://127.0.0.1:8088/ari`).
    pub rest_base: String,
    /// WebSocket base, ending in `/ari` (e.g. `ws://127.0.0.1:8088/ari`).
    pub ws_base: String,
    pub username: String,
    pub password: Secret,
    pub app: String,
    pub inbound_arg: String,
    pub request_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long the event WebSocket may be silent before voicebot1 pings Asterisk.
    pub ping_interval: Duration,
    /// How long a ping may go unanswered (no pong, no event, nothing) before voicebot1 drops the
    /// event WebSocket as dead and reconnects.
    pub pong_timeout: Duration,
    /// PEM file with extra CA certificates for `https://` / `wss://`.
    pub ca_file: Option<PathBuf>,
    /// TLS client settings when the URL is `https://`: public roots plus `ca_file`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub advertise_host: String,
    pub bind_host: IpAddr,
    pub asterisk_host: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub format: MediaFormat,
    pub phase: Duration,
    pub on_pool_exhausted: PoolExhausted,
}

#[derive(Debug, Clone)]
pub struct TransferConfig {
    pub endpoint: String,
    /// Empty: present the caller's own number.
    pub caller_id: String,
    pub dial_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub workers: usize,
    pub log_level: LevelFilter,
    pub log_file: Option<PathBuf>,
    /// What a stop (SIGTERM, Ctrl+C) does with calls.
    pub on_stop: OnStop,
    /// How long a `handover` stop waits for calls to leave the bot.
    pub drain: Duration,
    /// How often the janitor looks for what no call owns (sooner while something is left).
    pub janitor: Duration,
}

/// When a new call is not taken (see `admission`).
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Calls at once (all phases); 0: no ceiling.
    pub max_calls: usize,
    /// Calls being set up at once (bridge, externalMedia); 0: no ceiling.
    pub max_setups: usize,
    /// Asterisk's recent REST answer time (moving average) above which new calls are not taken;
    /// zero: not used.
    pub max_rest_latency: Duration,
    /// How long after a REST request went unanswered (timeout, refused) new calls are not taken.
    pub after_timeout: Duration,
    pub on_overload: OnOverload,
}

/// What a call gets when it is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOverload {
    /// Hung up at once with cause congestion (34): one request, whatever the load.
    Reject,
    /// Transferred to the destination without the bot.
    Transfer,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where `/metrics` and `/health` are served; `None` when turned off. Port 0 takes any free
    /// port (logged at start-up).
    pub listen: Option<SocketAddr>,
}

/// What a stop does with the calls voicebot1 holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// Upgrades and restarts: no new bot sessions, callers with the bot are transferred, and
    /// voicebot1 exits leaving transferred and connected calls to the next instance, which adopts
    /// them.
    Handover,
    /// Every call is ended at once (hung up), as for decommissioning a box in a hurry.
    Hangup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaFormat {
    Alaw,
    Ulaw,
    Slin16,
}

impl MediaFormat {
    /// The value ARI's `format` parameter takes.
    /// One 20 ms RTP packet of silence in this format: payload type, fill byte, payload length.
    pub fn silence(self) -> crate::media::Silence {
        match self {
            MediaFormat::Alaw => crate::media::Silence { payload_type: 8, fill: 0xd5, len: 160 },
            MediaFormat::Ulaw => crate::media::Silence { payload_type: 0, fill: 0xff, len: 160 },
            // Asterisk maps slin16 on externalMedia to a dynamic payload type; 118 is its default.
            MediaFormat::Slin16 => crate::media::Silence { payload_type: 118, fill: 0, len: 640 },
        }
    }

    pub fn as_ari(self) -> &'static str {
        match self {
            MediaFormat::Alaw => "alaw",
            MediaFormat::Ulaw => "ulaw",
            MediaFormat::Slin16 => "slin16",
        }
    }
}

/// What a call gets when every UDP port is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolExhausted {
    /// Skip the bot: transfer the caller straight to the destination.
    Transfer,
    /// Hang the caller up (cause: congestion).
    Hangup,
}

/// A string that never shows itself in `Debug` or `Display` output, so that a config dumped to a
/// log at any level cannot leak the ARI password.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One problem in the configuration, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `section.key`, or empty for problems with the file as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "config error in {}: {}", self.file, e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where secrets come from, so tests need not touch the process environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    /// The soft limit on open files, if known.
    fn open_file_limit(&self) -> Option<u64>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn open_file_limit(&self) -> Option<u64> {
        // /proc/self/limits: "Max open files            1024                 1048576              files"
        let text = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let soft = line["Max open files".len()..].split_whitespace().next()?;
        soft.parse().ok()
    }
}

/// File descriptors voicebot1 needs beyond its UDP sockets: std streams, log file, the
/// WebSocket, the REST keep-alive pool, one waker socket, and slack.
const FDS_BESIDES_PORTS: u64 = 64;

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            errors: vec![ConfigError { key: String::new(), message: format!("cannot read the file: {e}") }],
        })?;
        Config::parse(&text, &file, env)
    }

    /// Parses and validates configuration text; `file` only names it in errors.
    pub fn parse(text: &str, file: &str, env: &dyn Environment) -> Result<Config, ConfigErrors> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| ConfigErrors {
            file: file.to_string(),
            errors: vec![ConfigError { key: String::new(), message: format!("TOML syntax error: {}", one_line(&e.to_string())) }],
        })?;
        let mut r = Reader { errors: Vec::new(), env };
        let config = r.config(&table);
        match config {
            Some(c) if r.errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors { file: file.to_string(), errors: r.errors }),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

const SECTIONS: &[(&str, &[&str])] = &[
    (
        "ari",
        &[
            "url",
            "username",
            "password",
            "password_env",
            "password_file",
            "app",
            "inbound_arg",
            "request_timeout_ms",
            "reconnect_min_ms",
            "reconnect_max_ms",
            "ping_interval_ms",
            "pong_timeout_ms",
            "ca_file",
        ],
    ),
    (
        "media",
        &[
            "advertise_host",
            "bind_host",
            "asterisk_host",
            "port_min",
            "port_max",
            "format",
            "phase_ms",
            "on_pool_exhausted",
        ],
    ),
    ("transfer", &["endpoint", "caller_id", "dial_timeout_s"]),
    ("service", &["workers", "log_level", "log_file", "on_stop", "drain_s", "janitor_s"]),
    ("admission", &["max_calls", "max_setups", "max_rest_latency_ms", "after_timeout_ms", "on_overload"]),
    ("metrics", &["listen"]),
];

struct Reader<'e> {
    errors: Vec<ConfigError>,
    env: &'e dyn Environment,
}

/// One section of the file; an absent section reads as empty.
struct Section<'t> {
    name: &'static str,
    table: Option<&'t Table>,
}

impl<'e> Reader<'e> {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { key: key.into(), message: message.into() });
    }

    fn config(&mut self, root: &Table) -> Option<Config> {
        for (name, value) in root {
            match SECTIONS.iter().find(|(s, _)| s == name) {
                None => self.err(name.clone(), format!("unknown section (expected one of: {})", section_names())),
                Some((_, keys)) => match value.as_table() {
                    None => self.err(name.clone(), "must be a [section], not a value"),
                    Some(t) => {
                        for k in t.keys() {
                            if !keys.contains(&k.as_str()) {
                                self.err(format!("{name}.{k}"), format!("unknown key (expected one of: {})", keys.join(", ")));
                            }
                        }
                    }
                },
            }
        }
        let section = |name: &'static str| Section { name, table: root.get(name).and_then(Value::as_table) };
        let ari = self.ari(&section("ari"));
        let media = self.media(&section("media"));
        let transfer = self.transfer(&section("transfer"));
        let service = self.service(&section("service"));
        let admission = self.admission(&section("admission"));
        let metrics = self.metrics(&section("metrics"));
        Some(Config { ari: ari?, media: media?, transfer: transfer?, service: service?, admission: admission?, metrics: metrics? })
    }

    fn ari(&mut self, s: &Section) -> Option<AriConfig> {
        let url = self.string(s, "url", "http://127.0.0.1:8088");
        let username = self.string(s, "username", "voicebot1");
        let app = self.string(s, "app", "voicebot1");
        let inbound_arg = self.string(s, "inbound_arg", "inbound");
        let request_timeout = self.millis(s, "request_timeout_ms", 5000, 100, 120_000);
        let reconnect_min = self.millis(s, "reconnect_min_ms", 500, 10, 600_000);
        let reconnect_max = self.millis(s, "reconnect_max_ms", 30_000, 10, 3_600_000);
        let ping_interval = self.millis(s, "ping_interval_ms", 5000, 100, 600_000);
        let pong_timeout = self.millis(s, "pong_timeout_ms", 5000, 100, 600_000);
        let ca_file = self.opt_path(s, "ca_file");
        let password = self.password(s);

        let (rest_base, ws_base) = match parse_ari_url(&url) {
            Ok(bases) => bases,
            Err(m) => {
                self.err("ari.url", m);
                (String::new(), String::new())
            }
        };
        if username.is_empty() || username.contains(':') {
            self.err("ari.username", "must be non-empty and contain no ':'");
        }
        if !is_token(&app) {
            self.err("ari.app", format!("{app:?} must be non-empty letters, digits, '_' or '-'"));
        }
        if inbound_arg.is_empty() || inbound_arg.contains(',') {
            self.err("ari.inbound_arg", "must be non-empty and contain no ','");
        }
        if reconnect_min > reconnect_max {
            self.err("ari.reconnect_min_ms", "must not be larger than ari.reconnect_max_ms");
        }
        if ca_file.is_some() && !rest_base.starts_with("https://") {
            self.err("ari.ca_file", "is only used with an https:// url");
        }
        let tls = if rest_base.starts_with("https://") {
            match tls_client_config(ca_file.as_deref()) {
                Ok(t) => Some(t),
                Err(m) => {
                    self.err("ari.ca_file", m);
                    None
                }
            }
        } else {
            None
        };
        Some(AriConfig {
            rest_base,
            ws_base,
            username,
            password: password?,
            app,
            inbound_arg,
            request_timeout,
            reconnect_min,
            reconnect_max,
            ping_interval,
            pong_timeout,
            ca_file,
            tls,
        })
    }

    /// The password from, in order of preference, `password_file`, `password_env`, `password`.
    fn password(&mut self, s: &Section) -> Option<Secret> {
        let file = self.opt_path(s, "password_file");
        let env_name = self.opt_string(s, "password_env");
        let inline = self.opt_string(s, "password");
        if let Some(path) = file {
            return match read_secret_file(&path) {
                Ok(p) => Some(Secret::new(p)),
                Err(m) => {
                    self.err("ari.password_file", m);
                    None
                }
            };
        }
        if let Some(name) = env_name {
            return match self.env.var(&name) {
                Some(p) if !p.is_empty() => Some(Secret::new(p)),
                _ => {
                    self.err("ari.password_env", format!("environment variable {name} is not set or empty"));
                    None
                }
            };
        }
        match inline {
            Some(p) if !p.is_empty() => Some(Secret::new(p)),
            Some(_) => {
                self.err("ari.password", "is empty");
                None
            }
            None => {
                self.err("ari.password", "missing: set one of password, password_env, password_file");
                None
            }
        }
    }

    fn media(&mut self, s: &Section) -> Option<MediaConfig> {
        let advertise_host = self.string(s, "advertise_host", "127.0.0.1");
        let bind_host = self.ip(s, "bind_host", "127.0.0.1");
        let asterisk_host = self.ip(s, "asterisk_host", "127.0.0.1");
        let port_min = self.integer(s, "port_min", 26500, 1, 65535);
        let port_max = self.integer(s, "port_max", 26999, 1, 65535);
        let format = match self.string(s, "format", "alaw").as_str() {
            "alaw" => Some(MediaFormat::Alaw),
            "ulaw" => Some(MediaFormat::Ulaw),
            "slin16" => Some(MediaFormat::Slin16),
            other => {
                self.err("media.format", format!("{other:?} is not one of alaw, ulaw, slin16"));
                None
            }
        };
        let phase = self.millis(s, "phase_ms", 7000, 0, 3_600_000);
        let on_pool_exhausted = match self.string(s, "on_pool_exhausted", "transfer").as_str() {
            "transfer" => Some(PoolExhausted::Transfer),
            "hangup" => Some(PoolExhausted::Hangup),
            other => {
                self.err("media.on_pool_exhausted", format!("{other:?} is not one of transfer, hangup"));
                None
            }
        };
        let host_like = !advertise_host.contains([':', '/', ' ']) || advertise_host.parse::<IpAddr>().is_ok();
        if advertise_host.is_empty() || !host_like {
            self.err("media.advertise_host", format!("{advertise_host:?} is not a host name or IP address"));
        }
        if port_min > port_max {
            self.err("media.port_min", format!("port range {port_min}-{port_max} is empty or inverted (port_min > port_max)"));
        } else if let Some(limit) = self.env.open_file_limit() {
            let needed = (port_max - port_min + 1) as u64 + FDS_BESIDES_PORTS;
            if needed > limit {
                self.err(
                    "media.port_max",
                    format!(
                        "port range {port_min}-{port_max} needs about {needed} open files but the limit is {limit} \
                         (shrink the range or raise it, e.g. ulimit -n / LimitNOFILE=)"
                    ),
                );
            }
        }
        Some(MediaConfig {
            advertise_host,
            bind_host: bind_host?,
            asterisk_host: asterisk_host?,
            port_min: port_min as u16,
            port_max: port_max as u16,
            format: format?,
            phase,
            on_pool_exhausted: on_pool_exhausted?,
        })
    }

    fn transfer(&mut self, s: &Section) -> Option<TransferConfig> {
        let endpoint = self.string(s, "endpoint", "PJSIP/4438007@AVAYA-endpoint");
        let caller_id = self.string(s, "caller_id", "voicebot1 <3308487>");
        let dial_timeout = Duration::from_secs(self.integer(s, "dial_timeout_s", 30, 1, 3600) as u64);
        match endpoint.split_once('/') {
            Some((tech, resource)) if !tech.is_empty() && !resource.is_empty() => {}
            _ => self.err("transfer.endpoint", format!("{endpoint:?} is not TECH/resource (e.g. PJSIP/4438007@AVAYA-endpoint)")),
        }
        Some(TransferConfig { endpoint, caller_id, dial_timeout })
    }

    fn service(&mut self, s: &Section) -> Option<ServiceConfig> {
        let workers = self.integer(s, "workers", 8, 1, 256) as usize;
        let level = self.string(s, "log_level", "info");
        let log_file = self.opt_path(s, "log_file").filter(|p| !p.as_os_str().is_empty());
        let log_level = match level.to_ascii_lowercase().as_str() {
            "error" => Some(LevelFilter::Error),
            "warn" => Some(LevelFilter::Warn),
            "info" => Some(LevelFilter::Info),
            "debug" => Some(LevelFilter::Debug),
            "trace" => Some(LevelFilter::Trace),
            _ => {
                self.err("service.log_level", format!("{level:?} is not one of error, warn, info, debug, trace"));
                None
            }
        };
        let on_stop = match self.string(s, "on_stop", "handover").as_str() {
            "handover" => Some(OnStop::Handover),
            "hangup" => Some(OnStop::Hangup),
            other => {
                self.err("service.on_stop", format!("{other:?} is not one of handover, hangup"));
                None
            }
        };
        let drain = Duration::from_secs(self.integer(s, "drain_s", 30, 0, 3600) as u64);
        let janitor = Duration::from_secs(self.integer(s, "janitor_s", 60, 1, 3600) as u64);
        Some(ServiceConfig { workers, log_level: log_level?, log_file, on_stop: on_stop?, drain, janitor })
    }

    fn admission(&mut self, s: &Section) -> Option<AdmissionConfig> {
        let max_calls = self.integer(s, "max_calls", 0, 0, 1_000_000) as usize;
        let max_setups = self.integer(s, "max_setups", 20, 0, 100_000) as usize;
        let max_rest_latency = self.millis(s, "max_rest_latency_ms", 500, 0, 120_000);
        let after_timeout = self.millis(s, "after_timeout_ms", 2000, 0, 600_000);
        let on_overload = match self.string(s, "on_overload", "reject").as_str() {
            "reject" => Some(OnOverload::Reject),
            "transfer" => Some(OnOverload::Transfer),
            other => {
                self.err("admission.on_overload", format!("{other:?} is not one of reject, transfer"));
                None
            }
        };
        Some(AdmissionConfig { max_calls, max_setups, max_rest_latency, after_timeout, on_overload: on_overload? })
    }

    fn metrics(&mut self, s: &Section) -> Option<MetricsConfig> {
        let listen = self.string(s, "listen", "127.0.0.1:9108");
        match listen.trim() {
            "" | "off" => Some(MetricsConfig { listen: None }),
            text => match text.parse::<SocketAddr>() {
                Ok(addr) => Some(MetricsConfig { listen: Some(addr) }),
                Err(_) => {
                    self.err(
                        "metrics.listen",
                        format!("{listen:?} is not IP:PORT (e.g. \"127.0.0.1:9108\", \"[::1]:9108\"), or \"off\""),
                    );
                    None
                }
            },
        }
    }

    // --- typed getters: each records an error naming the key and returns a usable fallback ---

    fn opt_string(&mut self, s: &Section, key: &str) -> Option<String> {
        let v = s.table?.get(key)?;
        match v.as_str() {
            Some(x) => Some(x.to_string()),
            None => {
                self.err(format!("{}.{key}", s.name), format!("must be a string, found {}", v.type_str()));
                None
            }
        }
    }

    fn string(&mut self, s: &Section, key: &str, default: &str) -> String {
        self.opt_string(s, key).unwrap_or_else(|| default.to_string())
    }

    fn opt_path(&mut self, s: &Section, key: &str) -> Option<PathBuf> {
        self.opt_string(s, key).map(PathBuf::from)
    }

    fn integer(&mut self, s: &Section, key: &str, default: i64, min: i64, max: i64) -> i64 {
        let Some(v) = s.table.and_then(|t| t.get(key)) else { return default };
        match v.as_integer() {
            Some(n) if (min..=max).contains(&n) => n,
            Some(n) => {
                self.err(format!("{}.{key}", s.name), format!("{n} is out of range {min}..={max}"));
                default
            }
            None => {
                self.err(format!("{}.{key}", s.name), format!("must be an integer, found {}", v.type_str()));
                default
            }
        }
    }

    fn millis(&mut self, s: &Section, key: &str, default: i64, min: i64, max: i64) -> Duration {
        Duration::from_millis(self.integer(s, key, default, min, max) as u64)
    }

    fn ip(&mut self, s: &Section, key: &str, default: &str) -> Option<IpAddr> {
        let text = self.string(s, key, default);
        match text.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(format!("{}.{key}", s.name), format!("{text:?} is not an IP address"));
                None
            }
        }
    }
}

fn section_names() -> String {
    SECTIONS.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Turns the configured URL into the REST and WebSocket bases, both ending in `/ari`.
/// Accepts `http(s)://host[:port][/prefix][/ari]`; refuses credentials in the URL (they would end
/// up in logs) and anything that is not http or https.
pub fn parse_ari_url(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} is not a URL (expected http://host:port)"))?;
    let ws_scheme = match scheme {
        "http" => "ws",
        "https" => "wss",
        _ => return Err(format!("{url:?}: scheme must be http or https")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if authority.contains('@') {
        return Err("must not contain credentials: use username and password_env/password_file".to_string());
    }
    if path.contains(['?', '#', ' ']) {
        return Err(format!("{url:?} must not contain a query, fragment or space"));
    }
    if let Some((host, port)) = authority.rsplit_once(':') {
        if !host.ends_with(']') && host.contains(':') {
            return Err(format!("{url:?}: IPv6 hosts must be in brackets"));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{url:?}: port {port:?} is not a number in 1..=65535"));
        }
    }
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix("/ari").unwrap_or(path);
    Ok((format!("{scheme}://{authority}{path}/ari"), format!("{ws_scheme}://{authority}{path}/ari")))
}

/// The TLS client settings for ARI over https/wss: the public web roots, plus the certificates
/// of `ca_file` (PEM) for a box with a private or self-signed certificate.
fn tls_client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
            roots.add(cert).map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads a password file, refusing one that others may read.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeEnv {
        vars: Vec<(&'static str, &'static str)>,
        limit: Option<u64>,
    }

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        }
        fn open_file_limit(&self) -> Option<u64> {
            self.limit
        }
    }

    const ENV: FakeEnv = FakeEnv { vars: Vec::new(), limit: Some(65536) };

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, "t.toml", &ENV) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn has_error(text: &str, key: &str, fragment: &str) {
        let errs = errors(text);
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("{key}: ")) && e.contains(fragment)),
            "expected an error on {key} containing {fragment:?}, got {errs:?}"
        );
    }

    #[test]
    fn shipped_config_file_is_valid_and_matches_the_defaults() {
        let text = include_str!("../conf/voicebot1.toml");
        let c = Config::parse(text, "conf/voicebot1.toml", &ENV).expect("shipped config parses");
        let d = Config::parse("[ari]\npassword = \"voicebot1-sandbox\"\n", "d", &ENV).expect("defaults parse");
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        assert_eq!(c.ari.rest_base, "http://127.0.0.1:8088/ari");
        assert_eq!(c.ari.ws_base, "ws://127.0.0.1:8088/ari");
        assert_eq!((c.media.port_min, c.media.port_max), (26500, 26999));
        assert_eq!(c.media.phase, Duration::from_secs(7));
        assert_eq!((c.ari.ping_interval, c.ari.pong_timeout), (Duration::from_secs(5), Duration::from_secs(5)));
        assert_eq!(c.media.format, MediaFormat::Alaw);
        assert_eq!(c.transfer.endpoint, "PJSIP/4438007@AVAYA-endpoint");
        assert_eq!(c.service.log_level, LevelFilter::Info);
        assert_eq!(c.service.log_file, None);
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9108".parse().unwrap()));
    }

    #[test]
    fn metrics_listen_is_an_address_or_off() {
        let listen = |v: &str| Config::parse(&format!("[ari]\npassword='x'\n[metrics]\nlisten = '{v}'\n"), "t", &ENV).map(|c| c.metrics.listen);
        assert_eq!(listen("[::1]:9200").unwrap(), Some("[::1]:9200".parse().unwrap()));
        assert_eq!(listen("127.0.0.1:0").unwrap(), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(listen("off").unwrap(), None);
        assert_eq!(listen("").unwrap(), None);
        for bad in ["localhost:9108", "127.0.0.1", "9108", "127.0.0.1:99999", "on"] {
            has_error(&format!("[ari]\npassword='x'\n[metrics]\nlisten = '{bad}'\n"), "metrics.listen", "is not IP:PORT");
        }
        has_error("[ari]\npassword='x'\n[metrics]\nlisten = 9108\n", "metrics.listen", "must be a string");
        has_error("[ari]\npassword='x'\n[metrics]\nport = 9108\n", "metrics.port", "unknown key");
    }

    #[test]
    fn syntax_error_is_one_line_with_position() {
        let errs = errors("[ari\nurl = 1");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("TOML syntax error"), "{errs:?}");
        assert!(errs[0].contains("line 1"), "{errs:?}");
        assert!(!errs[0].contains('\n'));
    }

    #[test]
    fn unknown_key_and_unknown_section_are_named() {
        has_error("[ari]\npassword='x'\nurll = 'x'\n", "ari.urll", "unknown key");
        has_error("[ari]\npassword='x'\n[medias]\n", "medias", "unknown section");
        has_error("ari = 3\n", "ari", "must be a [section]");
    }

    #[test]
    fn wrong_types_are_named() {
        has_error("[ari]\npassword='x'\n[media]\nport_min = 'low'\n", "media.port_min", "must be an integer, found string");
        has_error("[ari]\npassword='x'\nurl = 8088\n", "ari.url", "must be a string, found integer");
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let errs = errors(
            "[ari]\npassword='x'\nurl='ftp://x'\nbogus=1\n[media]\nport_min=30000\nport_max=20000\nformat='gsm'\n\
             [service]\nlog_level='loud'\nworkers=0\n",
        );
        assert_eq!(errs.len(), 6, "{errs:#?}");
    }

    #[test]
    fn port_range_must_not_be_empty_or_inverted() {
        has_error("[ari]\npassword='x'\n[media]\nport_min=27000\nport_max=26000\n", "media.port_min", "empty or inverted");
        has_error("[ari]\npassword='x'\n[media]\nport_min=0\n", "media.port_min", "out of range");
        has_error("[ari]\npassword='x'\n[media]\nport_max=70000\n", "media.port_max", "out of range");
    }

    #[test]
    fn port_range_larger_than_the_open_file_limit_is_refused() {
        let env = FakeEnv { vars: Vec::new(), limit: Some(1024) };
        let e = Config::parse("[ari]\npassword='x'\n[media]\nport_min=20000\nport_max=29999\n", "t", &env).unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].key, "media.port_max");
        assert!(e.errors[0].message.contains("limit is 1024"), "{}", e.errors[0]);
    }

    #[test]
    fn ping_interval_and_pong_timeout_are_read_and_range_checked() {
        has_error("[ari]\npassword='x'\nping_interval_ms=50\n", "ari.ping_interval_ms", "out of range");
        has_error("[ari]\npassword='x'\npong_timeout_ms=0\n", "ari.pong_timeout_ms", "out of range");
        has_error("[ari]\npassword='x'\npong_timeout_ms='5s'\n", "ari.pong_timeout_ms", "must be an integer");
        let c = Config::parse("[ari]\npassword='x'\nping_interval_ms=1000\npong_timeout_ms=3000\n", "t", &ENV).unwrap();
        assert_eq!((c.ari.ping_interval, c.ari.pong_timeout), (Duration::from_secs(1), Duration::from_secs(3)));
    }

    #[test]
    fn malformed_urls_are_refused() {
        for (url, fragment) in [
            ("127.0.0.1:8088", "not a URL"),
            ("ftp://host", "scheme must be http or https"),
            ("http://", "no host"),
            ("http://host:99999", "not a number"),
            ("http://user:pw@host", "must not contain credentials"),
            ("http://host/ari?x=1", "query"),
        ] {
            has_error(&format!("[ari]\npassword='x'\nurl='{url}'\n"), "ari.url", fragment);
        }
    }

    #[test]
    fn url_forms_give_rest_and_ws_bases() {
        assert_eq!(
            parse_ari_url("https://pbx.example:8089/").unwrap(),
            ("https://pbx.example:8089/ari".into(), "wss://pbx.example:8089/ari".into())
        );
        assert_eq!(
            parse_ari_url("http://10.0.0.1:8088/asterisk/ari").unwrap(),
            ("http://10.0.0.1:8088/asterisk/ari".into(), "ws://10.0.0.1:8088/asterisk/ari".into())
        );
        assert_eq!(parse_ari_url("http://[::1]:8088").unwrap().0, "http://[::1]:8088/ari");
    }

    #[test]
    fn password_comes_from_env_when_named() {
        let env = FakeEnv { vars: vec![("VB1_PW", "s3cret")], limit: None };
        let c = Config::parse("[ari]\npassword_env='VB1_PW'\n", "t", &env).unwrap();
        assert_eq!(c.ari.password.expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        has_error("[ari]\npassword_env='VB1_MISSING'\n", "ari.password_env", "not set");
    }

    #[test]
    fn password_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vb1-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "filepw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!("[ari]\npassword_file='{}'\n", path.display());
        has_error(&text, "ari.password_file", "chmod 600");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::parse(&text, "t", &ENV).unwrap();
        assert_eq!(c.ari.password.expose(), "filepw");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_password_is_an_error() {
        has_error("", "ari.password", "missing");
        has_error("[ari]\npassword=''\n", "ari.password", "empty");
    }

    #[test]
    fn missing_file_is_one_clear_error() {
        let e = Config::load(Path::new("/nonexistent/voicebot1.toml"), &ENV).unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert!(e.to_string().contains("cannot read the file"), "{e}");
        assert!(e.to_string().contains("/nonexistent/voicebot1.toml"), "{e}");
    }
}
