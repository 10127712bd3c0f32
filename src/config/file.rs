//! The file's shape, derived by serde: one struct per section, every key optional, a value of
//! the wrong type kept (`Given::Wrong`) so that every error is reported; and each section's
//! `validate`, which turns it into its part of [`Config`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use log::LevelFilter;
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use toml::{Table, Value};

use super::check::{is_token, Check};
use super::*;
use crate::audio::FORMATS;
use crate::bot::Dialect;

/// One key's value as the file gives it. A value of another type is kept, with the TOML name of
/// its type, so that `validate` reports it and goes on checking the rest of the file.
#[derive(Debug, Default)]
pub(super) enum Given<T> {
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
        *value = Value::Table(Table::from_iter([(
            "$__toml_private_datetime".to_string(),
            Value::String(date.to_string()),
        )]));
    }
}

// The file's shape. Every key is optional: its default is written in `validate`, on the line
// that checks it. Field order is the order an unknown key's error lists the keys in.
// `deny_unknown_fields` is a guard: `RawConfig::read` has already named and dropped every
// unknown key (serde would stop at the first).

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    ari: RawAri,
    media: RawMedia,
    bot: RawBotDefault,
    bots: BTreeMap<String, RawBot>,
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
struct RawBotDefault {
    default: Given<String>,
}

