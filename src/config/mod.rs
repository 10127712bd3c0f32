//! The configuration file: TOML, every key optional with a default, unknown sections and keys
//! refused.
//!
//! Two steps, so that `voicebot1 --check` reports every error in the file at once, each naming
//! its key: serde derives the file's shape (`RawConfig`; a value of the wrong type is kept as
//! `Given::Wrong` rather than stopping serde at the first one), then `RawConfig::validate` checks
//! every value and builds the [`Config`] the program runs with. `Config` is plain data (secrets
//! already read from their files or the environment); what is built from it — the TLS client
//! settings of `https://` ARI and `wss://` bots — is built by their users, with `net::tls`, which
//! `validate` also calls once so that a bad CA file fails `--check`.
//!
//! Architecture invariant: `config` imports only the leaf modules (`audio`, `net`) and the bots'
//! vocabulary (`bot::Dialect`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use log::LevelFilter;
use toml::Table;

mod check;
mod file;

pub use check::parse_ari_url;
use check::Check;
use file::RawConfig;

use crate::audio::Format;
use crate::bot::Dialect;

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub ari: AriConfig,
    pub media: MediaConfig,
    pub bots: BotsConfig,
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
    pub format: Format,
    pub phase: Duration,
    pub on_pool_exhausted: PoolExhausted,
}

#[derive(Debug, Clone)]
pub struct TransferConfig {
    pub endpoint: String,
    /// Empty: present the caller's own number.
    pub caller_id: String,
    pub dial_timeout: Duration,
    /// `[transfer.to]`: the destinations a bot may ask for, by name. Nothing else is ever
    /// dialled on a bot's word.
    pub to: BTreeMap<String, String>,
}

/// `[bot]` and the `[bots.NAME]` tables.
#[derive(Debug, Clone, Default)]
pub struct BotsConfig {
    /// The bot a caller gets when the dialplan names none (`[bot] default`); `None`: the echo.
    pub default: Option<Arc<BotConfig>>,
    /// Every configured bot by name.
    pub bots: BTreeMap<String, Arc<BotConfig>>,
}

impl BotsConfig {
    /// The bot named by the dialplan's `bot=NAME`: the echo, a configured bot, or a name that
    /// is not configured (the call then gets the default).
    pub fn named(&self, name: &str) -> Named<'_> {
        match (name, self.bots.get(name)) {
            (ECHO, _) => Named::Echo,
            (_, Some(bot)) => Named::Bot(bot),
            (_, None) => Named::Unknown,
        }
    }
}

/// What a name in the dialplan's `bot=` is.
#[derive(Debug, Clone, Copy)]
pub enum Named<'a> {
    Echo,
    Bot(&'a Arc<BotConfig>),
    Unknown,
}

/// The built-in RTP echo's name in `[bot] default` and the dialplan's `bot=`.
pub const ECHO: &str = "echo";

