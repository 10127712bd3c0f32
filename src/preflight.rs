//! `voicebot1 --check --online CONFIG`: what an operator runs before the first call.
//!
//! Besides the file (checked before this runs), it asks the configured Asterisk, one check a line:
//! the credentials, the version, the modules the call flow needs, whether the Stasis application
//! name is free, whether the transfer endpoint and the `[transfer.to]` destinations exist; it
//! connects to every configured bot (the WebSocket handshake only); and whether the UDP port
//! range and the
//! metrics address are free on this host. Each check is independent where it can be, so one run shows every problem; a check
//! that needs ARI is failed (not skipped) when ARI cannot be reached.

use std::fmt;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Instant;

use std::sync::Arc;

use crate::ari::rest::Unobserved;
use crate::ari::{AriClient, AsteriskVersion, ErrorKind, Support};
use crate::config::{BotConfig, Config};
use crate::net::{tls, ws};

/// Modules the call flow uses: ARI over HTTP and WebSocket, Stasis, bridges, channels (and
/// externalMedia, which lives in `res_ari_channels`), and the UnicastRTP channel driver behind
/// externalMedia.
pub const MODULES: &[&str] = &[
    "res_ari.so",
    "res_ari_events.so",
    "res_ari_channels.so",
    "res_ari_bridges.so",
    "res_ari_applications.so",
    "res_stasis.so",
    "app_stasis.so",
    "chan_rtp.so",
    "res_http_websocket.so",
];

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    Fail(String),
    /// Not applicable to this configuration (e.g. a `Local/` transfer target has no endpoint).
    Skip(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

impl Check {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail(_))
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass(m) => write!(f, "PASS  {}: {m}", self.name),
            Outcome::Fail(m) => write!(f, "FAIL  {}: {m}", self.name),
            Outcome::Skip(m) => write!(f, "SKIP  {}: {m}", self.name),
        }
    }
}

/// Runs every check against the configured Asterisk and this host.
pub fn run(config: &Config) -> Vec<Check> {
    let ari = AriClient::new(&config.ari, Arc::new(Unobserved));
    let mut checks = Vec::new();
    let info = ari.asterisk_version();
    let reachable = info.is_ok();
    checks.push(Check {
        name: "credentials",
        outcome: match &info {
            Ok(_) => Outcome::Pass(format!(
                "{} accepted user {:?}",
                config.ari.rest_base, config.ari.username
            )),
            Err(e) => match e.kind {
                ErrorKind::Unauthorized(code) => Outcome::Fail(format!(
                    "HTTP {code}: Asterisk refused user {:?}; check [ari] username/password",
                    config.ari.username
                )),
                _ => Outcome::Fail(format!("cannot reach ARI: {e}")),
            },
        },
    });
    let unreachable =
        || Outcome::Fail("not checked: no access to ARI (see credentials)".to_string());
    checks.push(Check {
        name: "version",
        outcome: match &info {
            Ok(raw) => version_outcome(raw),
            Err(_) => unreachable(),
        },
    });
    checks.push(Check {
        name: "modules",
        outcome: if reachable {
            modules_outcome(&ari)
        } else {
            unreachable()
        },
    });
    checks.push(Check {
        name: "application",
        outcome: if reachable {
            application_outcome(&ari, &config.ari.app)
        } else {
            unreachable()
        },
    });
    checks.push(Check {
        name: "transfer endpoint",
        outcome: match endpoint_of(&config.transfer.endpoint) {
            None => Outcome::Skip(format!(
                "{} is not a device endpoint (nothing to look up)",
                config.transfer.endpoint
            )),
            Some(_) if !reachable => unreachable(),
            Some((tech, resource)) => endpoint_outcome(&ari, &tech, &resource),
        },
    });
    for (name, endpoint) in &config.transfer.to {
        checks.push(Check {
            name: "transfer destination",
            outcome: match endpoint_of(endpoint) {
                None => Outcome::Skip(format!(
                    "{name} = {endpoint} is not a device endpoint (nothing to look up)"
                )),
                Some(_) if !reachable => unreachable(),
                Some((tech, resource)) => match endpoint_outcome(&ari, &tech, &resource) {
                    Outcome::Pass(m) => Outcome::Pass(format!("{name}: {m}")),
                    Outcome::Fail(m) => Outcome::Fail(format!("{name}: {m}")),
                    other => other,
                },
            },
        });
    }
    for bot in config.bots.bots.values() {
        checks.push(Check {
            name: "bot",
            outcome: bot_outcome(bot),
        });
    }
    checks.push(Check {
        name: "media ports",
        outcome: ports_outcome(config),
    });
    checks.push(Check {
        name: "metrics listen",
        outcome: metrics_outcome(config.metrics.listen),
    });
    checks
}

