//! The echo: one OS thread per call, answering Asterisk's RTP on the call's leased socket.
//!
//! A packet costs what the kernel costs (`scripts/bench-echo.sh` measures it against a minimal
//! C echo): once Asterisk's address is known the socket is `connect()`ed to it, so the kernel
//! drops every other source and keeps the route; the thread blocks in `recv` with no timeout,
//! takes no lock per packet and keeps its counters itself, publishing them with plain stores.
//!
//! What the call changes — the peer, waking Asterisk, stop — goes into `Control::state` under its
//! lock with a new generation number, the one shared word the thread reads per packet. To get the
//! thread out of a blocking `recv`, the caller disconnects the socket (a connected socket would
//! not hear it) and the pool's waker sends it an empty datagram. Only the echo thread connects,
//! and only under that lock, so neither undoes the other unseen.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, warn};
use parking_lot::Mutex;

use super::pool::{disconnect, SocketLease, MAX_DATAGRAM};
use super::rtp::{looks_like_rtp, write_packet};
use super::{Session, Waking};
use crate::audio::Format;
use crate::metrics;

/// Stack of an echo thread. Its deepest path, a `debug!` line with an `io::Error`, runs in a
/// quarter of it in a debug build (`an_echo_thread_needs_a_quarter_of_its_stack`). The default
/// 2 MiB costs no memory until touched, but 500 calls reserve a gigabyte of address space.
const ECHO_STACK: usize = 64 * 1024;

/// How often the echo sends silence while it wakes Asterisk: the add waits at most this long.
const WAKE_EVERY: Duration = Duration::from_millis(1);

/// While it wakes Asterisk the socket does not block and the thread naps this long between reads.
/// A socket's read timeout cannot pace `WAKE_EVERY`: the kernel counts it in ticks (4 ms at
/// HZ=250), so the silence went every 4 ms and the media's add waited 6 ms (median) on 16.28.
const WAKE_NAP: Duration = Duration::from_micros(250);

