//! The ARI REST client: one `ureq` agent (keep-alive pool, timeouts, basic auth) behind a cheap
//! `Clone` handle that every worker holds.
//!
//! Every method names what it was doing in its error, so a log line reads as a sentence:
//! `creating externalMedia voicebot1-1764…-media: HTTP 500: Internal Server Error`. A 404 is its
//! own kind, because for teardown "not found" means "already gone", which is success.
//! Only idempotent requests (GET, DELETE) are retried, once, on a transport error or a 5xx.
//!
//! The client counts nothing itself: each try of a request is told to the [`Observer`] it was
//! given (metrics, admission's view of how fast Asterisk answers), so it holds no global state.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, trace};
use serde::de::DeserializeOwned;

use super::events::{Bridge, Channel};
use crate::config::AriConfig;
use crate::net::tls;

/// What went wrong with one REST request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: the channel, bridge or route does not exist.
    NotFound,
    /// 401/403: the credentials were refused.
    Unauthorized(u16),
    /// Any other non-2xx status, with Asterisk's `message` when it sent one.
    Status(u16, String),
    /// No HTTP answer: refused, reset, timed out, DNS, TLS.
    Transport(String),
    /// A 2xx whose body was not what ARI documents.
    Decode(String),
}

/// A failed REST request and what it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AriError {
    pub doing: String,
    pub kind: ErrorKind,
}

impl AriError {
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for AriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::NotFound => write!(f, "{}: HTTP 404 not found", self.doing),
            ErrorKind::Unauthorized(code) => write!(
                f,
                "{}: HTTP {code}: check [ari] username/password",
                self.doing
            ),
            ErrorKind::Status(code, msg) if msg.is_empty() => {
                write!(f, "{}: HTTP {code}", self.doing)
            }
            ErrorKind::Status(code, msg) => write!(f, "{}: HTTP {code}: {msg}", self.doing),
            ErrorKind::Transport(msg) => write!(f, "{}: {msg}", self.doing),
            ErrorKind::Decode(msg) => write!(f, "{}: unexpected response: {msg}", self.doing),
        }
    }
}

impl std::error::Error for AriError {}

pub type Result<T> = std::result::Result<T, AriError>;

/// What `originate` needs besides the ids.
#[derive(Debug, Clone)]
pub struct Originate<'a> {
    pub channel_id: &'a str,
    pub endpoint: &'a str,
    pub app: &'a str,
    pub app_args: &'a str,
    pub caller_id: &'a str,
    pub timeout: Duration,
}

/// Why a channel is hung up, as ARI's `reason` parameter (it sets the hang-up cause the other
/// side sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    Normal,
    Busy,
    NoAnswer,
    Congestion,
}

impl HangupReason {
    /// The value of ARI's `reason` parameter.
    pub fn as_ari(self) -> &'static str {
        match self {
            HangupReason::Normal => "normal",
            HangupReason::Busy => "busy",
            HangupReason::NoAnswer => "no_answer",
            HangupReason::Congestion => "congestion",
        }
    }
}

/// How one try of a request came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Asterisk answered with this HTTP status (an error status is an answer too).
    Status(u16),
    /// Asked, but no (complete) answer within `[ari] request_timeout_ms`.
    Timeout,
    /// No connection: refused, unreachable, DNS, connect timeout.
    Connect,
    /// No usable answer for another reason: a reset mid-answer, TLS.
    Other,
}

impl Answer {
    /// Whether Asterisk answered at all.
    pub fn answered(self) -> bool {
        matches!(self, Answer::Status(_))
    }
}

/// Watches the client's requests: told of every try of every request, on the thread that made it.
pub trait Observer: Send + Sync {
    /// A request is about to be sent; what it returns comes back with the request's answer (a
    /// request that never comes back is one Asterisk has not answered yet).
    fn sent(&self, _method: &str, _path: &str) -> u64 {
        0
    }
    /// The answer to the request `sent` returned `token` for. `path` is relative to the ARI base
    /// and holds ids (`/bridges/voicebot1-…/addChannel`).
    fn request(&self, token: u64, method: &str, path: &str, answer: Answer, took: Duration);
}

/// An observer that watches nothing (the preflight, tests).
pub struct Unobserved;

