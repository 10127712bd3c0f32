//! The ARI event WebSocket: connecting (basic auth in a header, never in the URL, every address
//! of the host tried: `net::ws`), and reading text frames with a short read timeout so the reader
//! thread notices shutdown.
//!
//! Each read also keeps the connection's [`Liveness`]: a ping goes out after `[ari]
//! ping_interval_ms` without any frame from Asterisk, and when `pong_timeout_ms` pass after it
//! with nothing arriving the read reports the connection lost, so a peer that vanished without
//! closing is replaced instead of waited on for ever (Asterisk itself never pings).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use tungstenite::Message;

use super::rest::basic_auth;
use crate::config::AriConfig;
use crate::net::liveness::Liveness;
use crate::net::ws::{self, would_block};

/// How often a blocked read returns to let the reader look at its shutdown channel. Writes (pings)
/// are bounded by it too, so the reader never hangs on a peer that stopped reading.
const READ_POLL: Duration = Duration::from_millis(250);

/// Frames larger than this are refused (ARI events are a few kB).
const MAX_FRAME: usize = 1 << 20;

/// All the addresses of the host together may take this many request timeouts to connect:
/// enough for one address that drops packets and one that answers.
const CONNECT_BUDGET_TIMEOUTS: u32 = 2;

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
    /// Nothing arrived within the poll interval (or a control frame was handled).
    Idle,
}

/// A connected event stream.
pub struct EventSocket {
    ws: ws::Socket,
    liveness: Liveness,
}

/// The URL of the event stream, as logged (no credentials in it).
pub fn events_url(config: &AriConfig) -> String {
    format!("{}/events?app={}", config.ws_base, config.app)
}

impl EventSocket {
    /// `tls`: the settings for `wss://`, shared with the REST client ([`super::AriClient::tls`]).
    pub fn connect(
        config: &AriConfig,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<EventSocket, ConnectError> {
        let url = events_url(config);
        let auth = basic_auth(&config.username, config.password.expose());
        // The handshake gets the connection budget; reads afterwards poll.
        let request = ws::Request {
            url: &url,
            headers: &[("Authorization", &auth)],
            tls,
            per_attempt: config.request_timeout,
            deadline: Instant::now() + config.request_timeout * CONNECT_BUDGET_TIMEOUTS,
            max_message: MAX_FRAME,
        };
        let ws = match ws::connect(&request) {
            Ok(ws) => ws,
            Err(ws::ConnectError::Status(code @ (401 | 403))) => {
                return Err(ConnectError::Unauthorized(code))
            }
            // The password never reaches an error: it is in a header, and a header the
            // credentials cannot make is refused without echoing it.
            Err(ws::ConnectError::Url(m)) if m.starts_with("the value of header") => {
                return Err(ConnectError::Other(
                    "the ARI username or password contains characters not allowed in a header"
                        .into(),
                ))
            }
            Err(e) => return Err(ConnectError::Other(format!("{url}: {e}"))),
        };
        debug!("WebSocket {url} connected");
        let configure = |e: std::io::Error| ConnectError::Other(format!("configuring {url}: {e}"));
        ws::tcp(&ws)
            .set_read_timeout(Some(READ_POLL))
            .map_err(configure)?;
        ws::tcp(&ws)
            .set_write_timeout(Some(READ_POLL))
            .map_err(configure)?;
        let liveness = Liveness::new(Instant::now(), config.ping_interval, config.pong_timeout);
        Ok(EventSocket { ws, liveness })
    }

    /// Reads one frame, and pings Asterisk when it has been quiet. `Err` means the connection is
    /// over (closed, reset, protocol error, or a ping unanswered for `pong_timeout_ms`).
    pub fn read(&mut self) -> Result<Frame, String> {
        let read = self.ws.read();
        let now = Instant::now();
        if read.is_ok() {
            self.liveness.on_frame(now);
        }
        let frame = match read {
            Ok(Message::Text(text)) => Frame::Text(text),
            Ok(Message::Binary(b)) => Frame::Text(String::from_utf8_lossy(&b).into_owned()),
            Ok(Message::Close(frame)) => return Err(format!("closed by Asterisk ({frame:?})")),
            // Pongs, and pings (tungstenite queues the answer itself).
            Ok(_) => Frame::Idle,
            Err(tungstenite::Error::Io(e)) if would_block(&e) => Frame::Idle,
            Err(e) => return Err(e.to_string()),
        };
        if let Some(silence) = self.liveness.dead(now) {
            return Err(format!(
                "silent for {:.1} s, pings unanswered: dropped as dead",
                silence.as_secs_f64()
            ));
        }
        if self.liveness.due_ping(now) {
            self.ping(now)?;
        }
        Ok(frame)
    }

    fn ping(&mut self, now: Instant) -> Result<(), String> {
        match self.ws.send(Message::Ping(Vec::new())) {
            Ok(()) => log::trace!("WebSocket ping sent"),
            // The frame stays queued and goes out with the next write; the silence deadline
            // still applies.
            Err(tungstenite::Error::Io(e)) if would_block(&e) => {}
            Err(e) => return Err(format!("sending a ping: {e}")),
        }
        self.liveness.on_ping(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn ari_config(url: &str) -> AriConfig {
        let text = format!("[ari]\npassword = 'x'\nurl = '{url}'\n");
        crate::config::Config::parse(&text, "t", &crate::config::ProcessEnv)
            .expect("config parses")
            .ari
    }

    #[test]
    fn event_socket_turns_tcp_keepalive_on() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // The server side of the handshake; it returns its end so the connection stays open.
        let server = std::thread::spawn(move || {
            tungstenite::accept(listener.accept().unwrap().0).map_err(|e| e.to_string())
        });
        let socket = EventSocket::connect(&ari_config(&url), None)
            .expect("connects to a loopback WebSocket server");
        let _server_end = server.join().unwrap().expect("server handshake");
        let sock = socket2::SockRef::from(ws::tcp(&socket.ws));
        assert!(
            sock.keepalive().unwrap(),
            "keepalive is off on the event WebSocket"
        );
        assert_eq!(
            sock.keepalive_time().unwrap(),
            crate::net::tcp::KEEPALIVE_IDLE
        );
    }
}
