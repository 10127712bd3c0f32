//! The echo: one OS thread per call, answering Asterisk's RTP on the call's leased socket.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, warn};
use parking_lot::Mutex;

use super::pool::{SocketLease, ECHO_POLL, MAX_DATAGRAM};
use super::rtp::looks_like_rtp;

/// Counters of one echo, readable while it runs.
#[derive(Debug, Default)]
pub struct EchoStats {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// From an address other than the call's Asterisk media address.
    pub dropped_foreign: AtomicU64,
    /// From the right address, but not RTP.
    pub dropped_garbage: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoCounts {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub dropped_foreign: u64,
    pub dropped_garbage: u64,
}

impl EchoStats {
    pub fn snapshot(&self) -> EchoCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EchoCounts {
            rx_packets: g(&self.rx_packets),
            rx_bytes: g(&self.rx_bytes),
            tx_packets: g(&self.tx_packets),
            tx_bytes: g(&self.tx_bytes),
            dropped_foreign: g(&self.dropped_foreign),
            dropped_garbage: g(&self.dropped_garbage),
        }
    }
}

/// Who the echo answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Not known yet: the first RTP packet from this host fixes it.
    LearnFrom(IpAddr),
    Fixed(SocketAddr),
}

struct Shared {
    stop: AtomicBool,
    stats: EchoStats,
    peer: Mutex<Peer>,
    /// What to send while waking Asterisk's end (see [`Echo::wake_asterisk`]).
    wake: Mutex<Option<Silence>>,
}

/// A packet of silence in the call's format, for waking Asterisk's end of the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    pub payload_type: u8,
    pub fill: u8,
    pub len: usize,
}

/// How often the echo sends silence while it wakes Asterisk: the add waits at most this long.
const WAKE_EVERY: Duration = Duration::from_millis(2);

/// Stops waking Asterisk when dropped.
pub struct Waking {
    shared: Arc<Shared>,
}

impl Drop for Waking {
    fn drop(&mut self) {
        *self.shared.wake.lock() = None;
    }
}

/// A running echo; dropping it stops the thread and returns the socket to the pool.
pub struct Echo {
    port: u16,
    local: Option<SocketAddr>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Starts echoing on `lease`'s socket on a thread of its own. `asterisk_host` is where the
    /// call's RTP may come from until [`Echo::set_peer`] names the exact address.
    pub fn start(lease: SocketLease, asterisk_host: IpAddr, name: &str) -> io::Result<Echo> {
        let port = lease.port();
        let local = lease.socket().local_addr().ok();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stats: EchoStats::default(),
            peer: Mutex::new(Peer::LearnFrom(asterisk_host)),
            wake: Mutex::new(None),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(thread_name(name))
            .spawn(move || echo_loop(lease, &thread_shared))?;
        Ok(Echo { port, local, shared, thread: Some(thread) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Pins the one address the echo answers (Asterisk's end of this call's RTP).
    pub fn set_peer(&self, peer: SocketAddr) {
        *self.shared.peer.lock() = Peer::Fixed(peer);
    }

    pub fn counts(&self) -> EchoCounts {
        self.shared.stats.snapshot()
    }

    /// Sends `silence` to Asterisk's end of the media every [`WAKE_EVERY`] until the guard is
    /// dropped. Asterisk before 18.21 / 20.6 runs an ARI command queued on a channel only when
    /// the channel's Stasis loop wakes — on a frame from the channel, else after 200 ms — and
    /// the externalMedia channel has no frame before it is bridged: this gives it some while
    /// its `addChannel` waits. Needs the peer pinned (`set_peer`); without it nothing is sent.
    pub fn wake_asterisk(&self, silence: Silence) -> Waking {
        *self.shared.wake.lock() = Some(silence);
        self.interrupt_recv();
        Waking { shared: Arc::clone(&self.shared) }
    }

    /// An empty datagram from loopback to the socket: the thread's `recv` returns at once.
    fn interrupt_recv(&self) {
        if let Some(local) = self.local {
            // A socket bound to 0.0.0.0 / :: is reached on loopback.
            let target = match local.ip() {
                ip if !ip.is_unspecified() => local,
                std::net::IpAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, local.port())),
                std::net::IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port())),
            };
            if let Ok(waker) = UdpSocket::bind(SocketAddr::new(target.ip(), 0)) {
                let _ = waker.send_to(&[], target);
            }
        }
    }
}