/// One `[bots.NAME]` table: a WebSocket bot.
#[derive(Debug, Clone)]
pub struct BotConfig {
    pub name: String,
    /// `ws://…` or `wss://…`.
    pub url: String,
    pub dialect: Dialect,
    pub format: Format,
    /// Sent as `Authorization: Bearer …` (from `token_file` or `token_env`).
    pub token: Option<Secret>,
    /// PEM file of CA certificates to trust besides the public ones, for `wss://`.
    pub ca_file: Option<PathBuf>,
    /// TCP, TLS and the upgrade, all within this; caller audio is held meanwhile.
    pub connect_timeout: Duration,
    /// The longest a caller stays with this bot; then the transfer.
    pub max: Duration,
    pub when_done: AfterBot,
    pub on_failure: AfterBot,
    /// A bot silent this long is pinged…
    pub ping_interval: Duration,
    /// …and counts as lost when the ping gets no answer in this long.
    pub pong_timeout: Duration,
    /// chan_websocket dialect: control messages in JSON (20.18/22.8 and later), else plain text.
    pub json_control: bool,
    /// The most audio queued from the bot, waiting to be played; more is dropped.
    pub max_queue: Duration,
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
    /// Asterisk's recent REST answer time (the moving average, or the slowest answer of the last
    /// 2 s) above which new calls are not taken; zero: not used.
    pub max_rest_latency: Duration,
    /// How long after a REST request went unanswered (timeout, refused) new calls are not taken.
    pub after_timeout: Duration,
    pub on_overload: OnOverload,
    /// How long a new caller may wait while Asterisk is briefly slow; zero: rejected at once.
    pub max_wait: Duration,
    /// The Asterisk global variable voicebot1 keeps set, to the Unix time until which it takes
    /// no new callers, while it is full: the dialplan refuses callers before `Answer()` while
    /// `${EPOCH}` is below it. `None`: not used.
    pub door: Option<String>,
    /// The global variable holding the share of new callers (percent) the dialplan lets in
    /// while the door is shut (`door`); unset means none. `None`: the door is all or nothing.
    pub door_share: Option<String>,
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

/// Where a caller goes when a WebSocket bot is done with it (`when_done`) or fails
/// (`on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterBot {
    /// The flow's next step: the transfer to `[transfer] endpoint`.
    Transfer,
    /// Hang the caller up.
    Hangup,
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
            errors: vec![ConfigError {
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Config::parse(&text, &file, env)
    }

    /// Parses and validates configuration text; `file` only names it in errors.
    pub fn parse(text: &str, file: &str, env: &dyn Environment) -> Result<Config, ConfigErrors> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| ConfigErrors {
            file: file.to_string(),
            errors: vec![ConfigError {
                key: String::new(),
                message: format!("TOML syntax error: {}", one_line(&e.to_string())),
            }],
        })?;
        let mut check = Check {
            errors: Vec::new(),
            env,
        };
        let config = RawConfig::read(table, &mut check).validate(&mut check);
        match config {
            Some(c) if check.errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors {
                file: file.to_string(),
                errors: check.errors,
            }),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::file::{keys_of, sections};
    use super::*;