impl Observer for Unobserved {
    fn request(&self, _: u64, _: &str, _: &str, _: Answer, _: Duration) {}
}

/// The ARI REST client. Clones share one connection pool and one [`Observer`].
#[derive(Clone)]
pub struct AriClient {
    agent: ureq::Agent,
    base: String,
    auth: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    observer: Arc<dyn Observer>,
}

impl fmt::Debug for AriClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AriClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How one request may be retried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    Yes,
    No,
}

/// Connections to Asterisk kept open between requests: more than the threads that make them (90
/// with the default 20 workers: 40 for set-ups, 24 shedders, 24 teardown threads, door, janitor).
const IDLE_CONNECTIONS: usize = 128;

impl AriClient {
    pub fn new(config: &AriConfig, observer: Arc<dyn Observer>) -> AriClient {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(config.request_timeout)
            .timeout(config.request_timeout)
            // Every thread that talks to Asterisk keeps its connection for the next request:
            // workers and their set-up helpers, shedders, teardown threads, door, janitor. A
            // connection dropped here is opened again in the next burst, and Asterisk listens
            // with a backlog of 10 (tcptls.c): past it a SYN is dropped and retried after 1 s —
            // rejections that took 1.04 s, a dozen at once, under overload.
            .max_idle_connections(IDLE_CONNECTIONS)
            .max_idle_connections_per_host(IDLE_CONNECTIONS)
            .user_agent(concat!("voicebot1/", env!("CARGO_PKG_VERSION")));
        let tls = tls_for(config);
        if let Some(tls) = &tls {
            builder = builder.tls_connector(Arc::new(tls::KeepAliveTls(Arc::clone(tls))));
        }
        AriClient {
            agent: builder.build(),
            tls,
            base: config.rest_base.clone(),
            auth: basic_auth(&config.username, config.password.expose()),
            observer,
        }
    }

    /// The TLS settings of `https://` ARI, for the event WebSocket (`wss://`); `None` for `http://`.
    pub fn tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    /// `GET /asterisk/info`: the Asterisk version, and a check of the credentials.
    pub fn asterisk_version(&self) -> Result<String> {
        let doing = "asking Asterisk for its version".to_string();
        let v: serde_json::Value =
            self.json("GET", "/asterisk/info", &[], Idempotent::Yes, &doing)?;
        Ok(v.pointer("/system/version")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string())
    }

    /// `GET /asterisk/modules/{name}`: the module's status (`Running` when loaded).
    pub fn module_status(&self, name: &str) -> Result<String> {
        let doing = format!("asking Asterisk about module {name}");
        let v: serde_json::Value = self.json(
            "GET",
            &format!("/asterisk/modules/{}", seg(name)),
            &[],
            Idempotent::Yes,
            &doing,
        )?;
        Ok(v.get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown")
            .to_string())
    }

