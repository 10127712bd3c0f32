//! WebSocket client connections (`ws://`, `wss://`) over [`super::tcp`] and [`super::tls`]: the
//! host's every address tried, TCP keepalive, extra request headers (credentials go in a header,
//! never in the URL), a size limit on frames, and the whole of it — resolution aside — bounded by
//! one deadline.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, WebSocket};

use super::tcp;

/// A connected WebSocket, plain or TLS.
pub type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// What to connect to, and how.
pub struct Request<'a> {
    /// `ws://host[:port]/path` or `wss://…`.
    pub url: &'a str,
    /// Extra request headers (e.g. `Authorization`, `Sec-WebSocket-Protocol`).
    pub headers: &'a [(&'a str, &'a str)],
    /// The TLS settings for `wss://` (`None` refuses a `wss://` URL).
    pub tls: Option<&'a Arc<rustls::ClientConfig>>,
    /// Longest wait for one address to accept the TCP connection.
    pub per_attempt: Duration,
    /// The TCP connection, TLS and the HTTP upgrade are all done by then.
    pub deadline: Instant,
    /// Larger messages and frames are refused (the read fails).
    pub max_message: usize,
}

/// Why a connection could not be made, by stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The URL is not a usable `ws://` / `wss://` URL.
    Url(String),
    /// The host name did not resolve.
    Resolve(String),
    /// No address accepted a TCP connection.
    Connect(String),
    /// TCP was up, but TLS or the upgrade failed.
    Handshake(String),
    /// The deadline passed: while doing this (connecting, the handshake).
    TimedOut(String),
    /// The server answered the upgrade with this HTTP status.
    Status(u16),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Url(m) => write!(f, "bad URL: {m}"),
            ConnectError::Resolve(m) => write!(f, "resolving: {m}"),
            ConnectError::Connect(m) => write!(f, "connecting: {m}"),
            ConnectError::Handshake(m) => write!(f, "handshake: {m}"),
            ConnectError::TimedOut(m) => write!(f, "timed out {m}"),
            ConnectError::Status(code) => write!(f, "the upgrade was answered with HTTP {code}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Connects and upgrades. The socket is left blocking, with read and write timeouts of what was
/// left of the deadline; the caller sets its own.
pub fn connect(r: &Request) -> Result<Socket, ConnectError> {
    let (authority, default_port, secure) =
        match (r.url.strip_prefix("wss://"), r.url.strip_prefix("ws://")) {
            (Some(rest), _) => (rest, 443, true),
            (None, Some(rest)) => (rest, 80, false),
            _ => {
                return Err(ConnectError::Url(format!(
                    "{:?} is neither ws:// nor wss://",
                    r.url
                )))
            }
        };
    if secure && r.tls.is_none() {
        return Err(ConnectError::Url("wss:// without TLS settings".into()));
    }
    let authority = authority.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(ConnectError::Url(
            "no host, or credentials in the URL".into(),
        ));
    }
    let addrs: Vec<SocketAddr> = with_port(authority, default_port)
        .to_socket_addrs()
        .map_err(|e| ConnectError::Resolve(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::Resolve("no address".into()));
    }
    let left = |what: &str| {
        let left = r.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(ConnectError::TimedOut(format!("before {what}")))
        } else {
            Ok(left)
        }
    };
    let budget = left("connecting")?;
    let stream = tcp::connect_first(&addrs, r.per_attempt, budget).map_err(|m| {
        if Instant::now() >= r.deadline {
            ConnectError::TimedOut(format!("connecting: {m}"))
        } else {
            ConnectError::Connect(m)
        }
    })?;
    let configure = |e: io::Error| ConnectError::Connect(format!("configuring the socket: {e}"));
    stream.set_nodelay(true).map_err(configure)?;
    tcp::keep_alive(&stream).map_err(configure)?;
    let handshake_time = left("the handshake")?;
    stream
        .set_read_timeout(Some(handshake_time))
        .map_err(configure)?;
    stream
        .set_write_timeout(Some(handshake_time))
        .map_err(configure)?;

    let mut request = r
        .url
        .into_client_request()
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    for (name, value) in r.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConnectError::Url(format!("header name {name:?}")))?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            ConnectError::Url(format!(
                "the value of header {name} has characters a header cannot carry"
            ))
        })?;
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig {
        max_message_size: Some(r.max_message),
        max_frame_size: Some(r.max_message),
        ..Default::default()
    };
    let connector = if secure {
        r.tls.map(|tls| Connector::Rustls(Arc::clone(tls)))
    } else {
        Some(Connector::Plain)
    };
    match tungstenite::client_tls_with_config(request, stream, Some(config), connector) {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(ConnectError::Status(response.status().as_u16()))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Io(e))) if would_block(&e) => {
            Err(ConnectError::TimedOut("during the handshake".into()))
        }
        // A read or write that timed out at the deadline: tungstenite, made for non-blocking
        // sockets too, reports it as a handshake to be resumed.
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            Err(ConnectError::TimedOut("during the handshake".into()))
        }
        Err(e) => Err(ConnectError::Handshake(e.to_string())),
    }
}