    struct FakeEnv {
        vars: Vec<(&'static str, &'static str)>,
        limit: Option<u64>,
    }

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
        fn open_file_limit(&self) -> Option<u64> {
            self.limit
        }
    }

    const ENV: FakeEnv = FakeEnv {
        vars: Vec::new(),
        limit: Some(65536),
    };

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, "t.toml", &ENV) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn has_error(text: &str, key: &str, fragment: &str) {
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("{key}: ")) && e.contains(fragment)),
            "expected an error on {key} containing {fragment:?}, got {errs:?}"
        );
    }

    #[test]
    fn shipped_config_file_is_valid_and_matches_the_defaults() {
        let text = include_str!("../../conf/voicebot1.toml");
        let c = Config::parse(text, "conf/voicebot1.toml", &ENV).expect("shipped config parses");
        let d = Config::parse("[ari]\npassword = \"voicebot1-sandbox\"\n", "d", &ENV)
            .expect("defaults parse");
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        assert_eq!(c.ari.rest_base, "http://127.0.0.1:8088/ari");
        assert_eq!(c.ari.ws_base, "ws://127.0.0.1:8088/ari");
        assert_eq!((c.media.port_min, c.media.port_max), (26500, 26999));
        assert_eq!(c.service.workers, 20);
        assert_eq!(c.media.phase, Duration::from_secs(7));
        assert_eq!(
            (c.ari.ping_interval, c.ari.pong_timeout),
            (Duration::from_secs(5), Duration::from_secs(5))
        );
        assert_eq!(c.media.format, Format::Alaw);
        assert_eq!(c.transfer.endpoint, "PJSIP/4438007@AVAYA-endpoint");
        assert_eq!(c.service.log_level, LevelFilter::Info);
        assert_eq!(c.service.log_file, None);
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9108".parse().unwrap()));
    }

    #[test]
    fn metrics_listen_is_an_address_or_off() {
        let listen = |v: &str| {
            Config::parse(
                &format!("[ari]\npassword='x'\n[metrics]\nlisten = '{v}'\n"),
                "t",
                &ENV,
            )
            .map(|c| c.metrics.listen)
        };
        assert_eq!(
            listen("[::1]:9200").unwrap(),
            Some("[::1]:9200".parse().unwrap())
        );
        assert_eq!(
            listen("127.0.0.1:0").unwrap(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(listen("off").unwrap(), None);
        assert_eq!(listen("").unwrap(), None);
        for bad in [
            "localhost:9108",
            "127.0.0.1",
            "9108",
            "127.0.0.1:99999",
            "on",
        ] {
            has_error(
                &format!("[ari]\npassword='x'\n[metrics]\nlisten = '{bad}'\n"),
                "metrics.listen",
                "is not IP:PORT",
            );
        }
        has_error(
            "[ari]\npassword='x'\n[metrics]\nlisten = 9108\n",
            "metrics.listen",
            "must be a string",
        );
        has_error(
            "[ari]\npassword='x'\n[metrics]\nport = 9108\n",
            "metrics.port",
            "unknown key",
        );
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
        has_error(
            "[ari]\npassword='x'\nurll = 'x'\n",
            "ari.urll",
            "unknown key",
        );
        has_error(
            "[ari]\npassword='x'\n[medias]\n",
            "medias",
            "unknown section",
        );
        has_error("ari = 3\n", "ari", "must be a [section]");
    }

    #[test]
    fn every_section_of_the_raw_config_has_its_keys_listed() {
        let names: Vec<&str> = sections().iter().map(|(s, _)| *s).collect();
        assert_eq!(names, keys_of::<RawConfig>());
        assert!(
            sections().iter().all(|(_, keys)| !keys.is_empty()),
            "{:?}",
            sections()
        );
    }

    #[test]
    fn an_unknown_key_in_each_section_is_named_with_the_keys_it_takes() {
        // `[bots]` holds one table per bot: its keys are a bot's (`[bots.NAME]`).
        let table = |section: &str| {
            if section == "bots" {
                "bots.x".to_string()
            } else {
                section.to_string()
            }
        };
        let mut text = String::new();
        for (section, _) in sections() {
            text.push_str(&format!("[{}]\nnot_a_key = 1\n", table(section)));
        }
        text = text.replace("[ari]\n", "[ari]\npassword = 'x'\n");
        text = text.replace("[bots.x]\n", "[bots.x]\nurl = 'ws://127.0.0.1:9/'\n");
        let errs = errors(&text);
        for (section, keys) in sections() {
            let expected = format!(
                "{}.not_a_key: unknown key (expected one of: {})",
                table(section),
                keys.join(", ")
            );
            assert!(
                errs.contains(&expected),
                "{expected:?} missing in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), sections().len(), "{errs:#?}");
    }

    #[test]
    fn a_date_is_the_wrong_type_for_any_key() {
        has_error(
            "[ari]\npassword='x'\nusername = 1979-05-27\n",
            "ari.username",
            "must be a string, found datetime",
        );
        has_error(
            "[ari]\npassword='x'\n[media]\nphase_ms = 07:32:00\n",
            "media.phase_ms",
            "must be an integer, found datetime",
        );
    }

    #[test]
    fn a_wrong_type_counts_as_the_default_for_the_checks_after_it() {
        let errs = errors(
            "[ari]\npassword='x'\n[media]\nport_min = 'low'\nport_max = 20000\nformat = 'gsm'\n",
        );
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
        let https = format!(
            "[ari]\npassword='x'\nurl='https://pbx.example'\nca_file='{}'\n",
            pem.display()
        );
        has_error(&https, "ari.ca_file", "holds no PEM certificate");
        has_error(
            &format!("[ari]\npassword='x'\nca_file='{}'\n", pem.display()),
            "ari.ca_file",
            "only used with an https:// url",
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let c = Config::parse(
            "[ari]\npassword='x'\nurl='https://pbx.example'\n",
            "t",
            &ENV,
        )
        .unwrap();
        assert!(c.ari.uses_tls() && c.ari.ca_file.is_none());
    }

    #[test]
    fn wrong_types_are_named() {
        has_error(
            "[ari]\npassword='x'\n[media]\nport_min = 'low'\n",
            "media.port_min",
            "must be an integer, found string",
        );
        has_error(
            "[ari]\npassword='x'\nurl = 8088\n",
            "ari.url",
            "must be a string, found integer",
        );
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
        has_error(
            "[ari]\npassword='x'\n[media]\nport_min=27000\nport_max=26000\n",
            "media.port_min",
            "empty or inverted",
        );
        has_error(
            "[ari]\npassword='x'\n[media]\nport_min=0\n",
            "media.port_min",
            "out of range",
        );
        has_error(
            "[ari]\npassword='x'\n[media]\nport_max=70000\n",
            "media.port_max",
            "out of range",
        );
    }

    #[test]
    fn port_range_larger_than_the_open_file_limit_is_refused() {
        let env = FakeEnv {
            vars: Vec::new(),
            limit: Some(1024),
        };
        let e = Config::parse(
            "[ari]\npassword='x'\n[media]\nport_min=20000\nport_max=29999\n",
            "t",
            &env,
        )
        .unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].key, "media.port_max");
        assert!(
            e.errors[0].message.contains("limit is 1024"),
            "{}",
            e.errors[0]
        );
    }

    #[test]
    fn ping_interval_and_pong_timeout_are_read_and_range_checked() {
        has_error(
            "[ari]\npassword='x'\nping_interval_ms=50\n",
            "ari.ping_interval_ms",
            "out of range",
        );
        has_error(
            "[ari]\npassword='x'\npong_timeout_ms=0\n",
            "ari.pong_timeout_ms",
            "out of range",
        );
        has_error(
            "[ari]\npassword='x'\npong_timeout_ms='5s'\n",
            "ari.pong_timeout_ms",
            "must be an integer",
        );
        let c = Config::parse(
            "[ari]\npassword='x'\nping_interval_ms=1000\npong_timeout_ms=3000\n",
            "t",
            &ENV,
        )
        .unwrap();
        assert_eq!(
            (c.ari.ping_interval, c.ari.pong_timeout),
            (Duration::from_secs(1), Duration::from_secs(3))
        );
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
            has_error(
                &format!("[ari]\npassword='x'\nurl='{url}'\n"),
                "ari.url",
                fragment,
            );
        }
    }

    #[test]
    fn url_forms_give_rest_and_ws_bases() {
        assert_eq!(
            parse_ari_url("https://pbx.example:8089/").unwrap(),
            (
                "https://pbx.example:8089/ari".into(),
                "wss://pbx.example:8089/ari".into()
            )
        );
        assert_eq!(
            parse_ari_url("http://10.0.0.1:8088/asterisk/ari").unwrap(),
            (
                "http://10.0.0.1:8088/asterisk/ari".into(),
                "ws://10.0.0.1:8088/asterisk/ari".into()
            )
        );
        assert_eq!(
            parse_ari_url("http://[::1]:8088").unwrap().0,
            "http://[::1]:8088/ari"
        );
    }

    #[test]
    fn password_comes_from_env_when_named() {
        let env = FakeEnv {
            vars: vec![("VB1_PW", "s3cret")],
            limit: None,
        };
        let c = Config::parse("[ari]\npassword_env='VB1_PW'\n", "t", &env).unwrap();
        assert_eq!(c.ari.password.expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        has_error(
            "[ari]\npassword_env='VB1_MISSING'\n",
            "ari.password_env",
            "not set",
        );
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

    const BOTS: &str = "[ari]\npassword = 'x'\n\
        [bot]\ndefault = 'support'\n\
        [bots.support]\nurl = 'ws://127.0.0.1:8765/voice'\nprotocol = 'twilio'\nformat = 'ulaw'\n\
        connect_timeout_ms = 1500\nmax_s = 600\nwhen_done = 'hangup'\non_failure = 'transfer'\n\
        [bots.care]\nurl = 'wss://bots.example.net/media'\nprotocol = 'asterisk'\nformat = 'slin16'\ncontrol = 'plain-text'\n\
        [transfer.to]\nsales = 'PJSIP/4438100@AVAYA-endpoint'\n";

    #[test]
    fn bots_and_their_destinations_are_read_with_their_defaults() {
        let c = Config::parse(BOTS, "t.toml", &ENV).unwrap();
        let support = &c.bots.bots["support"];
        assert_eq!(
            (support.dialect, support.format, support.max),
            (Dialect::Twilio, Format::Ulaw, Duration::from_secs(600))
        );
        assert_eq!(
            (support.when_done, support.on_failure),
            (AfterBot::Hangup, AfterBot::Transfer)
        );
        assert_eq!(support.connect_timeout, Duration::from_millis(1500));
        assert_eq!(
            c.bots.default.as_ref().map(|b| b.name.as_str()),
            Some("support")
        );
        let care = &c.bots.bots["care"];
        assert_eq!(
            (care.dialect, care.format, care.json_control),
            (Dialect::Asterisk, Format::Slin16, false)
        );
        assert_eq!(
            (care.max, care.when_done, care.max_queue),
            (
                Duration::from_secs(900),
                AfterBot::Transfer,
                Duration::from_secs(20)
            )
        );
        assert_eq!(c.transfer.to["sales"], "PJSIP/4438100@AVAYA-endpoint");
        assert!(matches!(c.bots.named("echo"), Named::Echo));
        assert!(matches!(c.bots.named("care"), Named::Bot(b) if b.name == "care"));
        assert!(matches!(c.bots.named("nope"), Named::Unknown));
        // No [bot]: the echo.
        let plain = Config::parse("[ari]\npassword = 'x'\n", "t.toml", &ENV).unwrap();
        assert!(
            plain.bots.default.is_none()
                && plain.bots.bots.is_empty()
                && plain.transfer.to.is_empty()
        );
    }

    #[test]
    fn every_bot_mistake_is_named_by_its_key() {
        has_error(
            &BOTS.replace("default = 'support'", "default = 'sales'"),
            "bot.default",
            "not a configured bot (one of: echo, care, support)",
        );
        has_error(
            &BOTS.replace("protocol = 'twilio'", "protocol = 'sip'"),
            "bots.support.protocol",
            "is not one of twilio, asterisk",
        );
        has_error(
            &BOTS.replace("format = 'ulaw'", "format = 'slin16'"),
            "bots.support.format",
            "not spoken by protocol \"twilio\"",
        );
        has_error(
            &BOTS.replace("ws://127.0.0.1:8765/voice", "http://127.0.0.1/"),
            "bots.support.url",
            "not a ws:// or wss:// URL",
        );
        has_error(
            &BOTS.replace("ws://127.0.0.1:8765/voice", "ws://user:pw@127.0.0.1/"),
            "bots.support.url",
            "credentials",
        );
        has_error(
            &BOTS.replace("url = 'ws://127.0.0.1:8765/voice'\n", ""),
            "bots.support.url",
            "missing",
        );
        has_error(
            &BOTS.replace("max_s = 600", "max_s = 0"),
            "bots.support.max_s",
            "out of range",
        );
        has_error(
            &BOTS.replace("when_done = 'hangup'", "when_done = 'nothing'"),
            "bots.support.when_done",
            "is not one of transfer, hangup",
        );
        has_error(
            &BOTS.replace(
                "sales = 'PJSIP/4438100@AVAYA-endpoint'",
                "sales = '4438100'",
            ),
            "transfer.to.sales",
            "is not TECH/resource",
        );
        has_error(
            &BOTS.replace("sales = 'PJSIP/4438100@AVAYA-endpoint'", "sales = 3"),
            "transfer.to.sales",
            "must be a string",
        );
        has_error(
            &BOTS.replace("[bots.care]", "[bots.echo]"),
            "bots.echo",
            "not \"echo\"",
        );
        has_error(
            &BOTS.replace("control = 'plain-text'", "control = 'xml'"),
            "bots.care.control",
            "is not one of json, plain-text",
        );
        has_error(
            &format!("{BOTS}[bots.x]\nurl = 'ws://h/'\ntoken_env = 'VB1_NOT_SET_ANYWHERE'\n"),
            "bots.x.token_env",
            "is not set",
        );
        has_error(
            "[ari]\npassword = 'x'\n[bots]\nsupport = 'ws://h/'\n",
            "bots.support",
            "must be a [bots.NAME] table",
        );
    }

    #[test]
    fn a_bot_token_file_readable_by_others_is_refused_and_a_private_one_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("vb1-bot-token-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "{BOTS}[bots.x]\nurl = 'ws://h/'\ntoken_file = '{}'\n",
            path.display()
        );
        has_error(&text, "bots.x.token_file", "chmod 600");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::parse(&text, "t.toml", &ENV).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            c.bots.bots["x"].token.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        assert!(
            !format!("{:?}", c.bots.bots["x"]).contains("s3cret"),
            "a token in Debug output"
        );
    }
}