    /// `GET /applications/{name}`: whether a Stasis application of that name is registered
    /// (some ARI client is connected under it).
    pub fn application_registered(&self, name: &str) -> Result<bool> {
        let doing = format!("asking Asterisk about application {name}");
        match self.call(
            "GET",
            &format!("/applications/{}", seg(name)),
            &[],
            Idempotent::Yes,
            &doing,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /endpoints/{tech}/{resource}`: `Err` with [`ErrorKind::NotFound`] when Asterisk does
    /// not know the endpoint.
    pub fn endpoint_state(&self, tech: &str, resource: &str) -> Result<String> {
        let doing = format!("asking Asterisk about endpoint {tech}/{resource}");
        let path = format!("/endpoints/{}/{}", seg(tech), seg(resource));
        let v: serde_json::Value = self.json("GET", &path, &[], Idempotent::Yes, &doing)?;
        Ok(v.get("state")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown")
            .to_string())
    }

    pub fn list_channels(&self) -> Result<Vec<Channel>> {
        self.json("GET", "/channels", &[], Idempotent::Yes, "listing channels")
    }

    pub fn get_bridge(&self, id: &str) -> Result<Bridge> {
        self.json(
            "GET",
            &format!("/bridges/{}", seg(id)),
            &[],
            Idempotent::Yes,
            &format!("looking up bridge {id}"),
        )
    }

    pub fn list_bridges(&self) -> Result<Vec<Bridge>> {
        self.json("GET", "/bridges", &[], Idempotent::Yes, "listing bridges")
    }

    pub fn create_bridge(&self, id: &str, name: &str) -> Result<()> {
        let doing = format!("creating bridge {id}");
        self.call(
            "POST",
            &format!("/bridges/{}", seg(id)),
            &[("type", "mixing"), ("name", name)],
            Idempotent::No,
            &doing,
        )
        .map(drop)
    }

    /// Adds channels to a bridge, all in one request (ARI takes a comma-separated list).
    pub fn add_channels(&self, bridge: &str, channels: &[&str]) -> Result<()> {
        let list = channels.join(",");
        let doing = format!("adding {list} to bridge {bridge}");
        self.call(
            "POST",
            &format!("/bridges/{}/addChannel", seg(bridge)),
            &[("channel", &list)],
            Idempotent::No,
            &doing,
        )
        .map(drop)
    }

    pub fn destroy_bridge(&self, id: &str) -> Result<()> {
        let doing = format!("destroying bridge {id}");
        self.call(
            "DELETE",
            &format!("/bridges/{}", seg(id)),
            &[],
            Idempotent::Yes,
            &doing,
        )
        .map(drop)
    }

    /// Creates an externalMedia channel sending RTP to `external_host` (`ip:port`).
    pub fn external_media(
        &self,
        channel_id: &str,
        app: &str,
        external_host: &str,
        format: &str,
    ) -> Result<Channel> {
        let doing = format!("creating externalMedia {channel_id} to {external_host}");
        let query = [
            ("app", app),
            ("channelId", channel_id),
            ("external_host", external_host),
            ("format", format),
            ("encapsulation", "rtp"),
            ("transport", "udp"),
            ("connection_type", "client"),
            ("direction", "both"),
        ];
        self.json(
            "POST",
            "/channels/externalMedia",
            &query,
            Idempotent::No,
            &doing,
        )
    }

    /// Originates `o.channel_id` to `o.endpoint`; the channel enters Stasis(`app`, `app_args`)
    /// when answered.
    pub fn originate(&self, o: &Originate) -> Result<Channel> {
        let doing = format!("originating {} to {}", o.channel_id, o.endpoint);
        let timeout = o.timeout.as_secs().max(1).to_string();
        let mut query = vec![
            ("endpoint", o.endpoint),
            ("app", o.app),
            ("appArgs", o.app_args),
            ("timeout", timeout.as_str()),
        ];
        if !o.caller_id.is_empty() {
            query.push(("callerId", o.caller_id));
        }
        self.json(
            "POST",
            &format!("/channels/{}", seg(o.channel_id)),
            &query,
            Idempotent::No,
            &doing,
        )
    }

    pub fn hangup(&self, channel: &str, reason: HangupReason) -> Result<()> {
        let doing = format!("hanging up {channel}");
        self.call(
            "DELETE",
            &format!("/channels/{}", seg(channel)),
            &[("reason", reason.as_ari())],
            Idempotent::Yes,
            &doing,
        )
        .map(drop)
    }

    /// Sets a channel variable or writes a dialplan function (e.g. `CHANNEL(hangup_handler_push)`).
    pub fn set_variable(&self, channel: &str, variable: &str, value: &str) -> Result<()> {
        let doing = format!("setting {variable} on {channel}");
        let path = format!("/channels/{}/variable", seg(channel));
        self.call(
            "POST",
            &path,
            &[("variable", variable), ("value", value)],
            Idempotent::No,
            &doing,
        )
        .map(drop)
    }

    /// Reads a channel variable or a dialplan function (e.g. `CHANNEL(rtp,src)`).
    pub fn channel_variable(&self, channel: &str, variable: &str) -> Result<String> {
        let doing = format!("reading {variable} of {channel}");
        let path = format!("/channels/{}/variable", seg(channel));
        let v: serde_json::Value = self.json(
            "GET",
            &path,
            &[("variable", variable)],
            Idempotent::Yes,
            &doing,
        )?;
        Ok(v.get("value")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string())
    }

    /// Plays `media` (e.g. `tone:ring`) to `channel` as playback `playback_id`. It also reaches a
    /// channel that is in a bridge, unlike a ringing indication.
    pub fn play(&self, channel: &str, playback_id: &str, media: &str) -> Result<()> {
        let doing = format!("playing {media} to {channel}");
        let path = format!("/channels/{}/play/{}", seg(channel), seg(playback_id));
        self.call("POST", &path, &[("media", media)], Idempotent::No, &doing)
            .map(drop)
    }

    /// `GET /playbacks/{id}`: the playback's state (`queued`, `playing`, `done`, …).
    pub fn playback_state(&self, playback_id: &str) -> Result<String> {
        let doing = format!("asking Asterisk about playback {playback_id}");
        let v: serde_json::Value = self.json(
            "GET",
            &format!("/playbacks/{}", seg(playback_id)),
            &[],
            Idempotent::Yes,
            &doing,
        )?;
        Ok(v.get("state")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown")
            .to_string())
    }

    /// Sets an Asterisk global variable (`POST /asterisk/variable`).
    pub fn set_global(&self, variable: &str, value: &str) -> Result<()> {
        let doing = format!("setting global variable {variable}");
        self.call(
            "POST",
            "/asterisk/variable",
            &[("variable", variable), ("value", value)],
            Idempotent::No,
            &doing,
        )
        .map(drop)
    }

    pub fn stop_playback(&self, playback_id: &str) -> Result<()> {
        let doing = format!("stopping playback {playback_id}");
        self.call(
            "DELETE",
            &format!("/playbacks/{}", seg(playback_id)),
            &[],
            Idempotent::Yes,
            &doing,
        )
        .map(drop)
    }

    fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        idem: Idempotent,
        doing: &str,
    ) -> Result<T> {
        let body = self.call(method, path, query, idem, doing)?;
        serde_json::from_str(&body).map_err(|e| AriError {
            doing: doing.to_string(),
            kind: ErrorKind::Decode(e.to_string()),
        })
    }

    /// One request, retried once when idempotent and the failure may be passing.
    fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        idem: Idempotent,
        doing: &str,
    ) -> Result<String> {
        match self.call_once(method, path, query, doing) {
            Err(e) if idem == Idempotent::Yes && is_passing(&e.kind) => {
                debug!("{e}; retrying once");
                // Jittered, so that requests that failed together do not all come back together.
                std::thread::sleep(Duration::from_millis(100 + jitter_ms(200)));
                self.call_once(method, path, query, doing)
            }
            other => other,
        }
    }

    fn call_once(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        doing: &str,
    ) -> Result<String> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .agent
            .request(method, &url)
            .set("Authorization", &self.auth);
        for (k, v) in query {
            req = req.query(k, v);
        }
        debug!("ARI {method} {path} {query:?}");
        let err = |kind| AriError {
            doing: doing.to_string(),
            kind,
        };
        let token = self.observer.sent(method, path);
        let sent = Instant::now();
        let (result, answer) = match req.call() {
            Ok(resp) => {
                let status = resp.status();
                match resp.into_string() {
                    Ok(body) => {
                        debug!("ARI {method} {path} -> {status}");
                        trace!("ARI {method} {path} body: {body}");
                        (Ok(body), Answer::Status(status))
                    }
                    Err(e) => {
                        let answer = if is_timeout(&e) {
                            Answer::Timeout
                        } else {
                            Answer::Other
                        };
                        (
                            Err(err(ErrorKind::Transport(format!(
                                "reading the response: {e}"
                            )))),
                            answer,
                        )
                    }
                }
            }
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                debug!("ARI {method} {path} -> {code} {body}");
                let kind = match code {
                    404 => ErrorKind::NotFound,
                    401 | 403 => ErrorKind::Unauthorized(code),
                    _ => ErrorKind::Status(code, ari_message(&body)),
                };
                (Err(err(kind)), Answer::Status(code))
            }
            Err(ureq::Error::Transport(t)) => {
                debug!("ARI {method} {path} -> transport error: {t}");
                (
                    Err(err(ErrorKind::Transport(t.to_string()))),
                    transport_answer(&t),
                )
            }
        };
        self.observer
            .request(token, method, path, answer, sent.elapsed());
        result
    }
}

/// A pseudo-random number in `0..bound` (xorshift over the clock: jitter needs no more).
fn jitter_ms(bound: u64) -> u64 {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos() as u64)
        | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % bound.max(1)
}

/// A request that got no HTTP status: no connection at all, or no (complete) answer in time.
fn transport_answer(t: &ureq::Transport) -> Answer {
    match t.kind() {
        ureq::ErrorKind::Dns | ureq::ErrorKind::ConnectionFailed => Answer::Connect,
        _ if std::error::Error::source(t)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(is_timeout) =>
        {
            Answer::Timeout
        }
        _ => Answer::Other,
    }
}

/// The TLS client settings for `config`: `None` for `http://`.
///
/// `Config::load` has already built them once to check `ca_file`; if the file has become
/// unusable since, the error is logged and only the public roots are trusted (a private
/// certificate then fails its handshake, which is logged on every attempt).
fn tls_for(config: &AriConfig) -> Option<Arc<rustls::ClientConfig>> {
    if !config.uses_tls() {
        return None;
    }
    match tls::client_config(config.ca_file.as_deref()) {
        Ok(tls) => Some(tls),
        Err(e) => {
            error!("ari.ca_file: {e}; trusting the public roots only");
            tls::client_config(None).ok()
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

fn is_passing(kind: &ErrorKind) -> bool {
    match kind {
        ErrorKind::Transport(_) => true,
        ErrorKind::Status(code, _) => *code >= 500,
        _ => false,
    }
}

/// ARI error bodies are `{"message": "..."}` (or `{"error": "..."}`, e.g. originate's
/// "Allocation failed"); anything else is shown cut short.
fn ari_message(body: &str) -> String {
    let msg = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["message", "error"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|m| m.as_str()).map(str::to_string))
        })
        .unwrap_or_else(|| body.trim().to_string());
    msg.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Percent-encodes one path segment (ids are ours, but a caller's channel id comes from Asterisk).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Authorization` header value for HTTP basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(basic_auth("voicebot1", "pw"), "Basic dm9pY2Vib3QxOnB3");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("1764000000.17"), "1764000000.17");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn errors_read_as_sentences_and_name_what_was_done() {
        let e = AriError {
            doing: "creating bridge b1".into(),
            kind: ErrorKind::Status(500, "Internal Server Error".into()),
        };
        assert_eq!(
            e.to_string(),
            "creating bridge b1: HTTP 500: Internal Server Error"
        );
        let e = AriError {
            doing: "connecting".into(),
            kind: ErrorKind::Unauthorized(401),
        };
        assert!(e.to_string().contains("401: check [ari] username/password"));
        assert!(AriError {
            doing: String::new(),
            kind: ErrorKind::NotFound
        }
        .is_not_found());
    }

    #[test]
    fn requests_without_a_status_are_classed_as_timeout_or_connect() {
        use std::net::TcpListener;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(200))
            .build();
        // Accepts (the kernel does, from the backlog) but never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ari/asterisk/info", silent.local_addr().unwrap());
        match agent.get(&url).call() {
            Err(ureq::Error::Transport(t)) => {
                assert_eq!(transport_answer(&t), Answer::Timeout, "{t}")
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
        // Nobody listens on a port just released.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        match agent
            .get(&format!("http://{closed}/ari/asterisk/info"))
            .call()
        {
            Err(ureq::Error::Transport(t)) => {
                assert_eq!(transport_answer(&t), Answer::Connect, "{t}")
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
        drop(silent);
    }

    #[test]
    fn plain_http_gets_no_tls_settings_and_https_does() {
        let parse = |text: &str| {
            crate::config::Config::parse(text, "t", &crate::config::ProcessEnv)
                .expect("config parses")
                .ari
        };
        assert!(tls_for(&parse("[ari]\npassword = 'x'\n")).is_none());
        assert!(tls_for(&parse(
            "[ari]\npassword = 'x'\nurl = 'https://localhost:8089'\n"
        ))
        .is_some());
    }

    #[test]
    fn ari_messages_are_extracted_and_cleaned() {
        assert_eq!(
            ari_message(r#"{"message":"Channel not found"}"#),
            "Channel not found"
        );
        assert_eq!(
            ari_message(r#"{"error":"Allocation failed"}"#),
            "Allocation failed"
        );
        assert_eq!(ari_message("plain\ntext"), "plaintext");
        assert_eq!(ari_message(&"x".repeat(1000)).len(), 200);
    }
}