fn version_outcome(raw: &str) -> Outcome {
    match AsteriskVersion::parse(raw) {
        // The service runs on such a build with a warning; the preflight says so and does not fail.
        None => Outcome::Skip(format!("Asterisk reports {raw:?}, which has no release number voicebot1 can check")),
        Some(v) => match v.support() {
            Support::Unsupported(why) => Outcome::Fail(format!("Asterisk {v} is not supported: {why}")),
            Support::Supported if v.runs_commands_late() => Outcome::Pass(format!(
                "Asterisk {v} is supported (it runs queued ARI commands late; voicebot1 wakes its channels)"
            )),
            Support::Supported => Outcome::Pass(format!("Asterisk {v} is supported")),
        },
    }
}

fn modules_outcome(ari: &AriClient) -> Outcome {
    let mut missing = Vec::new();
    for name in MODULES {
        match ari.module_status(name) {
            Ok(status) if status.eq_ignore_ascii_case("running") => {}
            Ok(status) => missing.push(format!("{name} ({status})")),
            Err(e) if e.is_not_found() => missing.push(format!("{name} (not loaded)")),
            Err(e) => return Outcome::Fail(e.to_string()),
        }
    }
    if missing.is_empty() {
        Outcome::Pass(format!("{} loaded", MODULES.join(", ")))
    } else {
        Outcome::Fail(format!(
            "not running: {}; load them in modules.conf",
            missing.join(", ")
        ))
    }
}

fn application_outcome(ari: &AriClient, app: &str) -> Outcome {
    match ari.application_registered(app) {
        Ok(false) => Outcome::Pass(format!("Stasis application {app:?} is free")),
        Ok(true) => Outcome::Fail(format!(
            "Stasis application {app:?} is already registered: another voicebot1 or ARI client is connected under that name \
             (Asterisk sends each event to one of them only)"
        )),
        Err(e) => Outcome::Fail(e.to_string()),
    }
}

fn endpoint_outcome(ari: &AriClient, tech: &str, resource: &str) -> Outcome {
    match ari.endpoint_state(tech, resource) {
        Ok(state) => Outcome::Pass(format!(
            "{tech}/{resource} is known to Asterisk (state {state})"
        )),
        Err(e) if e.is_not_found() => Outcome::Fail(format!(
            "Asterisk has no endpoint {tech}/{resource}; check [transfer] endpoint and pjsip.conf"
        )),
        Err(e) => Outcome::Fail(e.to_string()),
    }
}

/// The endpoint a dial string reaches: `PJSIP/4438007@AVAYA-endpoint` → (`PJSIP`, `AVAYA-endpoint`),
/// `PJSIP/AVAYA-endpoint/sip:1@host` → (`PJSIP`, `AVAYA-endpoint`), `SIP/peer` → (`SIP`, `peer`).
/// `None` for targets that are not device endpoints (`Local/…`) or have no resource.
pub fn endpoint_of(dial: &str) -> Option<(String, String)> {
    let (tech, rest) = dial.split_once('/')?;
    if tech.eq_ignore_ascii_case("Local") || rest.is_empty() {
        return None;
    }
    let first = rest.split('/').next().unwrap_or(rest);
    let resource = first
        .rsplit_once('@')
        .map_or(first, |(_, endpoint)| endpoint);
    (!resource.is_empty()).then(|| (tech.to_string(), resource.to_string()))
}

fn ports_outcome(config: &Config) -> Outcome {
    let m = &config.media;
    let range = format!("{}:{}-{}", m.bind_host, m.port_min, m.port_max);
    let mut busy = Vec::new();
    for port in m.port_min..=m.port_max {
        // Bound and dropped at once: only whether another process holds it matters.
        if let Err(e) = UdpSocket::bind(SocketAddr::new(m.bind_host, port)) {
            busy.push((port, e));
        }
    }
    let total = usize::from(m.port_max - m.port_min) + 1;
    match busy.first() {
        None => Outcome::Pass(format!("all {total} UDP ports of {range} are free")),
        Some((_, e)) => {
            let ports: Vec<String> = busy.iter().take(10).map(|(p, _)| p.to_string()).collect();
            let more = if busy.len() > 10 {
                format!(" and {} more", busy.len() - 10)
            } else {
                String::new()
            };
            Outcome::Fail(format!(
                "{} of {total} UDP ports of {range} cannot be bound ({}{more}): {e}",
                busy.len(),
                ports.join(", ")
            ))
        }
    }
}