/// `host[:port]` or `[v6][:port]` with the port made explicit.
pub fn with_port(authority: &str, default: u16) -> String {
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

/// A read or write found nothing to do now (timed out, or would block), which is not an error.
pub fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The TCP stream under a plain or TLS WebSocket.
pub fn tcp(ws: &Socket) -> &TcpStream {
    match ws.get_ref() {
        MaybeTlsStream::Rustls(tls) => &tls.sock,
        MaybeTlsStream::Plain(s) => s,
        // No other TLS back end is compiled in; `MaybeTlsStream` is non-exhaustive.
        _ => unreachable!("unexpected stream type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn request(url: &str) -> Request<'_> {
        Request {
            url,
            headers: &[("Authorization", "Bearer t")],
            tls: None,
            per_attempt: Duration::from_secs(2),
            deadline: Instant::now() + Duration::from_secs(2),
            max_message: 1 << 20,
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // tungstenite's callback type returns its ErrorResponse: not ours to shrink.
    fn a_connection_gets_tcp_keepalive_and_the_extra_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/voice", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut auth = None;
            let ws = tungstenite::accept_hdr(
                listener.accept().unwrap().0,
                |req: &tungstenite::handshake::server::Request, resp| {
                    auth = req
                        .headers()
                        .get("Authorization")
                        .map(|v| v.to_str().unwrap().to_string());
                    Ok(resp)
                },
            );
            (ws.map_err(|e| e.to_string()), auth)
        });
        let socket = connect(&request(&url)).expect("connects to a loopback WebSocket server");
        let (server_end, auth) = server.join().unwrap();
        let _server_end = server_end.expect("server handshake");
        assert_eq!(auth.as_deref(), Some("Bearer t"));
        let sock = socket2::SockRef::from(tcp(&socket));
        assert!(sock.keepalive().unwrap(), "keepalive is off");
        assert_eq!(sock.keepalive_time().unwrap(), tcp::KEEPALIVE_IDLE);
    }

    #[test]
    fn an_upgrade_answered_with_a_status_reports_the_status() {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
        });
        assert_eq!(
            connect(&request(&url)).err(),
            Some(ConnectError::Status(401))
        );
        server.join().unwrap();
    }

    #[test]
    fn a_server_that_never_answers_the_upgrade_times_out_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let mut r = request(&url);
        r.deadline = Instant::now() + Duration::from_millis(300);
        let t0 = Instant::now();
        let e = connect(&r).err();
        assert_eq!(
            e,
            Some(ConnectError::TimedOut("during the handshake".into()))
        );
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn urls_that_cannot_be_used_are_refused_before_any_connection() {
        assert!(matches!(
            connect(&request("http://127.0.0.1:1/")),
            Err(ConnectError::Url(_))
        ));
        assert!(matches!(
            connect(&request("wss://127.0.0.1:1/")),
            Err(ConnectError::Url(_))
        ));
        assert!(matches!(
            connect(&request("ws://user:pw@127.0.0.1:1/")),
            Err(ConnectError::Url(_))
        ));
    }

    #[test]
    fn with_port_adds_the_default_port_only_when_missing() {
        assert_eq!(with_port("h", 80), "h:80");
        assert_eq!(with_port("h:8088", 80), "h:8088");
        assert_eq!(with_port("[::1]", 443), "[::1]:443");
        assert_eq!(with_port("[::1]:8089", 443), "[::1]:8089");
    }
}
