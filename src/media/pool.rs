//! The UDP sockets of the configured port range, bound once at start-up, and the leases that hand
//! them to calls.
//!
//! Invariant: a socket in the pool has nothing queued, so a late packet of one call is never
//! echoed into the next.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

use parking_lot::Mutex;

/// How long an idle echo thread blocks in `recv` before looking at its state anyway (a wake-up
/// datagram normally makes this moot; see `Echo`).
pub(super) const ECHO_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Largest datagram read; RTP over UDP on a LAN stays far below.
pub(super) const MAX_DATAGRAM: usize = 2048;

struct PoolInner {
    free: Mutex<Vec<(u16, UdpSocket)>>,
    total: usize,
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
        (SocketPool { inner: Arc::new(PoolInner { free: Mutex::new(free), total }) }, failures)
    }

    /// Takes a socket, or `None` when every one is in use.
    pub fn lease(&self) -> Option<SocketLease> {
        let (port, socket) = self.inner.free.lock().pop()?;
        // Packets that arrived while the socket sat in the pool belong to nobody.
        drain(&socket);
        Some(SocketLease { port, socket: Some(socket), pool: Arc::clone(&self.inner) })
    }

    pub fn free(&self) -> usize {
        self.inner.free.lock().len()
    }

    pub fn total(&self) -> usize {
        self.inner.total
    }
}

fn bind_one(host: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddr::new(host, port))?;
    sock.set_read_timeout(Some(ECHO_POLL))?;
    Ok(sock)
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
        self.socket.as_ref().unwrap_or_else(|| unreachable!("socket taken before drop"))
    }
}

impl Drop for SocketLease {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
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
        assert_eq!(failures.iter().map(|f| f.port).collect::<Vec<_>>(), vec![27911]);
        assert_eq!(pool.total(), 2);
    }
}
