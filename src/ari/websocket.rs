//! The ARI event WebSocket: connecting (with basic auth in a header, never in the URL), reading
//! text frames with a short read timeout so the reader thread notices shutdown, and telling a
//! live connection from a dead one.
//!
//! Asterisk never pings an inbound ARI WebSocket; it only answers pings. A half-open TCP
//! connection (NAT or firewall state lost, a paused VM, a pulled cable) would otherwise leave
//! voicebot1 waiting for events for ever. So the reader pings every [`PING_EVERY`] and treats
//! [`SILENCE_LIMIT`] without any frame (a pong is one) as a dead connection ([`Liveness`]); TCP
//! keepalive on the socket catches the same at the kernel level when nothing is sent.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use socket2::{SockRef, TcpKeepalive};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, Message, WebSocket};

use super::rest::basic_auth;
use crate::config::AriConfig;

/// How often a blocked read returns to let the reader look at its shutdown channel.
const READ_POLL: Duration = Duration::from_millis(250);

/// Frames larger than this are refused (ARI events are a few kB).
const MAX_FRAME: usize = 1 << 20;

/// How often the reader pings Asterisk.
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// How long the connection may stay silent (no event, no pong) before it is taken for dead.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(10);

/// TCP keepalive on the event socket: first probe after this much idle time, then every
/// [`KEEPALIVE_INTERVAL`], given up after [`KEEPALIVE_PROBES`].
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 3;

/// Whether the event connection is alive: when to ping, when to give up on it.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    last_heard: Instant,
    last_ping: Instant,
}

impl Liveness {
    pub fn new(now: Instant) -> Liveness {
        Liveness { last_heard: now, last_ping: now }
    }

    /// A frame (event, pong, anything) arrived.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// Whether to ping now; records the ping if so.
    pub fn ping_due(&mut self, now: Instant) -> bool {
        let due = now.duration_since(self.last_ping) >= PING_EVERY;
        if due {
            self.last_ping = now;
        }
        due
    }

    /// How long it has been silent, if that is longer than [`SILENCE_LIMIT`].
    pub fn dead(&self, now: Instant) -> Option<Duration> {
        let silent = now.duration_since(self.last_heard);
        (silent > SILENCE_LIMIT).then_some(silent)
    }
}

#[derive(Debug)]
pub enum ConnectError {
    /// 401/403 on the upgrade: wrong credentials.
    Unauthorized(u16),
    Other(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Unauthorized(code) => write!(f, "{code}: check [ari] username/password"),
            ConnectError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ConnectError {}

/// What one read produced.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    /// A control frame (pong, ping) was handled: the connection is alive.
    Control,
    /// Nothing arrived within the poll interval.
    Idle,
}

/// A connected event stream.
pub struct EventSocket {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

/// `host[:port]` or `[v6][:port]` with the port made explicit.
fn with_port(authority: &str, default: u16) -> String {
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default}")
    }
}

/// The URL of the event stream, as logged (no credentials in it).
pub fn events_url(config: &AriConfig) -> String {
    format!("{}/events?app={}", config.ws_base, config.app)
}

impl EventSocket {
    pub fn connect(config: &AriConfig) -> Result<EventSocket, ConnectError> {
        let url = events_url(config);
        let other = |what: &str, e: &dyn fmt::Display| ConnectError::Other(format!("{what} {url}: {e}"));
        let (authority, default_port) = match url.strip_prefix("wss://") {
            Some(rest) => (rest, 443),
            None => (url.trim_start_matches("ws://"), 80),
        };
        let authority = authority.split('/').next().unwrap_or_default();
        let addrs: Vec<SocketAddr> = with_port(authority, default_port).to_socket_addrs().map_err(|e| other("resolving", &e))?.collect();
        let stream = connect_any(&addrs, config.request_timeout).map_err(|e| ConnectError::Other(format!("connecting to {url}: {e}")))?;
        stream.set_nodelay(true).map_err(|e| other("configuring", &e))?;
        let keepalive =
            TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_PROBES);
        SockRef::from(&stream).set_tcp_keepalive(&keepalive).map_err(|e| other("configuring keepalive on", &e))?;
        // The handshake gets the whole request timeout; reads afterwards poll.
        stream.set_read_timeout(Some(config.request_timeout)).map_err(|e| other("configuring", &e))?;
        stream.set_write_timeout(Some(config.request_timeout)).map_err(|e| other("configuring", &e))?;

