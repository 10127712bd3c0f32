//! The configuration file: TOML, every key optional with a default, unknown sections and keys
//! refused.
//!
//! Two steps, so that `voicebot1 --check` reports every error in the file at once, each naming
//! its key: serde derives the file's shape (`RawConfig`; a value of the wrong type is kept as
//! `Given::Wrong` rather than stopping serde at the first one), then `RawConfig::validate` checks
//! every value and builds the [`Config`] the program runs with. `Config` is plain data: the TLS
//! client for `https://` is built from it by `ari::tls`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
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
    /// PEM file with extra CA certificates for `https://` / `wss://` (see `ari::tls`).
    pub ca_file: Option<PathBuf>,
}

impl AriConfig {
    /// Whether ARI is reached over TLS (`https://` and `wss://`).
    pub fn uses_tls(&self) -> bool {
        self.rest_base.starts_with("https://")
    }
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
    /// One 20 ms RTP packet of silence in this format: payload type, fill byte, payload length.
    pub fn silence(self) -> crate::media::Silence {
        match self {
            MediaFormat::Alaw => crate::media::Silence { payload_type: 8, fill: 0xd5, len: 160 },
            MediaFormat::Ulaw => crate::media::Silence { payload_type: 0, fill: 0xff, len: 160 },
            // Asterisk maps slin16 on externalMedia to a dynamic payload type; 118 is its default.
            MediaFormat::Slin16 => crate::media::Silence { payload_type: 118, fill: 0, len: 640 },
        }
    }

