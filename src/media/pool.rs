//! The UDP sockets of the configured port range, bound once at start-up, and the leases that hand
//! them to calls.
//!
//! Invariant: a socket in the pool is not connected to any address and has nothing queued, so the
//! next call starts from scratch whatever the last one did with it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::{SockAddr, SockRef};

/// How long an idle echo thread blocks in `recv` before looking at its state anyway, when the pool
/// has no waker socket to send it a wake-up datagram with (it has unless binding one failed).
const ECHO_POLL: Duration = Duration::from_millis(100);

/// How often [`SocketPool::waking`] pokes, and for how long at most.
const POKE_EVERY: Duration = Duration::from_millis(1);
const POKE_AT_MOST: Duration = Duration::from_secs(1);

/// What the pokes carry: a NAT keepalive. Asterisk's RTP stack reads a datagram this short that
/// holds only zero bytes and drops it without a warning (res_rtp_asterisk: "a keepalive
/// containing only nulls"); it is no RTP, so strict RTP never learns its source.
const KEEPALIVE: [u8; 4] = [0; 4];

/// Largest datagram read; RTP over UDP on a LAN stays far below.
pub(super) const MAX_DATAGRAM: usize = 2048;

struct PoolInner {
    free: Mutex<Vec<(u16, UdpSocket)>>,
    total: usize,
    /// Where the pool's sockets are reached from this host: the bound address, or loopback for
    /// 0.0.0.0 / ::.
    reach: IpAddr,
    /// Sends the empty datagrams that wake an echo thread out of `recv`: bound once, so that
    /// stopping a call never needs a descriptor that may be lacking then.
    waker: Option<UdpSocket>,
}

impl PoolInner {
    /// The read timeout of a socket in the pool, and of an echo with nothing to do: none, since a
    /// wake-up datagram always comes, unless there is no waker.
    fn idle_timeout(&self) -> Option<Duration> {
        self.waker.is_none().then_some(ECHO_POLL)
    }
}

/// The bound UDP sockets not in use by a call. Clones share one pool.
#[derive(Clone)]
pub struct SocketPool {
    inner: Arc<PoolInner>,
}

/// A port that could not be bound at start-up.
#[derive(Debug)]
pub struct BindFailure {
    pub port: u16,
    pub error: io::Error,
}

impl SocketPool {
    /// Binds every port in `min..=max` on `host`. Ports that fail (in use, permission) are
    /// returned so start-up can say which; the pool holds the rest.
    pub fn bind(host: IpAddr, min: u16, max: u16) -> (SocketPool, Vec<BindFailure>) {
        let mut free = Vec::new();
        let mut failures = Vec::new();
        for port in min..=max {
            match bind_one(host, port) {
                Ok(sock) => free.push((port, sock)),
                Err(error) => failures.push(BindFailure { port, error }),
            }
        }
        // Leases are taken from the end: keep the lowest ports there so allocation is predictable.
        free.reverse();
        let total = free.len();
        let reach = match host {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let waker = UdpSocket::bind(SocketAddr::new(reach, 0)).ok();
        let inner = PoolInner {
            free: Mutex::new(free),
            total,
            reach,
            waker,
        };
        for (_, sock) in inner.free.lock().iter() {
            let _ = sock.set_read_timeout(inner.idle_timeout());
        }
        (
            SocketPool {
                inner: Arc::new(inner),
            },
            failures,
        )
    }

    /// Takes a socket, or `None` when every one is in use.
    pub fn lease(&self) -> Option<SocketLease> {
        let (port, socket) = self.inner.free.lock().pop()?;
        // Packets that arrived while the socket sat in the pool belong to nobody.
        drain(&socket);
        Some(SocketLease {
            port,
            socket: Some(socket),
            pool: Arc::clone(&self.inner),
        })
    }

    /// Runs `f` while, on another thread, a keepalive datagram goes to `target`, if any, every
    /// 1 ms (for at most 1 s). For a channel of Asterisk before 18.21/20.6 whose queued ARI
    /// command waits for the channel to wake: a datagram on its RTP socket wakes it (see
    /// `Echo::wake_asterisk` for the bot's media channel, which gets RTP silence instead).
    pub fn waking<T>(&self, target: Option<SocketAddr>, f: impl FnOnce() -> T) -> T {
        let (Some(waker), Some(target)) = (&self.inner.waker, target) else {
            return f();
        };
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let poker = std::thread::Builder::new()
                .name("wake-caller".into())
                .stack_size(64 * 1024)
                .spawn_scoped(scope, || {
                    let until = Instant::now() + POKE_AT_MOST;
                    while !done.load(Ordering::Relaxed) && Instant::now() < until {
                        if let Err(e) = waker.send_to(&KEEPALIVE, target) {
                            log::debug!("cannot poke {target}: {e}");
                            return;
                        }
                        std::thread::sleep(POKE_EVERY);
                    }
                });
            let result = f();
            done.store(true, Ordering::Relaxed);
            if let Err(e) = poker {
                log::debug!("no thread to poke {target} with: {e}");
            }
            result
        })
    }

    pub fn free(&self) -> usize {
        self.inner.free.lock().len()
    }

    pub fn total(&self) -> usize {
        self.inner.total
    }
}

fn bind_one(host: IpAddr, port: u16) -> io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::new(host, port))
}

/// Reads and discards whatever is queued on `socket`.
fn drain(socket: &UdpSocket) {
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = [0u8; MAX_DATAGRAM];
    // Bounded: a flood must not keep a worker here.
    for _ in 0..10_000 {
        if socket.recv_from(&mut buf).is_err() {
            break;
        }
    }
    let _ = socket.set_nonblocking(false);
}

