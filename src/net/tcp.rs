//! TCP connections (to Asterisk, to a bot): every resolved address is tried in order, and each
//! connection gets kernel keepalive probes.
//!
//! A host name may resolve to several addresses (`localhost` to `::1` first, then `127.0.0.1`)
//! while the server listens on only one of them (http.conf `bindaddr = 127.0.0.1`); stopping at the
//! first address would fail where REST, which tries them all, works.
//! Keepalive lets the kernel notice a peer that vanished without a FIN or RST (NAT or firewall
//! state lost, a paused VM, a pulled cable) on a connection that is otherwise idle.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};

/// Idle time before the kernel sends the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between unanswered probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the kernel ends the connection: a vanished peer surfaces as a
/// read or write error about 25 s after it went quiet.
pub const KEEPALIVE_PROBES: u32 = 3;

/// Turns keepalive on for `stream` ([`KEEPALIVE_IDLE`], [`KEEPALIVE_INTERVAL`],
/// [`KEEPALIVE_PROBES`]).
pub fn keep_alive(stream: &TcpStream) -> io::Result<()> {
    let params = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    SockRef::from(stream).set_tcp_keepalive(&params)
}

/// Connects to the first of `addrs` that accepts, in order. Each attempt may take up to
/// `per_attempt`, all of them together up to `budget` (so a long list of addresses that drop
/// packets cannot keep the caller for minutes; a refused address costs next to nothing).
///
/// The error is the last address's, followed by every address tried (and how many were left
/// untried when the budget ran out), e.g. `Connection refused (os error 111); tried [::1]:8088,
/// 127.0.0.1:8088`.
pub fn connect_first(
    addrs: &[SocketAddr],
    per_attempt: Duration,
    budget: Duration,
) -> Result<TcpStream, String> {
    let deadline = Instant::now() + budget;
    let mut tried = Vec::new();
    let mut last_error = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tried.push(addr.to_string());
        match TcpStream::connect_timeout(addr, per_attempt.min(left)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    let Some(last_error) = last_error else {
        return Err("no address to connect to".into());
    };
    let untried = addrs.len() - tried.len();
    let untried = if untried > 0 {
        format!(" ({untried} more not tried: out of time)")
    } else {
        String::new()
    };
    Err(format!("{last_error}; tried {}{untried}", tried.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, TcpListener};

    /// A port on which nothing listens right now (bound, then released).
    fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn connect_first_skips_an_ipv6_address_nothing_listens_on_and_uses_the_ipv4_one() {
        // What `localhost` → [::1, 127.0.0.1] looks like with Asterisk bound to 127.0.0.1 only.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let v4 = listener.local_addr().unwrap();
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), v4.port());
        let refused = TcpStream::connect_timeout(&v6, Duration::from_secs(2));
        assert!(refused.is_err(), "precondition: something listens on {v6}");
        let second = Duration::from_secs(2);
        let stream =
            connect_first(&[v6, v4], second, second * 2).expect("the IPv4 address accepts");
        assert_eq!(stream.peer_addr().unwrap(), v4);
    }

    #[test]
    fn connect_first_reports_the_last_error_and_every_address_tried() {
        let (a, b) = (closed_port(), closed_port());
        let second = Duration::from_secs(2);
        let err = connect_first(&[a, b], second, second * 2).unwrap_err();
        assert!(err.contains("refused"), "{err}");
        assert!(err.ends_with(&format!("tried {a}, {b}")), "{err}");
        assert_eq!(
            connect_first(&[], second, second).unwrap_err(),
            "no address to connect to"
        );
    }

    #[test]
    fn keep_alive_sets_idle_interval_and_probe_count() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        keep_alive(&stream).unwrap();
        let sock = SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(sock.keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(sock.keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }
}