/// Sends one silence packet to Asterisk's end, numbered after the last one.
fn send_silence(socket: &UdpSocket, peer: SocketAddr, silence: Silence, seq: &mut u16, ssrc: u32) {
    let mut packet = Vec::with_capacity(12 + silence.len);
    let ts = u32::from(*seq).wrapping_mul(silence.len as u32);
    packet.extend_from_slice(&[0x80, silence.payload_type & 0x7f]);
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&ts.to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.resize(12 + silence.len, silence.fill);
    *seq = seq.wrapping_add(1);
    let _ = socket.send_to(&packet, peer);
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the thread out of `recv` so the socket is back in the pool when drop returns.
        self.interrupt_recv();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("echo thread for port {} panicked; its socket was still returned", self.port);
            }
        }
    }
}

/// `echo-<call id>` with only printable ASCII kept: the call id comes from Asterisk, and a NUL in
/// a thread name makes the standard library panic.
fn thread_name(call: &str) -> String {
    let mut name = String::from("echo-");
    name.extend(call.chars().filter(|c| c.is_ascii_graphic()).take(32));
    name
}

fn echo_loop(lease: SocketLease, shared: &Shared) {
    let socket = lease.socket();
    let stats = &shared.stats;
    let mut buf = [0u8; MAX_DATAGRAM];
    let (mut waking, mut last_wake, mut wake_seq) = (false, std::time::Instant::now(), 0u16);
    let wake_ssrc = u32::from(lease.port()).wrapping_mul(0x9e37_79b9) | 1;
    while !shared.stop.load(Ordering::SeqCst) {
        let wake = *shared.wake.lock();
        if wake.is_some() != waking {
            waking = wake.is_some();
            let _ = socket.set_read_timeout(Some(if waking { WAKE_EVERY } else { ECHO_POLL }));
        }
        if let (Some(silence), Peer::Fixed(peer)) = (wake, *shared.peer.lock()) {
            if last_wake.elapsed() >= WAKE_EVERY {
                send_silence(socket, peer, silence, &mut wake_seq, wake_ssrc);
                last_wake = std::time::Instant::now();
            }
        }
        let (n, src) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => continue,
            Err(e) => {
                // ICMP port unreachable from a peer that went away shows up here on Linux.
                debug!("echo on port {}: recv: {e}", lease.port());
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if n == 0 && socket.local_addr().is_ok_and(|l| src.ip() == l.ip() || src.ip().is_loopback()) {
            // Our own `interrupt_recv`: not traffic.
            continue;
        }
        let packet = &buf[..n];
        let accepted = {
            let mut peer = shared.peer.lock();
            match *peer {
                Peer::Fixed(p) => src == p,
                Peer::LearnFrom(host) if src.ip() == host && looks_like_rtp(packet) => {
                    *peer = Peer::Fixed(src);
                    true
                }
                Peer::LearnFrom(host) => src.ip() == host,
            }
        };
        if !accepted {
            stats.dropped_foreign.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !looks_like_rtp(packet) {
            stats.dropped_garbage.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        stats.rx_packets.fetch_add(1, Ordering::Relaxed);
        stats.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
        match socket.send_to(packet, src) {
            Ok(sent) => {
                stats.tx_packets.fetch_add(1, Ordering::Relaxed);
                stats.tx_bytes.fetch_add(sent as u64, Ordering::Relaxed);
            }
            Err(e) => debug!("echo on port {}: send to {src}: {e}", lease.port()),
        }
    }
    // `lease` drops here: drained and back in the pool.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testing::{pool, rtp, wait_until, LOCAL};
    use std::time::Instant;

    #[test]
    fn echo_answers_asterisk_and_counts_both_ways() {
        let pool = pool(27920, 1);
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        for seq in 0..5 {
            asterisk.send_to(&rtp(seq), (LOCAL, 27920)).unwrap();
            let (n, _) = asterisk.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &rtp(seq)[..]);
        }
        // The counter of the last send may trail its packet by a moment.
        wait_until("counters", || echo.counts().tx_packets == 5);
        let c = echo.counts();
        assert_eq!((c.rx_packets, c.tx_packets, c.rx_bytes, c.tx_bytes), (5, 5, 5 * 172, 5 * 172));
    }

    #[test]
    fn echo_drops_packets_from_other_addresses_and_garbage() {
        let pool = pool(27930, 1);
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        let stranger = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        stranger.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        echo.set_peer(asterisk.local_addr().unwrap());
        stranger.send_to(&rtp(1), (LOCAL, 27930)).unwrap();
        asterisk.send_to(b"not rtp at all", (LOCAL, 27930)).unwrap();
        asterisk.send_to(&rtp(2), (LOCAL, 27930)).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = asterisk.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &rtp(2)[..], "only the RTP packet from Asterisk is echoed");
        assert!(stranger.recv_from(&mut buf).is_err(), "the stranger got an answer");
        wait_until("counters", || echo.counts().dropped_foreign == 1 && echo.counts().dropped_garbage == 1);
        assert_eq!(echo.counts().tx_packets, 1);
    }

    #[test]
    fn echo_learns_its_peer_from_the_first_rtp_packet_of_the_asterisk_host() {
        let pool = pool(27940, 1);
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        let first = UdpSocket::bind((LOCAL, 0)).unwrap();
        let second = UdpSocket::bind((LOCAL, 0)).unwrap();
        first.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        second.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        first.send_to(&rtp(1), (LOCAL, 27940)).unwrap();
        let mut buf = [0u8; 512];
        first.recv_from(&mut buf).unwrap();
        second.send_to(&rtp(2), (LOCAL, 27940)).unwrap();
        assert!(second.recv_from(&mut buf).is_err(), "a second source on the same host was answered");
        wait_until("drop count", || echo.counts().dropped_foreign == 1);
    }

    #[test]
    fn waking_asterisk_sends_silence_to_the_pinned_peer_until_the_guard_drops() {
        let pool = pool(27_990, 1);
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        echo.set_peer(asterisk.local_addr().unwrap());
        let waking = echo.wake_asterisk(Silence { payload_type: 8, fill: 0xd5, len: 160 });
        let mut buf = [0u8; 512];
        let mut seqs = Vec::new();
        for _ in 0..3 {
            let (n, from) = asterisk.recv_from(&mut buf).expect("a wake-up packet");
            assert_eq!((n, from.port()), (172, 27_990));
            assert!(looks_like_rtp(&buf[..n]) && buf[1] == 8 && buf[12..n].iter().all(|b| *b == 0xd5));
            seqs.push(u16::from_be_bytes([buf[2], buf[3]]));
        }
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "{seqs:?}");
        drop(waking);
        // Whatever was in flight arrives; then nothing more.
        std::thread::sleep(Duration::from_millis(20));
        asterisk.set_nonblocking(true).unwrap();
        while asterisk.recv_from(&mut buf).is_ok() {}
        std::thread::sleep(Duration::from_millis(30));
        assert!(asterisk.recv_from(&mut buf).is_err(), "still waking after the guard dropped");
        // Its own wake-up datagrams are not counted as foreign traffic.
        assert_eq!(echo.counts().dropped_foreign, 0);
    }

    #[test]
    fn a_call_id_with_odd_bytes_names_the_echo_thread_without_panicking() {
        let pool = pool(27_980, 1);
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "17\0.4\n\u{1F600}").unwrap();
        drop(echo);
        assert_eq!(pool.free(), 1);
        assert_eq!(thread_name("17\0.4\n"), "echo-17.4");
    }

    #[test]
    fn dropping_the_echo_stops_it_quickly_and_returns_the_socket() {
        let pool = pool(27950, 1);
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        assert_eq!(pool.free(), 0);
        let t = Instant::now();
        drop(echo);
        let took = t.elapsed();
        assert_eq!(pool.free(), 1, "socket is back as soon as drop returns");
        assert!(took < Duration::from_millis(250), "stopping took {took:?}");
    }

    #[test]
    fn late_packets_of_a_finished_call_are_not_echoed_into_the_next() {
        let pool = pool(27960, 1);
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        drop(Echo::start(pool.lease().unwrap(), LOCAL, "first").unwrap());
        // The first call's stream goes on for a moment after its end.
        for seq in 0..3 {
            asterisk.send_to(&rtp(seq), (LOCAL, 27960)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "second").unwrap();
        let mut buf = [0u8; 512];
        assert!(asterisk.recv_from(&mut buf).is_err(), "a late packet was echoed into the next call");
        assert_eq!(echo.counts().rx_packets, 0);
    }
}