/// Dissolves `socket`'s association with a peer (`connect` to an `AF_UNSPEC` address): it takes
/// datagrams from any source again. The port stays bound. Harmless on a socket not connected.
pub(super) fn disconnect(socket: &UdpSocket) -> io::Result<()> {
    // SAFETY: `try_init` hands the closure a zeroed `sockaddr_storage` and keeps its full length;
    // every byte is initialised, and a family of 0 is `AF_UNSPEC`, all `connect` reads of it.
    let ((), unspecified) = unsafe { SockAddr::try_init(|_, _| Ok(())) }?;
    SockRef::from(socket).connect(&unspecified)
}

/// One socket taken from the pool; returns it on drop.
pub struct SocketLease {
    port: u16,
    socket: Option<UdpSocket>,
    pool: Arc<PoolInner>,
}

impl SocketLease {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn socket(&self) -> &UdpSocket {
        // Only `Drop` takes the socket out.
        self.socket
            .as_ref()
            .unwrap_or_else(|| unreachable!("socket taken before drop"))
    }

    /// Sends the socket an empty datagram from this host, so that a `recv` blocked on it returns.
    /// The socket must not be connected to another address (the kernel would drop it).
    pub(super) fn interrupt_recv(&self) {
        self.poker().poke();
    }

    /// What wakes the thread reading this socket, without holding the socket (so the lease can
    /// go back to the pool meanwhile: a poke then reaches whoever has the port, and is ignored).
    pub(super) fn poker(&self) -> Poker {
        Poker {
            pool: Arc::clone(&self.pool),
            port: self.port,
        }
    }
}

/// Sends an empty datagram to a port of the pool (see [`SocketLease::poker`]).
pub(super) struct Poker {
    pool: Arc<PoolInner>,
    port: u16,
}

impl Poker {
    pub(super) fn poke(&self) {
        let target = SocketAddr::new(self.pool.reach, self.port);
        let sent = match &self.pool.waker {
            Some(waker) => waker.send_to(&[], target),
            None => UdpSocket::bind(SocketAddr::new(self.pool.reach, 0))
                .and_then(|w| w.send_to(&[], target)),
        };
        if let Err(e) = sent {
            log::debug!("cannot wake the thread on port {}: {e}", self.port);
        }
    }
}

impl Drop for SocketLease {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            // Back to the pool's invariant: any source, the idle timeout, nothing queued.
            let _ = disconnect(&socket);
            let _ = socket.set_read_timeout(self.pool.idle_timeout());
            drain(&socket);
            self.pool.free.lock().push((self.port, socket));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testing::{pool, LOCAL};

    #[test]
    fn pool_hands_out_each_port_once_and_takes_it_back_on_drop() {
        let pool = pool(27900, 3);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        let c = pool.lease().unwrap();
        assert_eq!((a.port(), b.port(), c.port()), (27900, 27901, 27902));
        assert!(pool.lease().is_none());
        assert_eq!(pool.free(), 0);
        drop(b);
        assert_eq!(pool.free(), 1);
        assert_eq!(pool.lease().map(|l| l.port()), Some(27901));
        drop((a, c));
        assert_eq!(pool.free(), 3);
        assert_eq!(pool.total(), 3);
    }

    #[test]
    fn ports_in_use_are_reported_and_left_out() {
        let _taken = UdpSocket::bind((LOCAL, 27911)).unwrap();
        let (pool, failures) = SocketPool::bind(LOCAL, 27910, 27912);
        assert_eq!(
            failures.iter().map(|f| f.port).collect::<Vec<_>>(),
            vec![27911]
        );
        assert_eq!(pool.total(), 2);
    }

    #[test]
    fn a_socket_connected_by_its_call_goes_back_to_the_pool_unconnected() {
        let pool = pool(27970, 1);
        let peer = UdpSocket::bind((LOCAL, 0)).unwrap();
        let stranger = UdpSocket::bind((LOCAL, 0)).unwrap();
        let lease = pool.lease().unwrap();
        lease.socket().connect(peer.local_addr().unwrap()).unwrap();
        drop(lease);
        let lease = pool.lease().unwrap();
        assert_eq!(
            lease.socket().peer_addr().map_err(|e| e.kind()),
            Err(io::ErrorKind::NotConnected)
        );
        stranger.send_to(b"x", (LOCAL, 27970)).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = lease
            .socket()
            .recv_from(&mut buf)
            .expect("a datagram from a new source");
        assert_eq!((n, from), (1, stranger.local_addr().unwrap()));
    }

    #[test]
    fn disconnecting_a_socket_bound_to_every_address_keeps_its_port() {
        // Linux keeps the port of a socket bound to a port by number (a pool's are); one bound to
        // port 0 gives its ephemeral port up on disconnect.
        let port = 27_975;
        let sock = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).unwrap();
        let peer = UdpSocket::bind((LOCAL, 0)).unwrap();
        sock.connect(peer.local_addr().unwrap()).unwrap();
        disconnect(&sock).unwrap();
        disconnect(&sock).unwrap();
        assert_eq!(
            sock.local_addr().unwrap(),
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port))
        );
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let other = UdpSocket::bind((LOCAL, 0)).unwrap();
        other.send_to(b"y", (LOCAL, port)).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            sock.recv_from(&mut buf).unwrap().1,
            other.local_addr().unwrap()
        );
    }
}