/// One `[bots.NAME]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawBot {
    url: Given<String>,
    protocol: Given<String>,
    format: Given<String>,
    token_file: Given<String>,
    token_env: Given<String>,
    ca_file: Given<String>,
    connect_timeout_ms: Given<i64>,
    max_s: Given<i64>,
    when_done: Given<String>,
    on_failure: Given<String>,
    ping_interval_ms: Given<i64>,
    pong_timeout_ms: Given<i64>,
    control: Given<String>,
    max_queue_ms: Given<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTransfer {
    endpoint: Given<String>,
    caller_id: Given<String>,
    dial_timeout_s: Given<i64>,
    to: Given<Table>,
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
    max_wait_ms: Given<i64>,
    full_variable: Given<String>,
    share_variable: Given<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMetrics {
    listen: Given<String>,
}

/// Each section and the keys it takes, as the derives above know them. `bots` holds one table
/// per bot, each taking the keys of `[bots.NAME]`.
pub(super) fn sections() -> [(&'static str, &'static [&'static str]); 8] {
    [
        ("ari", keys_of::<RawAri>()),
        ("media", keys_of::<RawMedia>()),
        ("bot", keys_of::<RawBotDefault>()),
        ("bots", keys_of::<RawBot>()),
        ("transfer", keys_of::<RawTransfer>()),
        ("service", keys_of::<RawService>()),
        ("admission", keys_of::<RawAdmission>()),
        ("metrics", keys_of::<RawMetrics>()),
    ]
}

/// The field names of a derived struct: serde hands them to `deserialize_struct`, which this
/// deserializer records instead of reading anything.
pub(super) fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
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
    pub(super) fn read(root: Table, check: &mut Check) -> RawConfig {
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
            if name == "bots" {
                known.insert(name, Value::Table(read_bots(table, keys, check)));
                continue;
            }
            for key in table.keys().filter(|k| !keys.contains(&k.as_str())) {
                check.err(
                    format!("{name}.{key}"),
                    format!("unknown key (expected one of: {})", keys.join(", ")),
                );
            }
            table.retain(|k, _| keys.contains(&k));
            for (_, value) in table.iter_mut() {
                keep_datetime(value);
            }
            known.insert(name, Value::Table(table));
        }
        Value::Table(known)
            .try_into()
            .unwrap_or_else(|e: toml::de::Error| {
                check.err("", one_line(&e.to_string()));
                RawConfig::default()
            })
    }

    /// Checks every value, section by section, and builds the configuration: `None` when any
    /// check failed. Each problem goes to `check`, naming its key; a wrong value counts as its
    /// default for the checks after it, so they all run.
    pub(super) fn validate(self, check: &mut Check) -> Option<Config> {
        let ari = self.ari.validate(check);
        let media = self.media.validate(check);
        let bots = validate_bots(self.bot, self.bots, check);
        let transfer = self.transfer.validate(check);
        let service = self.service.validate(check);
        let admission = self.admission.validate(check);
        let metrics = self.metrics.validate(check);
        Some(Config {
            ari: ari?,
            media: media?,
            bots: bots?,
            transfer: transfer?,
            service: service?,
            admission: admission?,
            metrics: metrics?,
        })
    }
}

impl RawAri {
    fn validate(self, c: &mut Check) -> Option<AriConfig> {
        let url = c.string("ari.url", self.url, "http://127.0.0.1:8088");
        let username = c.string("ari.username", self.username, "voicebot1");
        let app = c.string("ari.app", self.app, "voicebot1");
        let inbound_arg = c.string("ari.inbound_arg", self.inbound_arg, "inbound");
        let request_timeout = c.millis(
            "ari.request_timeout_ms",
            self.request_timeout_ms,
            5000,
            100,
            120_000,
        );
        let reconnect_min = c.millis(
            "ari.reconnect_min_ms",
            self.reconnect_min_ms,
            500,
            10,
            600_000,
        );
        let reconnect_max = c.millis(
            "ari.reconnect_max_ms",
            self.reconnect_max_ms,
            30_000,
            10,
            3_600_000,
        );
        let ping_interval = c.millis(
            "ari.ping_interval_ms",
            self.ping_interval_ms,
            5000,
            100,
            600_000,
        );
        let pong_timeout = c.millis(
            "ari.pong_timeout_ms",
            self.pong_timeout_ms,
            5000,
            100,
            600_000,
        );
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
            c.err(
                "ari.app",
                format!("{app:?} must be non-empty letters, digits, '_' or '-'"),
            );
        }
        if inbound_arg.is_empty() || inbound_arg.contains(',') {
            c.err("ari.inbound_arg", "must be non-empty and contain no ','");
        }
        if reconnect_min > reconnect_max {
            c.err(
                "ari.reconnect_min_ms",
                "must not be larger than ari.reconnect_max_ms",
            );
        }
        let https = rest_base.starts_with("https://");
        if ca_file.is_some() && !https {
            c.err("ari.ca_file", "is only used with an https:// url");
        }
        // The set-up the ARI client does at start-up, so that a bad CA file fails `--check`.
        if https {
            if let Err(m) = crate::net::tls::client_config(ca_file.as_deref()) {
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
        let formats = FORMATS.map(|f| (f.name(), f));
        let format = c.choice("media.format", self.format, "alaw", &formats);
        let phase = c.millis("media.phase_ms", self.phase_ms, 7000, 0, 3_600_000);
        let exhausted = [
            ("transfer", PoolExhausted::Transfer),
            ("hangup", PoolExhausted::Hangup),
        ];
        let on_pool_exhausted = c.choice(
            "media.on_pool_exhausted",
            self.on_pool_exhausted,
            "transfer",
            &exhausted,
        );

        let host_like =
            !advertise_host.contains([':', '/', ' ']) || advertise_host.parse::<IpAddr>().is_ok();
        if advertise_host.is_empty() || !host_like {
            c.err(
                "media.advertise_host",
                format!("{advertise_host:?} is not a host name or IP address"),
            );
        }
        if port_min > port_max {
            c.err(
                "media.port_min",
                format!(
                    "port range {port_min}-{port_max} is empty or inverted (port_min > port_max)"
                ),
            );
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
        let endpoint = c.string(
            "transfer.endpoint",
            self.endpoint,
            "PJSIP/4438007@AVAYA-endpoint",
        );
        let caller_id = c.string("transfer.caller_id", self.caller_id, "voicebot1 <3308487>");
        let dial_timeout = c.seconds("transfer.dial_timeout_s", self.dial_timeout_s, 30, 1, 3600);
        if !is_endpoint(&endpoint) {
            c.err(
                "transfer.endpoint",
                format!("{endpoint:?} is not TECH/resource (e.g. PJSIP/4438007@AVAYA-endpoint)"),
            );
        }
        let mut to = BTreeMap::new();
        if let Some(table) = c.table("transfer.to", self.to) {
            for (name, value) in table {
                let key = format!("transfer.to.{name}");
                match value {
                    Value::String(endpoint) if is_endpoint(&endpoint) && is_token(&name) => {
                        to.insert(name, endpoint);
                    }
                    Value::String(endpoint) if is_endpoint(&endpoint) => c.err(
                        key,
                        "a destination's name must be letters, digits, '_' or '-' (bots ask for it by name)",
                    ),
                    Value::String(endpoint) => c.err(
                        key,
                        format!("{endpoint:?} is not TECH/resource (e.g. PJSIP/4438100@AVAYA-endpoint)"),
                    ),
                    other => c.err(key, format!("must be a string, found {}", other.type_str())),
                }
            }
        }
        Some(TransferConfig {
            endpoint,
            caller_id,
            dial_timeout,
            to,
        })
    }
}

impl RawService {
    fn validate(self, c: &mut Check) -> Option<ServiceConfig> {
        let workers = c.integer("service.workers", self.workers, 20, 1, 256) as usize;
        let level = c.string("service.log_level", self.log_level, "info");
        let log_file = c
            .opt_string("service.log_file", self.log_file)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        // Any case: `DEBUG` reads as `debug`.
        let levels = [
            ("error", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
        ];
        let log_level = c.one_of(
            "service.log_level",
            &level,
            &level.to_ascii_lowercase(),
            &levels,
        );
        let on_stop = c.choice(
            "service.on_stop",
            self.on_stop,
            "handover",
            &[("handover", OnStop::Handover), ("hangup", OnStop::Hangup)],
        );
        let drain = c.seconds("service.drain_s", self.drain_s, 30, 0, 3600);
        let janitor = c.seconds("service.janitor_s", self.janitor_s, 60, 1, 3600);
        Some(ServiceConfig {
            workers,
            log_level: log_level?,
            log_file,
            on_stop: on_stop?,
            drain,
            janitor,
        })
    }
}

impl RawAdmission {
    fn validate(self, c: &mut Check) -> Option<AdmissionConfig> {
        let max_calls = c.integer("admission.max_calls", self.max_calls, 0, 0, 1_000_000) as usize;
        let max_setups =
            c.integer("admission.max_setups", self.max_setups, 20, 0, 100_000) as usize;
        let max_rest_latency = c.millis(
            "admission.max_rest_latency_ms",
            self.max_rest_latency_ms,
            500,
            0,
            120_000,
        );
        let after_timeout = c.millis(
            "admission.after_timeout_ms",
            self.after_timeout_ms,
            2000,
            0,
            600_000,
        );
        let choices = [
            ("reject", OnOverload::Reject),
            ("transfer", OnOverload::Transfer),
        ];
        let on_overload = c.choice(
            "admission.on_overload",
            self.on_overload,
            "reject",
            &choices,
        );
        let max_wait = c.millis("admission.max_wait_ms", self.max_wait_ms, 2000, 0, 10_000);
        let mut variable = |key: &str, given, default: &str| {
            let name = c.string(key, given, default);
            let ok = name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !ok {
                c.err(
                    key,
                    format!(
                        "{name:?} must be letters, digits or '_' (an Asterisk variable name), or empty"
                    ),
                );
            }
            (!name.is_empty()).then_some(name)
        };
        let door = variable(
            "admission.full_variable",
            self.full_variable,
            "VOICEBOT1_FULL_UNTIL",
        );
        let door_share = variable(
            "admission.share_variable",
            self.share_variable,
            "VOICEBOT1_ADMIT_PCT",
        );
        Some(AdmissionConfig {
            max_calls,
            max_setups,
            max_rest_latency,
            after_timeout,
            max_wait,
            door,
            door_share,
            on_overload: on_overload?,
        })
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
                    c.err(
                        "metrics.listen",
                        format!("{listen:?} is not IP:PORT {example}"),
                    );
                    None
                }
            },
        }
    }
}

/// `TECH/resource`, as ARI's originate takes an endpoint.
fn is_endpoint(s: &str) -> bool {
    matches!(s.split_once('/'), Some((tech, resource)) if !tech.is_empty() && !resource.is_empty() && !s.contains([',', ' ']))
}

/// The `[bots]` section: each entry must be a `[bots.NAME]` table with known keys (each unknown
/// one named as `bots.NAME.key`); what is left deserializes without error.
fn read_bots(bots: Table, keys: &[&str], check: &mut Check) -> Table {
    let mut known = Table::new();
    for (name, value) in bots {
        let Value::Table(mut table) = value else {
            check.err(
                format!("bots.{name}"),
                "must be a [bots.NAME] table, not a value",
            );
            continue;
        };
        if !is_token(&name) || name == ECHO {
            check.err(
                format!("bots.{name}"),
                format!("a bot's name must be letters, digits, '_' or '-', and not {ECHO:?}"),
            );
        }
        for key in table.keys().filter(|k| !keys.contains(&k.as_str())) {
            check.err(
                format!("bots.{name}.{key}"),
                format!("unknown key (expected one of: {})", keys.join(", ")),
            );
        }
        table.retain(|k, _| keys.contains(&k));
        for (_, value) in table.iter_mut() {
            keep_datetime(value);
        }
        known.insert(name, Value::Table(table));
    }
    known
}

fn validate_bots(
    default: RawBotDefault,
    raw: BTreeMap<String, RawBot>,
    c: &mut Check,
) -> Option<BotsConfig> {
    let mut bots = BTreeMap::new();
    let mut ok = true;
    for (name, bot) in raw {
        match bot.validate(&name, c) {
            Some(bot) => {
                bots.insert(name, Arc::new(bot));
            }
            None => ok = false,
        }
    }
    let default = match c.string("bot.default", default.default, ECHO) {
        name if name == ECHO => None,
        name => match bots.get(&name) {
            Some(bot) => Some(Arc::clone(bot)),
            None => {
                let known: Vec<&str> = std::iter::once(ECHO)
                    .chain(bots.keys().map(String::as_str))
                    .collect();
                c.err(
                    "bot.default",
                    format!(
                        "{name:?} is not a configured bot (one of: {})",
                        known.join(", ")
                    ),
                );
                None
            }
        },
    };
    ok.then_some(BotsConfig { default, bots })
}

impl RawBot {
    fn validate(self, name: &str, c: &mut Check) -> Option<BotConfig> {
        let key = |k: &str| format!("bots.{name}.{k}");
        let url = c.opt_string(&key("url"), self.url);
        let dialects = [("twilio", Dialect::Twilio), ("asterisk", Dialect::Asterisk)];
        let dialect = c.choice(&key("protocol"), self.protocol, "twilio", &dialects);
        let formats = FORMATS.map(|f| (f.name(), f));
        let format = c.choice(&key("format"), self.format, "ulaw", &formats);
        let connect_timeout = c.millis(
            &key("connect_timeout_ms"),
            self.connect_timeout_ms,
            2000,
            100,
            60_000,
        );
        let max = c.seconds(&key("max_s"), self.max_s, 900, 1, 86_400);
        let after = [
            ("transfer", AfterBot::Transfer),
            ("hangup", AfterBot::Hangup),
        ];
        let when_done = c.choice(&key("when_done"), self.when_done, "transfer", &after);
        let on_failure = c.choice(&key("on_failure"), self.on_failure, "transfer", &after);
        let ping_interval = c.millis(
            &key("ping_interval_ms"),
            self.ping_interval_ms,
            5000,
            100,
            600_000,
        );
        let pong_timeout = c.millis(
            &key("pong_timeout_ms"),
            self.pong_timeout_ms,
            5000,
            100,
            600_000,
        );
        let controls = [("json", true), ("plain-text", false)];
        let json_control = c.choice(&key("control"), self.control, "json", &controls);
        let max_queue = c.millis(
            &key("max_queue_ms"),
            self.max_queue_ms,
            20_000,
            1000,
            600_000,
        );
        let ca_file = c
            .opt_string(&key("ca_file"), self.ca_file)
            .map(PathBuf::from);
        let token = c.token(name, self.token_file, self.token_env);

        let url = match url {
            None => {
                c.err(key("url"), "missing: the bot's ws:// or wss:// URL");
                None
            }
            Some(url) => match url.split_once("://") {
                Some(("ws" | "wss", rest))
                    if !rest.is_empty()
                        && !rest.split('/').next().unwrap_or_default().contains('@') =>
                {
                    Some(url)
                }
                Some(("ws" | "wss", _)) => {
                    c.err(
                        key("url"),
                        format!("{url:?} has no host, or has credentials in it (use token_file)"),
                    );
                    None
                }
                _ => {
                    c.err(key("url"), format!("{url:?} is not a ws:// or wss:// URL"));
                    None
                }
            },
        };
        let secure = url.as_deref().is_some_and(|u| u.starts_with("wss://"));
        if ca_file.is_some() && !secure {
            c.err(key("ca_file"), "is only used with a wss:// url");
        }
        if secure {
            if let Err(m) = crate::net::tls::client_config(ca_file.as_deref()) {
                c.err(key("ca_file"), m);
            }
        }
        if let (Some(d), Some(f)) = (dialect, format) {
            if !d.supports(f) {
                c.err(key("format"), format!("{:?} is not spoken by protocol {:?} (twilio: ulaw; asterisk: ulaw, alaw or slin16)", f.name(), d.name()));
            }
        }
        Some(BotConfig {
            name: name.to_string(),
            url: url?,
            dialect: dialect?,
            format: format?,
            token: token?,
            ca_file,
            connect_timeout,
            max,
            when_done: when_done?,
            on_failure: on_failure?,
            ping_interval,
            pong_timeout,
            json_control: json_control?,
            max_queue,
        })
    }
}