/// Defines [`EchoCounts`] (a copy of the counters at one moment) and `EchoStats` (the counters
/// as the echo thread last published them: only that thread writes them, with plain stores of its
/// own counts; no read-modify-write, no lock) from one list of fields.
macro_rules! echo_counters {
    ($($(#[$doc:meta])* $field:ident,)+) => {
        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct EchoCounts {
            $($(#[$doc])* pub $field: u64,)+
        }

        #[derive(Debug, Default)]
        struct EchoStats {
            $($field: AtomicU64,)+
        }

        impl EchoStats {
            fn publish(&self, c: &EchoCounts) {
                $(self.$field.store(c.$field, Ordering::Relaxed);)+
            }

            fn snapshot(&self) -> EchoCounts {
                EchoCounts { $($field: self.$field.load(Ordering::Relaxed),)+ }
            }
        }
    };
}

echo_counters! {
    rx_packets,
    rx_bytes,
    tx_packets,
    tx_bytes,
    /// From an address other than the call's Asterisk media address, while the echo still read
    /// them (before its socket was connected to that address; after, the kernel drops them).
    dropped_foreign,
    /// From the right address, but not RTP.
    dropped_garbage,
}

/// Who the echo answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Not known yet: the first RTP packet from this host fixes it.
    LearnFrom(IpAddr),
    Fixed(SocketAddr),
}

/// What the call tells its echo thread.
#[derive(Debug, Clone, Copy)]
struct State {
    peer: Peer,
    /// The format of the silence to send while waking Asterisk's end (see [`Echo::wake_asterisk`]).
    wake: Option<Format>,
    stop: bool,
    /// The address the socket is connected to. Only the echo thread connects; anyone holding the
    /// lock may disconnect (and must then wake the thread).
    connected: Option<SocketAddr>,
}

/// Shared by the call's [`Echo`] handle, its [`Waking`] guards and the echo thread.
struct Control {
    state: Mutex<State>,
    hot: Hot,
}

/// What the echo thread touches per packet, in one cache line.
#[repr(C, align(64))]
struct Hot {
    /// Changed, under `state`'s lock, with every change of `state`: the thread reads only this
    /// per packet.
    generation: AtomicU64,
    stats: EchoStats,
}

impl Control {
    /// Applies `change` to the state; when it changed anything (it says so), a new generation
    /// tells the thread, and with `socket` given the socket is disconnected so that
    /// `Echo::interrupt_recv` reaches it. Returns whether anything changed.
    fn change(&self, socket: Option<&UdpSocket>, change: impl FnOnce(&mut State) -> bool) -> bool {
        let mut state = self.state.lock();
        if !change(&mut state) {
            return false;
        }
        self.hot.generation.fetch_add(1, Ordering::Release);
        if let (Some(socket), Some(_)) = (socket, state.connected) {
            state.connected = None;
            if let Err(e) = disconnect(socket) {
                debug!("echo: disconnect to wake the thread: {e}");
            }
        }
        true
    }
}

/// A running echo; dropping it stops the thread and returns the socket to the pool.
pub struct Echo {
    port: u16,
    control: Arc<Control>,
    /// Shared with the thread; the last of the two to let go returns the socket, and `drop`
    /// joins the thread first.
    lease: Arc<SocketLease>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Starts echoing on `lease`'s socket on a thread of its own. `asterisk_host` is where the
    /// call's RTP may come from until [`Echo::set_peer`] names the exact address.
    pub fn start(lease: SocketLease, asterisk_host: IpAddr, name: &str) -> io::Result<Echo> {
        Echo::spawn(lease, asterisk_host, name, ECHO_STACK)
    }

    fn spawn(
        lease: SocketLease,
        asterisk_host: IpAddr,
        name: &str,
        stack: usize,
    ) -> io::Result<Echo> {
        let port = lease.port();
        let control = Arc::new(Control {
            state: Mutex::new(State {
                peer: Peer::LearnFrom(asterisk_host),
                wake: None,
                stop: false,
                connected: None,
            }),
            hot: Hot {
                generation: AtomicU64::new(0),
                stats: EchoStats::default(),
            },
        });
        let lease = Arc::new(lease);
        let (thread_control, thread_lease) = (Arc::clone(&control), Arc::clone(&lease));
        let thread = std::thread::Builder::new()
            .name(thread_name(name))
            .stack_size(stack)
            .spawn(move || EchoThread::new(&thread_lease, &thread_control).run())?;
        Ok(Echo {
            port,
            control,
            lease,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Pins the one address the echo answers (Asterisk's end of this call's RTP); the socket is
    /// connected to it.
    pub fn set_peer(&self, peer: SocketAddr) {
        let changed = self.control.change(Some(self.lease.socket()), |s| {
            let changed = s.peer != Peer::Fixed(peer);
            s.peer = Peer::Fixed(peer);
            changed
        });
        // The same address learned already: the socket is connected to it and stays so.
        if changed {
            self.interrupt_recv();
        }
    }

    pub fn counts(&self) -> EchoCounts {
        self.control.hot.stats.snapshot()
    }

    /// Sends RTP silence in `format` to Asterisk's end of the media every [`WAKE_EVERY`] until the guard is
    /// dropped. Asterisk before 18.21 / 20.6 runs an ARI command queued on a channel only when
    /// the channel's Stasis loop wakes — on a frame from the channel, else after 200 ms — and
    /// the externalMedia channel has no frame before it is bridged: this gives it some while
    /// its `addChannel` waits. Needs the peer pinned (`set_peer`); without it nothing is sent.
    pub fn wake_asterisk(&self, format: Format) -> Waking {
        self.control.change(Some(self.lease.socket()), |s| {
            s.wake = Some(format);
            true
        });
        self.interrupt_recv();
        let control = Arc::clone(&self.control);
        // No need to interrupt at the end: while waking, the socket does not block and the
        // thread looks at its state every `WAKE_NAP`.
        Waking::until_dropped(move || {
            control.change(None, |s| s.wake.take().is_some());
        })
    }

    /// Gets the thread out of a blocking `recv` (the socket must not be connected to another
    /// address: see `Control::change`).
    fn interrupt_recv(&self) {
        self.lease.interrupt_recv();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.control.change(Some(self.lease.socket()), |s| {
            s.stop = true;
            true
        });
        // Wake the thread out of `recv` so the socket is back in the pool when drop returns.
        self.interrupt_recv();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!(
                    "echo thread for port {} panicked; its socket was still returned",
                    self.port
                );
            }
        }
        // `self.lease` is now the last reference: it returns the socket as the fields drop.
    }
}

impl Session for Echo {
    fn port(&self) -> u16 {
        self.port
    }

    fn set_peer(&self, peer: SocketAddr) {
        Echo::set_peer(self, peer);
    }

    fn wake_asterisk(&self, format: Format) -> Waking {
        Echo::wake_asterisk(self, format)
    }

    fn finish(self: Box<Self>) -> String {
        let counts = self.counts();
        drop(self);
        metrics::echo_session_ended(&metrics::EchoSession {
            received: counts.rx_packets,
            sent: counts.tx_packets,
            dropped: [counts.dropped_foreign, counts.dropped_garbage],
        });
        counts.to_string()
    }
}

/// The session's line: `rx 350 pkts/60200 B, tx 350 pkts/60200 B[, dropped …]`.
impl fmt::Display for EchoCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self;
        write!(
            f,
            "rx {} pkts/{} B, tx {} pkts/{} B",
            c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes
        )?;
        if c.dropped_foreign + c.dropped_garbage > 0 {
            write!(
                f,
                ", dropped {} from other addresses, {} not RTP",
                c.dropped_foreign, c.dropped_garbage
            )?;
        }
        Ok(())
    }
}

/// `echo-<call id>` with only printable ASCII kept: the call id comes from Asterisk, and a NUL in
/// a thread name makes the standard library panic.
fn thread_name(call: &str) -> String {
    let mut name = String::from("echo-");
    name.extend(call.chars().filter(|c| c.is_ascii_graphic()).take(32));
    name
}

/// What the echo thread knows, all of it its own between two changes of `Control`.
struct EchoThread<'a> {
    socket: &'a UdpSocket,
    port: u16,
    local_ip: Option<IpAddr>,
    control: &'a Control,
    /// The generation `state` was copied at.
    seen: u64,
    state: State,
    counts: EchoCounts,
    /// Whether the socket is non-blocking, for waking Asterisk (else it blocks for at most the
    /// pool's idle timeout, as the lease left it).
    waking: bool,
    last_wake: Option<Instant>,
    wake_seq: u16,
    wake_ssrc: u32,
}

impl<'a> EchoThread<'a> {
    fn new(lease: &'a SocketLease, control: &'a Control) -> EchoThread<'a> {
        let socket = lease.socket();
        EchoThread {
            socket,
            port: lease.port(),
            local_ip: socket.local_addr().ok().map(|a| a.ip()),
            control,
            seen: u64::MAX,
            state: *control.state.lock(),
            counts: EchoCounts::default(),
            waking: false,
            last_wake: None,
            wake_seq: 0,
            wake_ssrc: u32::from(lease.port()).wrapping_mul(0x9e37_79b9) | 1,
        }
    }

    fn run(mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        if !self.sync() {
            return;
        }
        loop {
            if let (Some(silence), Peer::Fixed(peer)) = (self.state.wake, self.state.peer) {
                self.send_silence(&mut buf, peer, silence);
            }
            let received = self.socket.recv_from(&mut buf);
            if self.control.hot.generation.load(Ordering::Acquire) != self.seen && !self.sync() {
                break;
            }
            let (n, src) = match received {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if self.waking {
                        std::thread::sleep(WAKE_NAP);
                    }
                    continue;
                }
                Err(e) => {
                    // ICMP port unreachable from a peer that went away shows up here on Linux.
                    debug!("echo on port {}: recv: {e}", self.port);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            self.on_datagram(&buf[..n], src);
        }
        // The lease goes back to the pool when `Echo::drop` lets go of it.
    }

    /// Takes the call's latest state: connects to a pinned peer, sets the read timeout. False
    /// when the echo is to stop.
    fn sync(&mut self) -> bool {
        let mut state = self.control.state.lock();
        self.seen = self.control.hot.generation.load(Ordering::Relaxed);
        if state.stop {
            return false;
        }
        if let (Peer::Fixed(peer), None) = (state.peer, state.connected) {
            self.connect(&mut state, peer);
        }
        let waking = state.wake.is_some();
        if waking != self.waking && self.socket.set_nonblocking(waking).is_ok() {
            self.waking = waking;
        }
        self.state = *state;
        true
    }

    /// Connects the socket to `peer` (under `state`'s lock); when that fails, the echo goes on
    /// filtering sources itself.
    fn connect(&self, state: &mut State, peer: SocketAddr) {
        match self.socket.connect(peer) {
            Ok(()) => state.connected = Some(peer),
            Err(e) => debug!("echo on port {}: connect to {peer}: {e}", self.port),
        }
    }

    fn on_datagram(&mut self, packet: &[u8], src: SocketAddr) {
        if packet.is_empty() && (Some(src.ip()) == self.local_ip || src.ip().is_loopback()) {
            // `Echo::interrupt_recv`: not traffic.
            return;
        }
        // Checked even when connected: what was queued before `connect` is still read.
        let accepted = match self.state.peer {
            Peer::Fixed(p) => src == p,
            Peer::LearnFrom(host) if src.ip() == host && looks_like_rtp(packet) => self.learn(src),
            Peer::LearnFrom(host) => src.ip() == host,
        };
        let c = &mut self.counts;
        if !accepted {
            c.dropped_foreign += 1;
        } else if !looks_like_rtp(packet) {
            c.dropped_garbage += 1;
        } else {
            c.rx_packets += 1;
            c.rx_bytes += packet.len() as u64;
            let sent = match self.state.connected {
                // A `send` fails when the call disconnected the socket meanwhile.
                Some(to) if to == src => self
                    .socket
                    .send(packet)
                    .or_else(|_| self.socket.send_to(packet, src)),
                _ => self.socket.send_to(packet, src),
            };
            match sent {
                Ok(n) => {
                    c.tx_packets += 1;
                    c.tx_bytes += n as u64;
                }
                Err(e) => debug!("echo on port {}: send to {src}: {e}", self.port),
            }
        }
        self.control.hot.stats.publish(&self.counts);
    }

    /// The first RTP packet from Asterisk's host names the peer, unless the call pinned one
    /// meanwhile; whether `src` is the peer now.
    fn learn(&mut self, src: SocketAddr) -> bool {
        let mut state = self.control.state.lock();
        if let Peer::LearnFrom(_) = state.peer {
            state.peer = Peer::Fixed(src);
            if state.connected.is_none() {
                self.connect(&mut state, src);
            }
        }
        // `seen` stays: a change of the call's made meanwhile is still taken at the next `sync`.
        self.state = *state;
        self.state.peer == Peer::Fixed(src)
    }

    /// One packet of silence to Asterisk's end, numbered after the last one, if `WAKE_EVERY` has
    /// passed since the last.
    fn send_silence(&mut self, buf: &mut [u8], peer: SocketAddr, format: Format) {
        let now = Instant::now();
        if self
            .last_wake
            .is_some_and(|t| now.duration_since(t) < WAKE_EVERY)
        {
            return;
        }
        self.last_wake = Some(now);
        let ts = u32::from(self.wake_seq).wrapping_mul(format.frame_samples());
        let n = write_packet(
            buf,
            format.payload_type(),
            self.wake_seq,
            ts,
            self.wake_ssrc,
            format.silence_byte(),
            format.frame_bytes(),
        );
        self.wake_seq = self.wake_seq.wrapping_add(1);
        let packet = &buf[..n];
        let _ = match self.state.connected {
            Some(to) if to == peer => self
                .socket
                .send(packet)
                .or_else(|_| self.socket.send_to(packet, peer)),
            _ => self.socket.send_to(packet, peer),
        };
    }
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
        asterisk
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 512];
        for seq in 0..5 {
            asterisk.send_to(&rtp(seq), (LOCAL, 27920)).unwrap();
            let (n, _) = asterisk.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &rtp(seq)[..]);
        }
        // The counter of the last send may trail its packet by a moment.
        wait_until("counters", || echo.counts().tx_packets == 5);
        let c = echo.counts();
        assert_eq!(
            (c.rx_packets, c.tx_packets, c.rx_bytes, c.tx_bytes),
            (5, 5, 5 * 172, 5 * 172)
        );
    }

    /// The address the echo's socket is connected to, if any.
    fn connected_to(echo: &Echo) -> Option<SocketAddr> {
        echo.lease.socket().peer_addr().ok()
    }

    #[test]
    fn echo_drops_packets_from_other_addresses_and_garbage() {
        let pool = pool(27930, 1);
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        let stranger = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stranger
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        echo.set_peer(asterisk.local_addr().unwrap());
        // From now on the kernel drops the stranger's packets: the echo never sees them.
        wait_until("connected", || {
            connected_to(&echo) == asterisk.local_addr().ok()
        });
        stranger.send_to(&rtp(1), (LOCAL, 27930)).unwrap();
        asterisk.send_to(b"not rtp at all", (LOCAL, 27930)).unwrap();
        asterisk.send_to(&rtp(2), (LOCAL, 27930)).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = asterisk.recv_from(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &rtp(2)[..],
            "only the RTP packet from Asterisk is echoed"
        );
        assert!(
            stranger.recv_from(&mut buf).is_err(),
            "the stranger got an answer"
        );
        wait_until("counters", || echo.counts().dropped_garbage == 1);
        assert_eq!(
            (echo.counts().tx_packets, echo.counts().dropped_foreign),
            (1, 0)
        );
    }

    #[test]
    fn before_its_peer_is_known_the_echo_drops_and_counts_other_hosts() {
        let pool = pool(27_935, 1);
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        let other_host = UdpSocket::bind(("127.0.0.2", 0)).unwrap();
        other_host
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        other_host.send_to(&rtp(1), (LOCAL, 27_935)).unwrap();
        let mut buf = [0u8; 512];
        assert!(
            other_host.recv_from(&mut buf).is_err(),
            "another host got an answer"
        );
        wait_until("drop count", || echo.counts().dropped_foreign == 1);
        assert_eq!(connected_to(&echo), None);
        asterisk.send_to(&rtp(2), (LOCAL, 27_935)).unwrap();
        assert_eq!(asterisk.recv_from(&mut buf).unwrap().0, 172);
    }

    #[test]
    fn echo_learns_its_peer_from_the_first_rtp_packet_of_the_asterisk_host() {
        let pool = pool(27940, 1);
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        let first = UdpSocket::bind((LOCAL, 0)).unwrap();
        let second = UdpSocket::bind((LOCAL, 0)).unwrap();
        first
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        second
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        first.send_to(&rtp(1), (LOCAL, 27940)).unwrap();
        let mut buf = [0u8; 512];
        first.recv_from(&mut buf).unwrap();
        // Connected before it answered: the second source is dropped by the kernel.
        assert_eq!(connected_to(&echo), first.local_addr().ok());
        second.send_to(&rtp(2), (LOCAL, 27940)).unwrap();
        assert!(
            second.recv_from(&mut buf).is_err(),
            "a second source on the same host was answered"
        );
        first.send_to(&rtp(3), (LOCAL, 27940)).unwrap();
        let n = first.recv_from(&mut buf).unwrap().0;
        assert_eq!(&buf[..n], &rtp(3)[..]);
        assert_eq!(echo.counts().dropped_foreign, 0);
    }

    #[test]
    fn a_peer_pinned_after_another_was_learned_takes_over() {
        let pool = pool(27_945, 1);
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        let learned = UdpSocket::bind((LOCAL, 0)).unwrap();
        let pinned = UdpSocket::bind((LOCAL, 0)).unwrap();
        learned
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        pinned
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 512];
        learned.send_to(&rtp(1), (LOCAL, 27_945)).unwrap();
        learned
            .recv_from(&mut buf)
            .expect("the first source is answered");
        echo.set_peer(pinned.local_addr().unwrap());
        learned.send_to(&rtp(2), (LOCAL, 27_945)).unwrap();
        pinned.send_to(&rtp(3), (LOCAL, 27_945)).unwrap();
        let n = pinned.recv_from(&mut buf).unwrap().0;
        assert_eq!(&buf[..n], &rtp(3)[..]);
        assert!(
            learned.recv_from(&mut buf).is_err(),
            "the learned address is still answered"
        );
        assert_eq!(connected_to(&echo), pinned.local_addr().ok());
    }

    #[test]
    fn waking_asterisk_sends_silence_to_the_pinned_peer_until_the_guard_drops() {
        let pool = pool(27_990, 1);
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "t").unwrap();
        echo.set_peer(asterisk.local_addr().unwrap());
        let waking = echo.wake_asterisk(Format::Alaw);
        let mut buf = [0u8; 512];
        let mut seqs = Vec::new();
        for _ in 0..3 {
            let (n, from) = asterisk.recv_from(&mut buf).expect("a wake-up packet");
            assert_eq!((n, from.port()), (172, 27_990));
            assert!(
                looks_like_rtp(&buf[..n]) && buf[1] == 8 && buf[12..n].iter().all(|b| *b == 0xd5)
            );
            seqs.push(u16::from_be_bytes([buf[2], buf[3]]));
        }
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{seqs:?}"
        );
        // It still echoes meanwhile (its socket does not block while it wakes Asterisk).
        let packet = rtp(7);
        asterisk.send_to(&packet, ("127.0.0.1", 27_990)).unwrap();
        let echoed = std::iter::from_fn(|| {
            asterisk
                .recv_from(&mut buf)
                .ok()
                .map(|(n, _)| buf[..n].to_vec())
        })
        .take(100);
        assert!(
            echoed.into_iter().any(|p| p == packet),
            "no echo while waking"
        );
        drop(waking);
        // Whatever was in flight arrives; then nothing more.
        std::thread::sleep(Duration::from_millis(20));
        asterisk.set_nonblocking(true).unwrap();
        while asterisk.recv_from(&mut buf).is_ok() {}
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            asterisk.recv_from(&mut buf).is_err(),
            "still waking after the guard dropped"
        );
        // And it echoes after (a blocking socket again).
        asterisk.set_nonblocking(false).unwrap();
        asterisk.send_to(&packet, ("127.0.0.1", 27_990)).unwrap();
        assert_eq!(
            asterisk
                .recv_from(&mut buf)
                .map(|(n, _)| buf[..n].to_vec())
                .ok(),
            Some(packet)
        );
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
    fn a_connected_echo_stops_quickly_and_its_socket_comes_back_unconnected() {
        let pool = pool(27_955, 1);
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        let next_asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        next_asterisk
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "first").unwrap();
        echo.set_peer(asterisk.local_addr().unwrap());
        wait_until("connected", || connected_to(&echo).is_some());
        let t = Instant::now();
        drop(echo);
        let took = t.elapsed();
        assert_eq!(pool.free(), 1, "socket is back as soon as drop returns");
        assert!(took < Duration::from_millis(250), "stopping took {took:?}");
        // The next call's echo learns its own Asterisk address.
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "second").unwrap();
        next_asterisk.send_to(&rtp(1), (LOCAL, 27_955)).unwrap();
        let mut buf = [0u8; 512];
        assert_eq!(next_asterisk.recv_from(&mut buf).unwrap().0, 172);
        assert_eq!(connected_to(&echo), next_asterisk.local_addr().ok());
    }

    #[test]
    fn an_echo_on_a_socket_bound_to_every_address_answers_and_stops() {
        let (pool, failures) =
            crate::media::SocketPool::bind(std::net::Ipv4Addr::UNSPECIFIED.into(), 27_965, 27_965);
        assert!(failures.is_empty(), "{failures:?}");
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "any").unwrap();
        echo.set_peer(asterisk.local_addr().unwrap());
        asterisk.send_to(&rtp(1), (LOCAL, 27_965)).unwrap();
        let mut buf = [0u8; 512];
        assert_eq!(asterisk.recv_from(&mut buf).unwrap().0, 172);
        let t = Instant::now();
        drop(echo);
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "stopping took {:?}",
            t.elapsed()
        );
        assert_eq!(pool.free(), 1);
    }

    /// Collects what the logger writes (see `an_echo_thread_needs_a_quarter_of_its_stack`).
    #[derive(Clone, Default)]
    struct LogBuffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for LogBuffer {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let mut b = self.0.lock();
            // Every test of this binary logs here from now on: keep it bounded.
            if b.len() < 1 << 20 {
                b.extend_from_slice(data);
            }
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_echo_thread_needs_a_quarter_of_its_stack() {
        // The deepest an echo thread goes is a `debug!` line formatting an `io::Error`, through
        // the logger `main` installs (at trace level here, for every test of this binary). On a
        // thread with a quarter of `ECHO_STACK`, in the debug build the tests run, the echo goes
        // through all its paths: an overflow would abort the test binary.
        let log = LogBuffer::default();
        let config = simplelog::ConfigBuilder::new()
            .set_time_format_rfc3339()
            .set_target_level(log::LevelFilter::Off)
            .set_thread_level(log::LevelFilter::Off)
            .set_location_level(log::LevelFilter::Off)
            .add_filter_allow_str("voicebot1")
            .build();
        simplelog::CombinedLogger::init(vec![simplelog::WriteLogger::new(
            log::LevelFilter::Trace,
            config,
            log.clone(),
        )])
        .expect("no other test installs a logger");
        let pool = pool(27_985, 1);
        let echo = Echo::spawn(pool.lease().unwrap(), LOCAL, "stack", ECHO_STACK / 4).unwrap();
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 512];
        asterisk
            .send_to(b"garbage from the asterisk host", (LOCAL, 27_985))
            .unwrap();
        asterisk.send_to(&rtp(1), (LOCAL, 27_985)).unwrap();
        asterisk.recv_from(&mut buf).expect("learned and echoed");
        let waking = echo.wake_asterisk(Format::Slin16);
        asterisk.recv_from(&mut buf).expect("silence");
        drop(waking);
        // An IPv6 peer for an IPv4 socket: the connect fails and is logged with its io::Error.
        echo.set_peer("[::1]:9".parse().unwrap());
        wait_until("the connect error in the log", || {
            String::from_utf8_lossy(&log.0.lock())
                .contains("echo on port 27985: connect to [::1]:9:")
        });
        drop(echo);
        assert_eq!(pool.free(), 1);
    }

    #[test]
    fn late_packets_of_a_finished_call_are_not_echoed_into_the_next() {
        let pool = pool(27960, 1);
        let asterisk = UdpSocket::bind((LOCAL, 0)).unwrap();
        asterisk
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        drop(Echo::start(pool.lease().unwrap(), LOCAL, "first").unwrap());
        // The first call's stream goes on for a moment after its end.
        for seq in 0..3 {
            asterisk.send_to(&rtp(seq), (LOCAL, 27960)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let echo = Echo::start(pool.lease().unwrap(), LOCAL, "second").unwrap();
        let mut buf = [0u8; 512];
        assert!(
            asterisk.recv_from(&mut buf).is_err(),
            "a late packet was echoed into the next call"
        );
        assert_eq!(echo.counts().rx_packets, 0);
    }
}