/// Connects to a bot as a call would (TCP, TLS, the upgrade with its token, within
/// `connect_timeout_ms`), then closes: the handshake only, no call.
fn bot_outcome(bot: &BotConfig) -> Outcome {
    let tls = match bot.url.starts_with("wss://") {
        true => match tls::client_config(bot.ca_file.as_deref()) {
            Ok(t) => Some(t),
            Err(e) => return Outcome::Fail(format!("{}: {e}", bot.name)),
        },
        false => None,
    };
    let auth = bot.token.as_ref().map(|t| format!("Bearer {}", t.expose()));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let since = Instant::now();
    let request = ws::Request {
        url: &bot.url,
        headers: &headers,
        tls: tls.as_ref(),
        per_attempt: bot.connect_timeout,
        deadline: since + bot.connect_timeout,
        max_message: 1 << 20,
    };
    match ws::connect(&request) {
        Ok(mut socket) => {
            let _ = socket.close(None);
            let _ = socket.flush();
            Outcome::Pass(format!(
                "{} ({}, {}): {} answered the upgrade in {} ms",
                bot.name,
                bot.dialect.name(),
                bot.format.name(),
                bot.url,
                since.elapsed().as_millis()
            ))
        }
        Err(ws::ConnectError::Status(code @ (401 | 403))) => Outcome::Fail(format!(
            "{}: {} refused the connection with HTTP {code}; check bots.{}.token_file / token_env",
            bot.name, bot.url, bot.name
        )),
        Err(e) => Outcome::Fail(format!("{}: {}: {e}", bot.name, bot.url)),
    }
}

/// Whether voicebot1 could listen on `[metrics] listen` (it refuses to start when it cannot).
fn metrics_outcome(listen: Option<SocketAddr>) -> Outcome {
    match listen {
        None => Outcome::Skip("[metrics] listen is off: no /metrics or /health".to_string()),
        // Bound and dropped at once, as the UDP ports.
        Some(addr) => match TcpListener::bind(addr) {
            Ok(_) => Outcome::Pass(format!("TCP {addr} is free for /metrics and /health")),
            Err(e) => Outcome::Fail(format!("cannot listen on TCP {addr}: {e}; voicebot1 would not start (change [metrics] listen, or \"off\")")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_from_dial_strings() {
        let e = |s: &str| endpoint_of(s).map(|(t, r)| format!("{t}/{r}"));
        assert_eq!(
            e("PJSIP/4438007@AVAYA-endpoint").as_deref(),
            Some("PJSIP/AVAYA-endpoint")
        );
        assert_eq!(
            e("PJSIP/AVAYA-endpoint").as_deref(),
            Some("PJSIP/AVAYA-endpoint")
        );
        assert_eq!(
            e("PJSIP/AVAYA-endpoint/sip:4438007@10.0.0.5").as_deref(),
            Some("PJSIP/AVAYA-endpoint")
        );
        assert_eq!(e("SIP/avaya").as_deref(), Some("SIP/avaya"));
        assert_eq!(e("Local/4438007@transfers"), None);
        assert_eq!(e("PJSIP/"), None);
        assert_eq!(e("PJSIP/1@"), None);
        assert_eq!(e("nothing"), None);
    }

    #[test]
    fn version_lines_name_the_version_and_the_reason() {
        assert!(
            matches!(version_outcome("16.6.2"), Outcome::Fail(m) if m.contains("16.6.2") && m.contains("16.7"))
        );
        assert!(
            matches!(version_outcome("GIT-master-abc"), Outcome::Skip(m) if m.contains("GIT-master-abc"))
        );
        assert!(
            matches!(version_outcome("16.28.0~dfsg-0+deb11u4"), Outcome::Pass(m) if m.contains("late"))
        );
        assert!(matches!(version_outcome("22.10.1"), Outcome::Pass(m) if !m.contains("late")));
    }

    #[test]
    fn metrics_address_is_checked_free_or_skipped_when_off() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        assert!(
            matches!(metrics_outcome(Some(addr)), Outcome::Fail(m) if m.contains(&addr.to_string()) && m.contains("would not start"))
        );
        drop(taken);
        assert!(matches!(metrics_outcome(Some(addr)), Outcome::Pass(_)));
        assert!(matches!(metrics_outcome(None), Outcome::Skip(m) if m.contains("off")));
    }

    #[test]
    fn lines_start_with_their_verdict() {
        let c = Check {
            name: "media ports",
            outcome: Outcome::Fail("x".into()),
        };
        assert_eq!(c.to_string(), "FAIL  media ports: x");
        assert!(c.failed());
        assert!(!Check {
            name: "a",
            outcome: Outcome::Skip("y".into())
        }
        .failed());
    }
}