    /// The value ARI's `format` parameter takes.
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
        let mut check = Check { errors: Vec::new(), env };
        let config = RawConfig::read(table, &mut check).validate(&mut check);
        match config {
            Some(c) if check.errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors { file: file.to_string(), errors: check.errors }),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

/// One key's value as the file gives it. A value of another type is kept, with the TOML name of
/// its type, so that `validate` reports it and goes on checking the rest of the file.
#[derive(Debug, Default)]
enum Given<T> {
    #[default]
    Absent,
    Value(T),
    Wrong(&'static str),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Given<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let found = value.type_str();
        // No key takes a date, and `try_into` would turn one into a string.
        if value.is_datetime() {
            return Ok(Given::Wrong(found));
        }
        Ok(value.try_into().map_or(Given::Wrong(found), Given::Value))
    }
}

/// `RawConfig` is deserialized from the parsed table, and a `toml::Value` hands a date to serde as
/// a plain string. Put back in the form toml's own deserializer hands it over (a table under
/// toml's private key), `Value::deserialize` makes it a datetime again, so `Given` can name it.
fn keep_datetime(value: &mut Value) {
    if let Value::Datetime(date) = value {
        *value = Value::Table(Table::from_iter([("$__toml_private_datetime".to_string(), Value::String(date.to_string()))]));
    }
}

// The file's shape. Every key is optional: its default is written in `validate`, on the line
// that checks it. Field order is the order an unknown key's error lists the keys in.
// `deny_unknown_fields` is a guard: `RawConfig::read` has already named and dropped every
// unknown key (serde would stop at the first).

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    ari: RawAri,
    media: RawMedia,
    transfer: RawTransfer,
    service: RawService,
    admission: RawAdmission,
    metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAri {
    url: Given<String>,
    username: Given<String>,
    password: Given<String>,
    password_env: Given<String>,
    password_file: Given<String>,
    app: Given<String>,
    inbound_arg: Given<String>,
    request_timeout_ms: Given<i64>,
    reconnect_min_ms: Given<i64>,
    reconnect_max_ms: Given<i64>,
    ping_interval_ms: Given<i64>,
    pong_timeout_ms: Given<i64>,
    ca_file: Given<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMedia {
    advertise_host: Given<String>,
    bind_host: Given<String>,
    asterisk_host: Given<String>,
    port_min: Given<i64>,
    port_max: Given<i64>,
    format: Given<String>,
    phase_ms: Given<i64>,
    on_pool_exhausted: Given<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTransfer {
    endpoint: Given<String>,
    caller_id: Given<String>,
    dial_timeout_s: Given<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawService {
    workers: Given<i64>,
    log_level: Given<String>,
    log_file: Given<String>,
    on_stop: Given<String>,
    drain_s: Given<i64>,
    janitor_s: Given<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAdmission {
    max_calls: Given<i64>,
    max_setups: Given<i64>,
    max_rest_latency_ms: Given<i64>,
    after_timeout_ms: Given<i64>,
    on_overload: Given<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMetrics {
    listen: Given<String>,
}

/// Each section and the keys it takes, as the derives above know them.
fn sections() -> [(&'static str, &'static [&'static str]); 6] {
    [
        ("ari", keys_of::<RawAri>()),
        ("media", keys_of::<RawMedia>()),
        ("transfer", keys_of::<RawTransfer>()),
        ("service", keys_of::<RawService>()),
        ("admission", keys_of::<RawAdmission>()),
        ("metrics", keys_of::<RawMetrics>()),
    ]
}

/// The field names of a derived struct: serde hands them to `deserialize_struct`, which this
/// deserializer records instead of reading anything.
fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(self, _: &str, fields: &'static [&'static str], _: V) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut keys));
    keys
}

impl RawConfig {
    /// Reports what the derive would refuse at the first instance (unknown sections, a section
    /// that is a value, unknown keys) and drops it, so that every one is named; then deserializes
    /// the rest, which cannot fail: every key left is known and `Given` takes any type.
    fn read(root: Table, check: &mut Check) -> RawConfig {
        let sections = sections();
        let mut known = Table::new();
        for (name, value) in root {
            let Some((_, keys)) = sections.iter().find(|(s, _)| *s == name) else {
                let names = sections.map(|(s, _)| s).join(", ");
                check.err(name, format!("unknown section (expected one of: {names})"));
                continue;
            };
            let Value::Table(mut table) = value else {
                check.err(name, "must be a [section], not a value");
                continue;
            };
            for key in table.keys().filter(|k| !keys.contains(&k.as_str())) {
                check.err(format!("{name}.{key}"), format!("unknown key (expected one of: {})", keys.join(", ")));
            }
            table.retain(|k, _| keys.contains(&k));
            for (_, value) in table.iter_mut() {
                keep_datetime(value);
            }
            known.insert(name, Value::Table(table));
        }
        Value::Table(known).try_into().unwrap_or_else(|e: toml::de::Error| {
            check.err("", one_line(&e.to_string()));
            RawConfig::default()
        })
    }

    /// Checks every value, section by section, and builds the configuration: `None` when any
    /// check failed. Each problem goes to `check`, naming its key; a wrong value counts as its
    /// default for the checks after it, so they all run.
    fn validate(self, check: &mut Check) -> Option<Config> {
        let ari = self.ari.validate(check);
        let media = self.media.validate(check);
        let transfer = self.transfer.validate(check);
        let service = self.service.validate(check);
        let admission = self.admission.validate(check);
        let metrics = self.metrics.validate(check);
        Some(Config { ari: ari?, media: media?, transfer: transfer?, service: service?, admission: admission?, metrics: metrics? })
    }
}

impl RawAri {
    fn validate(self, c: &mut Check) -> Option<AriConfig> {
        let url = c.string("ari.url", self.url, "http://127.0.0.1:8088");
        let username = c.string("ari.username", self.username, "voicebot1");
        let app = c.string("ari.app", self.app, "voicebot1");
        let inbound_arg = c.string("ari.inbound_arg", self.inbound_arg, "inbound");
        let request_timeout = c.millis("ari.request_timeout_ms", self.request_timeout_ms, 5000, 100, 120_000);
        let reconnect_min = c.millis("ari.reconnect_min_ms", self.reconnect_min_ms, 500, 10, 600_000);
        let reconnect_max = c.millis("ari.reconnect_max_ms", self.reconnect_max_ms, 30_000, 10, 3_600_000);
        let ping_interval = c.millis("ari.ping_interval_ms", self.ping_interval_ms, 5000, 100, 600_000);
        let pong_timeout = c.millis("ari.pong_timeout_ms", self.pong_timeout_ms, 5000, 100, 600_000);
        let ca_file = c.opt_string("ari.ca_file", self.ca_file).map(PathBuf::from);
        let password = c.password(self.password_file, self.password_env, self.password);

        let (rest_base, ws_base) = parse_ari_url(&url).unwrap_or_else(|m| {
            c.err("ari.url", m);
            (String::new(), String::new())
        });
        if username.is_empty() || username.contains(':') {
            c.err("ari.username", "must be non-empty and contain no ':'");
        }
        if !is_token(&app) {
            c.err("ari.app", format!("{app:?} must be non-empty letters, digits, '_' or '-'"));
        }
        if inbound_arg.is_empty() || inbound_arg.contains(',') {
            c.err("ari.inbound_arg", "must be non-empty and contain no ','");
        }
        if reconnect_min > reconnect_max {
            c.err("ari.reconnect_min_ms", "must not be larger than ari.reconnect_max_ms");
        }
        let https = rest_base.starts_with("https://");
        if ca_file.is_some() && !https {
            c.err("ari.ca_file", "is only used with an https:// url");
        }
        // The set-up the ARI client does at start-up, so that a bad CA file fails `--check`.
        if https {
            if let Err(m) = crate::ari::tls::client_config(ca_file.as_deref()) {
                c.err("ari.ca_file", m);
            }
        }
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
        })
    }
}

impl RawMedia {
    fn validate(self, c: &mut Check) -> Option<MediaConfig> {
        let advertise_host = c.string("media.advertise_host", self.advertise_host, "127.0.0.1");
        let bind_host = c.ip("media.bind_host", self.bind_host, "127.0.0.1");
        let asterisk_host = c.ip("media.asterisk_host", self.asterisk_host, "127.0.0.1");
        let port_min = c.integer("media.port_min", self.port_min, 26500, 1, 65535);
        let port_max = c.integer("media.port_max", self.port_max, 26999, 1, 65535);
        let formats = [("alaw", MediaFormat::Alaw), ("ulaw", MediaFormat::Ulaw), ("slin16", MediaFormat::Slin16)];
        let format = c.choice("media.format", self.format, "alaw", &formats);
        let phase = c.millis("media.phase_ms", self.phase_ms, 7000, 0, 3_600_000);
        let exhausted = [("transfer", PoolExhausted::Transfer), ("hangup", PoolExhausted::Hangup)];
        let on_pool_exhausted = c.choice("media.on_pool_exhausted", self.on_pool_exhausted, "transfer", &exhausted);

        let host_like = !advertise_host.contains([':', '/', ' ']) || advertise_host.parse::<IpAddr>().is_ok();
        if advertise_host.is_empty() || !host_like {
            c.err("media.advertise_host", format!("{advertise_host:?} is not a host name or IP address"));
        }
        if port_min > port_max {
            c.err("media.port_min", format!("port range {port_min}-{port_max} is empty or inverted (port_min > port_max)"));
        } else if let Some(limit) = c.env.open_file_limit() {
            let needed = (port_max - port_min + 1) as u64 + FDS_BESIDES_PORTS;
            if needed > limit {
                c.err(
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
}

impl RawTransfer {
    fn validate(self, c: &mut Check) -> Option<TransferConfig> {
        let endpoint = c.string("transfer.endpoint", self.endpoint, "PJSIP/4438007@AVAYA-endpoint");
        let caller_id = c.string("transfer.caller_id", self.caller_id, "voicebot1 <3308487>");
        let dial_timeout = c.seconds("transfer.dial_timeout_s", self.dial_timeout_s, 30, 1, 3600);
        match endpoint.split_once('/') {
            Some((tech, resource)) if !tech.is_empty() && !resource.is_empty() => {}
            _ => c.err("transfer.endpoint", format!("{endpoint:?} is not TECH/resource (e.g. PJSIP/4438007@AVAYA-endpoint)")),
        }
        Some(TransferConfig { endpoint, caller_id, dial_timeout })
    }
}

impl RawService {
    fn validate(self, c: &mut Check) -> Option<ServiceConfig> {
        let workers = c.integer("service.workers", self.workers, 8, 1, 256) as usize;
        let level = c.string("service.log_level", self.log_level, "info");
        let log_file = c.opt_string("service.log_file", self.log_file).filter(|p| !p.is_empty()).map(PathBuf::from);
        // Any case: `DEBUG` reads as `debug`.
        let levels = [
            ("error", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
        ];
        let log_level = c.one_of("service.log_level", &level, &level.to_ascii_lowercase(), &levels);
        let on_stop = c.choice("service.on_stop", self.on_stop, "handover", &[("handover", OnStop::Handover), ("hangup", OnStop::Hangup)]);
        let drain = c.seconds("service.drain_s", self.drain_s, 30, 0, 3600);
        let janitor = c.seconds("service.janitor_s", self.janitor_s, 60, 1, 3600);
        Some(ServiceConfig { workers, log_level: log_level?, log_file, on_stop: on_stop?, drain, janitor })
    }
}

impl RawAdmission {
    fn validate(self, c: &mut Check) -> Option<AdmissionConfig> {
        let max_calls = c.integer("admission.max_calls", self.max_calls, 0, 0, 1_000_000) as usize;
        let max_setups = c.integer("admission.max_setups", self.max_setups, 20, 0, 100_000) as usize;
        let max_rest_latency = c.millis("admission.max_rest_latency_ms", self.max_rest_latency_ms, 500, 0, 120_000);
        let after_timeout = c.millis("admission.after_timeout_ms", self.after_timeout_ms, 2000, 0, 600_000);
        let choices = [("reject", OnOverload::Reject), ("transfer", OnOverload::Transfer)];
        let on_overload = c.choice("admission.on_overload", self.on_overload, "reject", &choices);
        Some(AdmissionConfig { max_calls, max_setups, max_rest_latency, after_timeout, on_overload: on_overload? })
    }
}

impl RawMetrics {
    fn validate(self, c: &mut Check) -> Option<MetricsConfig> {
        let listen = c.string("metrics.listen", self.listen, "127.0.0.1:9108");
        match listen.trim() {
            "" | "off" => Some(MetricsConfig { listen: None }),
            text => match text.parse::<SocketAddr>() {
                Ok(addr) => Some(MetricsConfig { listen: Some(addr) }),
                Err(_) => {
                    let example = "(e.g. \"127.0.0.1:9108\", \"[::1]:9108\"), or \"off\"";
                    c.err("metrics.listen", format!("{listen:?} is not IP:PORT {example}"));
                    None
                }
            },
        }
    }
}

/// Collects `validate`'s errors. Each getter takes a key's `Given` value and its default, reports
/// a wrong type or range naming the key, and returns the default in its place.
struct Check<'e> {
    errors: Vec<ConfigError>,
    env: &'e dyn Environment,
}

impl Check<'_> {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { key: key.into(), message: message.into() });
    }

    fn opt_string(&mut self, key: &str, given: Given<String>) -> Option<String> {
        match given {
            Given::Absent => None,
            Given::Value(s) => Some(s),
            Given::Wrong(found) => {
                self.err(key, format!("must be a string, found {found}"));
                None
            }
        }
    }

    fn string(&mut self, key: &str, given: Given<String>, default: &str) -> String {
        self.opt_string(key, given).unwrap_or_else(|| default.to_string())
    }

    fn integer(&mut self, key: &str, given: Given<i64>, default: i64, min: i64, max: i64) -> i64 {
        match given {
            Given::Absent => default,
            Given::Value(n) if (min..=max).contains(&n) => n,
            Given::Value(n) => {
                self.err(key, format!("{n} is out of range {min}..={max}"));
                default
            }
            Given::Wrong(found) => {
                self.err(key, format!("must be an integer, found {found}"));
                default
            }
        }
    }

    fn millis(&mut self, key: &str, given: Given<i64>, default: i64, min: i64, max: i64) -> Duration {
        Duration::from_millis(self.integer(key, given, default, min, max) as u64)
    }

    fn seconds(&mut self, key: &str, given: Given<i64>, default: i64, min: i64, max: i64) -> Duration {
        Duration::from_secs(self.integer(key, given, default, min, max) as u64)
    }

    fn ip(&mut self, key: &str, given: Given<String>, default: &str) -> Option<IpAddr> {
        let text = self.string(key, given, default);
        let ip = text.parse().ok();
        if ip.is_none() {
            self.err(key, format!("{text:?} is not an IP address"));
        }
        ip
    }

    /// One of the words in `choices`, spelt exactly.
    fn choice<T: Copy>(&mut self, key: &str, given: Given<String>, default: &str, choices: &[(&str, T)]) -> Option<T> {
        let text = self.string(key, given, default);
        self.one_of(key, &text, &text, choices)
    }

    /// The value `choices` gives `word`; if none, an error quoting `text` (what the file says).
    fn one_of<T: Copy>(&mut self, key: &str, text: &str, word: &str, choices: &[(&str, T)]) -> Option<T> {
        let found = choices.iter().find(|(name, _)| *name == word).map(|(_, v)| *v);
        if found.is_none() {
            let names = choices.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
            self.err(key, format!("{text:?} is not one of {names}"));
        }
        found
    }

    /// The password from, in order of preference, `password_file`, `password_env`, `password`.
    fn password(&mut self, file: Given<String>, env_name: Given<String>, inline: Given<String>) -> Option<Secret> {
        let file = self.opt_string("ari.password_file", file).map(PathBuf::from);
        let env_name = self.opt_string("ari.password_env", env_name);
        let inline = self.opt_string("ari.password", inline);
        let (key, found) = match (file, env_name, inline) {
            (Some(path), _, _) => ("ari.password_file", read_secret_file(&path)),
            (None, Some(name), _) => {
                let value = self.env.var(&name).filter(|p| !p.is_empty());
                ("ari.password_env", value.ok_or(format!("environment variable {name} is not set or empty")))
            }
            (None, None, Some(p)) if !p.is_empty() => ("ari.password", Ok(p)),
            (None, None, Some(_)) => ("ari.password", Err("is empty".to_string())),
            (None, None, None) => ("ari.password", Err("missing: set one of password, password_env, password_file".to_string())),
        };
        found.map(Secret::new).map_err(|m| self.err(key, m)).ok()
    }
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
    fn every_section_of_the_raw_config_has_its_keys_listed() {
        let names: Vec<&str> = sections().iter().map(|(s, _)| *s).collect();
        assert_eq!(names, keys_of::<RawConfig>());
        assert!(sections().iter().all(|(_, keys)| !keys.is_empty()), "{:?}", sections());
    }

    #[test]
    fn an_unknown_key_in_each_section_is_named_with_the_keys_it_takes() {
        let mut text = String::new();
        for (section, _) in sections() {
            text.push_str(&format!("[{section}]\nnot_a_key = 1\n"));
        }
        text = text.replace("[ari]\n", "[ari]\npassword = 'x'\n");
        let errs = errors(&text);
        for (section, keys) in sections() {
            let expected = format!("{section}.not_a_key: unknown key (expected one of: {})", keys.join(", "));
            assert!(errs.contains(&expected), "{expected:?} missing in {errs:#?}");
        }
        assert_eq!(errs.len(), sections().len(), "{errs:#?}");
    }

    #[test]
    fn a_date_is_the_wrong_type_for_any_key() {
        has_error("[ari]\npassword='x'\nusername = 1979-05-27\n", "ari.username", "must be a string, found datetime");
        has_error("[ari]\npassword='x'\n[media]\nphase_ms = 07:32:00\n", "media.phase_ms", "must be an integer, found datetime");
    }

    #[test]
    fn a_wrong_type_counts_as_the_default_for_the_checks_after_it() {
        let errs = errors("[ari]\npassword='x'\n[media]\nport_min = 'low'\nport_max = 20000\nformat = 'gsm'\n");
        assert_eq!(
            errs,
            [
                "media.port_min: must be an integer, found string",
                "media.format: \"gsm\" is not one of alaw, ulaw, slin16",
                "media.port_min: port range 26500-20000 is empty or inverted (port_min > port_max)",
            ]
        );
    }

    #[test]
    fn a_ca_file_is_checked_for_https_and_refused_for_http() {
        let dir = std::env::temp_dir().join(format!("vb1-cfg-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, "not a certificate\n").unwrap();
        let https = format!("[ari]\npassword='x'\nurl='https://pbx.example'\nca_file='{}'\n", pem.display());
        has_error(&https, "ari.ca_file", "holds no PEM certificate");
        has_error(&format!("[ari]\npassword='x'\nca_file='{}'\n", pem.display()), "ari.ca_file", "only used with an https:// url");
        std::fs::remove_dir_all(&dir).unwrap();
        let c = Config::parse("[ari]\npassword='x'\nurl='https://pbx.example'\n", "t", &ENV).unwrap();
        assert!(c.ari.uses_tls() && c.ari.ca_file.is_none());
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