        let mut request = url.as_str().into_client_request().map_err(|e| other("building request for", &e))?;
        let auth = HeaderValue::from_str(&basic_auth(&config.username, config.password.expose()))
            .map_err(|_| ConnectError::Other("the ARI username or password contains characters not allowed in a header".into()))?;
        request.headers_mut().insert("Authorization", auth);

        let ws_config = WebSocketConfig { max_message_size: Some(MAX_FRAME), max_frame_size: Some(MAX_FRAME), ..Default::default() };
        let connector = config.tls.as_ref().map(|tls| Connector::Rustls(Arc::clone(tls)));
        let (ws, response) = match tungstenite::client_tls_with_config(request, stream, Some(ws_config), connector) {
            Ok(x) => x,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                let code = resp.status().as_u16();
                return Err(if code == 401 || code == 403 {
                    ConnectError::Unauthorized(code)
                } else {
                    ConnectError::Other(format!("upgrading {url}: HTTP {code}"))
                });
            }
            Err(e) => return Err(other("upgrading", &e)),
        };
        debug!("WebSocket {url} connected: HTTP {}", response.status());
        tcp(&ws).set_read_timeout(Some(READ_POLL)).map_err(|e| other("configuring", &e))?;
        Ok(EventSocket { ws })
    }

    /// Sends a ping (Asterisk answers with a pong, which `read` reports as `Frame::Control`).
    pub fn ping(&mut self) -> Result<(), String> {
        match self.ws.send(Message::Ping(Vec::new())) {
            Ok(()) => Ok(()),
            // The write timed out: the connection is stuck, which liveness will tell.
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(()),
            Err(e) => Err(format!("sending a ping: {e}")),
        }
    }

    /// Reads one frame. `Err` means the connection is over (closed, reset, protocol error).
    pub fn read(&mut self) -> Result<Frame, String> {
        match self.ws.read() {
            Ok(Message::Text(text)) => Ok(Frame::Text(text)),
            Ok(Message::Binary(b)) => Ok(Frame::Text(String::from_utf8_lossy(&b).into_owned())),
            Ok(Message::Close(frame)) => Err(format!("closed by Asterisk ({frame:?})")),
            Ok(_) => Ok(Frame::Control),
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Ok(Frame::Idle)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Connects to the first of `addrs` that answers, in order (`localhost` may resolve to `::1`
/// first while Asterisk listens on 127.0.0.1 only). Each try has `timeout`.
fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let mut errors = Vec::new();
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => {
                if !errors.is_empty() {
                    debug!("WebSocket: connected to {addr} after {}", errors.join("; "));
                }
                return Ok(stream);
            }
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(if errors.is_empty() { "no address".to_string() } else { errors.join("; ") })
}

/// The TCP stream under a plain or TLS WebSocket.
fn tcp(ws: &WebSocket<MaybeTlsStream<TcpStream>>) -> &TcpStream {
    match ws.get_ref() {
        MaybeTlsStream::Rustls(tls) => &tls.sock,
        MaybeTlsStream::Plain(s) => s,
        // No other TLS backend is compiled in; `MaybeTlsStream` is non-exhaustive.
        _ => unreachable!("unexpected stream type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_connection_is_pinged_then_declared_dead() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        assert!(!l.ping_due(t0 + Duration::from_secs(4)));
        assert!(l.ping_due(t0 + PING_EVERY));
        assert!(!l.ping_due(t0 + PING_EVERY + Duration::from_secs(1)), "pinged twice in one interval");
        assert_eq!(l.dead(t0 + SILENCE_LIMIT), None);
        let late = t0 + SILENCE_LIMIT + Duration::from_secs(1);
        assert_eq!(l.dead(late), Some(SILENCE_LIMIT + Duration::from_secs(1)));
        // Any frame (a pong) keeps it alive.
        l.heard(t0 + Duration::from_secs(9));
        assert_eq!(l.dead(late), None);
    }

    #[test]
    fn connecting_tries_every_address_in_order() {
        // A port nobody listens on first (refused at once), then a listener.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let stream = connect_any(&[closed, open], Duration::from_secs(2)).expect("the second address");
        assert_eq!(stream.peer_addr().unwrap(), open);
        let err = connect_any(&[closed], Duration::from_secs(2)).unwrap_err();
        assert!(err.contains(&closed.to_string()), "{err}");
    }
}
