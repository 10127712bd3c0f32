//! The bot bridge: one call's RTP with Asterisk on one side, one WebSocket to a voice bot on the
//! other, in the bot's dialect (`bot::codec`), on one OS thread per call (plus a short-lived one
//! that connects, so that set-up and the caller's audio never wait on the bot).
//!
//! The session thread waits in `ppoll(2)` on the call's UDP socket and the bot's TCP socket, with
//! a timeout at the next thing due (the next 20 ms frame of bot audio, a ping, the connect
//! deadline). Per wake-up it reads every RTP packet queued (caller audio → the bot, at once),
//! every WebSocket message queued until a frame is due (bot audio → the playout queue; marks,
//! clears, requests), and plays the frames that are due, on absolute 20 ms deadlines. The
//! WebSocket is non-blocking: a bot that does not read makes voicebot1 drop (and count) caller
//! frames, never wait; a bot that floods fills a capped queue (`bot::playout`), never
//! voicebot1's memory, and never stops the clock.
//!
//! Wake-ups are the cost of a session (each is a context switch; `scripts/bench-bot.sh` counts
//! them), so a socket is read only when `ppoll` says it is ready, and while bot audio is playing
//! the bot's socket is not waited on at all but read at each 20 ms tick, before the tick's frame:
//! audio the bot sends then would only queue behind what is playing, and a clear still stops
//! the very next frame. That is two wake-ups per 20 ms (the caller's packet, the tick) instead
//! of three; what the bot asks besides audio waits at most one tick.
//!
//! The call changes the session (Asterisk's RTP address, waking Asterisk, the caller's keys,
//! stop) as the echo is changed: under a lock, with a generation number and a wake-up datagram
//! from the pool's waker socket. What the bot asks of the call (transfer, hang-up, its end or its
//! failure) goes back as a [`BotEvent`] through the `notify` the call gave: into the call's
//! mailbox, where it is one more input of its state machine.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use log::{debug, warn};
use parking_lot::Mutex;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use super::pool::{Poker, SocketLease, MAX_DATAGRAM};
use super::rtp::{self, looks_like_rtp, write_header};
use super::{Session, Waking};
use crate::audio::{Decimator, Format};
use crate::bot::playout::Playout;
use crate::bot::{self, Bad, Codec, Dialect, FromBot, Opening, Outgoing, ToBot};
use crate::metrics::{self, BotDropped, BotOutcome};
use crate::net::liveness::Liveness;
use crate::net::ws;

/// Stack of a session thread and of its connector.
const STACK: usize = 256 * 1024;
/// A bot message larger than this drops the bot (its session fails).
pub const MAX_MESSAGE: usize = 1 << 20;
/// What the WebSocket may hold of caller audio the bot has not read yet; beyond, caller frames
/// are dropped and counted (the bot is not reading).
const MAX_UNSENT: usize = 64 * 1024;
/// How long the end of a session waits for its last words (`stop`, the close frame) to leave.
const CLOSE_FLUSH: Duration = Duration::from_millis(20);
/// The packet time.
const PTIME: Duration = Duration::from_millis(20);
/// Playing that fell this far behind its clock (a stalled thread) starts a new clock instead of
/// sending a burst to catch up.
const LATE_RESYNC: Duration = Duration::from_millis(100);
/// Keys the caller may press faster than the session sends them; more are dropped.
const MAX_KEYS: usize = 32;
/// How often silence goes to Asterisk while it is woken (see `Echo::wake_asterisk`).
const WAKE_EVERY: Duration = Duration::from_millis(1);

/// What a bot bridge needs to know of its bot; built once per configured bot.
#[derive(Clone)]
pub struct BotSpec {
    /// The bot's name in the configuration (logs, metrics, chan_websocket's `connection_id`).
    pub name: String,
    pub url: String,
    pub dialect: Dialect,
    pub format: Format,
    pub json_control: bool,
    /// The `Authorization` header's value (`Bearer …`), if any.
    pub authorization: Option<String>,
    /// TLS settings for a `wss://` URL.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// The playout queue's cap, in 20 ms frames.
    pub max_queue_frames: usize,
    /// This bot's index in the metrics' bot labels.
    pub metrics: usize,
}

impl fmt::Debug for BotSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the authorization.
        f.debug_struct("BotSpec")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What a session tells its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BotEvent {
    /// The WebSocket is up and the opening messages are sent; how long connecting took.
    Connected(Duration),
    /// The bot asked for a transfer to this destination name (`None`: the default one).
    Transfer(Option<String>),
    /// The bot asked for the caller to be hung up (twilio's `hangup` extension).
    Hangup,
    /// The bot ended the session normally: closed the socket with 1000/1001, or chan_websocket's
    /// `HANGUP`.
    Done,
    Failed(Failure),
}

/// Why a bot session failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection: the name did not resolve, nothing accepted TCP, TLS failed, or the URL.
    Unreachable(String),
    /// The upgrade was answered with an HTTP status (401, 404, 5xx …).
    Refused(u16),
    /// Not connected within `connect_timeout_ms`.
    ConnectTimeout(Duration),
    /// Closed with a code other than normal or going away.
    ClosedAbnormally(String),
    /// The connection broke (reset, closed without a close frame, a protocol error).
    Lost(String),
    /// Pinged and silent past `pong_timeout_ms`.
    Silent(Duration),
    /// One message over [`MAX_MESSAGE`].
    TooBig,
}

impl Failure {
    /// The label of `voicebot1_bot_failures_total{reason}`.
    pub fn reason(&self) -> metrics::BotFailure {
        match self {
            Failure::Unreachable(_) => metrics::BotFailure::Unreachable,
            Failure::Refused(_) => metrics::BotFailure::Refused,
            Failure::ConnectTimeout(_) => metrics::BotFailure::ConnectTimeout,
            Failure::ClosedAbnormally(_) => metrics::BotFailure::ClosedAbnormally,
            Failure::Lost(_) => metrics::BotFailure::Lost,
            Failure::Silent(_) => metrics::BotFailure::Silent,
            Failure::TooBig => metrics::BotFailure::TooBig,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unreachable(m) => write!(f, "unreachable: {m}"),
            Failure::Refused(code) => write!(f, "refused the connection with HTTP {code}"),
            Failure::ConnectTimeout(t) => write!(f, "not connected within {} ms", t.as_millis()),
            Failure::ClosedAbnormally(m) => write!(f, "closed the connection abnormally ({m})"),
            Failure::Lost(m) => write!(f, "connection lost: {m}"),
            Failure::Silent(t) => {
                write!(f, "silent for {:.1} s, pings unanswered", t.as_secs_f64())
            }
            Failure::TooBig => write!(f, "sent a message over {} bytes", MAX_MESSAGE),
        }
    }
}

/// Where a session's events go: the call's mailbox.
pub type Notify = Box<dyn Fn(BotEvent) + Send>;

/// What the call changes in its session.
#[derive(Debug, Default)]
struct Commands {
    peer: Option<SocketAddr>,
    wake: Option<Format>,
    keys: VecDeque<char>,
    bridged: bool,
    stop: bool,
}

struct Control {
    commands: Mutex<Commands>,
    generation: AtomicU64,
}

impl Control {
    fn change(&self, f: impl FnOnce(&mut Commands)) {
        let mut c = self.commands.lock();
        f(&mut c);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// A running bot session; dropping it (or [`Session::finish`]) tells the bot the call left it,
/// stops the thread and returns the socket.
pub struct BotBridge {
    port: u16,
    control: Arc<Control>,
    lease: Arc<SocketLease>,
    thread: Option<JoinHandle<String>>,
}

impl BotBridge {
    /// Starts the session on `lease`'s socket and starts connecting to the bot at once.
    /// `asterisk_host` is where the call's RTP may come from until the peer is pinned.
    pub fn start(
        lease: SocketLease,
        asterisk_host: IpAddr,
        spec: Arc<BotSpec>,
        opening: Opening,
        notify: Notify,
    ) -> io::Result<BotBridge> {
        let port = lease.port();
        lease.socket().set_nonblocking(true)?;
        let control = Arc::new(Control {
            commands: Mutex::new(Commands::default()),
            generation: AtomicU64::new(0),
        });
        let connecting = Connecting::start(&spec, lease.poker(), &opening.call_id)?;
        let lease = Arc::new(lease);
        let (thread_control, thread_lease) = (Arc::clone(&control), Arc::clone(&lease));
        let name = thread_name(&opening.call_id);
        let thread = std::thread::Builder::new()
            .name(name)
            .stack_size(STACK)
            .spawn(move || {
                SessionThread::new(
                    &thread_lease,
                    &thread_control,
                    spec,
                    opening,
                    notify,
                    connecting,
                    asterisk_host,
                )
                .run()
            })?;
        Ok(BotBridge {
            port,
            control,
            lease,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) -> String {
        self.control.change(|c| c.stop = true);
        self.lease.interrupt_recv();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(line)) => line,
            Some(Err(_)) => {
                warn!(
                    "bot session on port {} panicked; its socket was still returned",
                    self.port
                );
                "session thread panicked".into()
            }
            None => String::new(),
        }
    }
}

impl Drop for BotBridge {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Session for BotBridge {
    fn port(&self) -> u16 {
        self.port
    }

    fn set_peer(&self, peer: SocketAddr) {
        self.control.change(|c| c.peer = Some(peer));
        self.lease.interrupt_recv();
    }

    fn wake_asterisk(&self, format: Format) -> Waking {
        self.control.change(|c| c.wake = Some(format));
        self.lease.interrupt_recv();
        let control = Arc::clone(&self.control);
        Waking::until_dropped(move || control.change(|c| c.wake = None))
    }

    fn dtmf(&self, digit: char) {
        self.control.change(|c| {
            if c.keys.len() < MAX_KEYS {
                c.keys.push_back(digit);
            }
        });
        self.lease.interrupt_recv();
    }

    fn caller_bridged(&self) {
        self.control.change(|c| c.bridged = true);
        self.lease.interrupt_recv();
    }

    fn finish(mut self: Box<Self>) -> String {
        self.stop()
    }
}

/// `bot-<call id>`, printable ASCII only (a NUL in a thread name panics the standard library).
fn thread_name(call: &str) -> String {
    let mut name = String::from("bot-");
    name.extend(call.chars().filter(|c| c.is_ascii_graphic()).take(32));
    name
}

/// The connector: a thread that makes the WebSocket connection (resolution, TCP, TLS, the
/// upgrade, all within `connect_timeout`) and hands it over, then pokes the session awake.
struct Connecting {
    since: Instant,
    deadline: Instant,
    result: Receiver<Result<ws::Socket, ws::ConnectError>>,
}

impl Connecting {
    fn start(spec: &Arc<BotSpec>, poker: Poker, call: &str) -> io::Result<Connecting> {
        let since = Instant::now();
        let deadline = since + spec.connect_timeout;
        let (tx, result) = crossbeam_channel::bounded(1);
        let spec = Arc::clone(spec);
        let name = format!(
            "bot-connect-{}",
            call.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(20)
                .collect::<String>()
        );
        std::thread::Builder::new()
            .name(name)
            .stack_size(STACK)
            .spawn(move || {
                let auth = spec.authorization.as_deref();
                let headers: Vec<(&str, &str)> =
                    auth.map(|a| ("Authorization", a)).into_iter().collect();
                let request = ws::Request {
                    url: &spec.url,
                    headers: &headers,
                    tls: spec.tls.as_ref(),
                    per_attempt: spec.connect_timeout,
                    deadline,
                    max_message: MAX_MESSAGE,
                };
                let connected = ws::connect(&request);
                // The session may have ended meanwhile: the socket is then dropped here, closed.
                if tx.send(connected).is_ok() {
                    poker.poke();
                }
            })?;
        Ok(Connecting {
            since,
            deadline,
            result,
        })
    }
}

/// Counts of one session, for its line and the metrics.
#[derive(Debug, Default)]
struct Counts {
    to_bot: u64,
    from_bot: u64,
    dropped: [u64; BotDropped::ALL.len()],
    bad: [u64; Bad::KINDS.len()],
    rtp_foreign: u64,
}

/// Where the session is with the bot.
enum Link {
    Connecting(Connecting),
    Up(Box<ws::Socket>),
    /// Failed, or closed by the bot: nothing more goes to it; the RTP is still read (and
    /// dropped) until the call stops the session.
    Gone,
}

/// What the session thread owns.
struct SessionThread<'a> {
    socket: &'a UdpSocket,
    control: &'a Control,
    spec: Arc<BotSpec>,
    opening: Opening,
    notify: Notify,
    link: Link,
    codec: Box<dyn Codec>,
    playout: Playout,
    liveness: Option<Liveness>,
    /// Caller frames read before the bot was connected, sent once it is.
    held: VecDeque<Vec<u8>>,
    /// Keys the caller pressed before the bot was connected, sent once it is.
    held_keys: VecDeque<char>,
    /// The caller is bridged with the media channel: the 20 ms clock may run. Before, the
    /// bot's audio is queued (Asterisk would drop it in a channel not yet bridged).
    bridged: bool,
    /// Caller audio short of a whole 20 ms frame.
    carry: Vec<u8>,
    /// slin16: the payload type of Asterisk's audio, once learned.
    audio_type: Option<u8>,
    /// slin16: the bot's 16 kHz audio goes back at 8 kHz.
    decimator: Option<Decimator>,
    max_held: usize,
    /// The generation of `Control` last taken.
    seen: u64,
    peer: Option<SocketAddr>,
    learn_from: IpAddr,
    local_ip: Option<IpAddr>,
    wake: Option<Format>,
    last_wake: Option<Instant>,
    /// The WebSocket holds output it could not write yet.
    unflushed: bool,
    /// `read_bot` stopped before it had read all the bot sent.
    unread: bool,
    /// Bytes handed to the WebSocket since it last flushed all (caller audio held back by a
    /// bot that does not read).
    unsent: usize,
    rtp: RtpOut,
    /// The next 20 ms frame is due then; `None` while nothing is queued.
    next_tick: Option<Instant>,
    counts: Counts,
    /// What ended the session, for its line and metrics.
    outcome: Option<BotOutcome>,
    failure: Option<Failure>,
    closed_by_bot: bool,
    /// Bad message kinds already logged (once per kind per call).
    logged: [bool; Bad::KINDS.len()],
    /// The queue length this session last added to the metrics' gauge.
    queue_reported: usize,
    scratch: Vec<u8>,
}

/// The RTP stream voicebot1 plays to Asterisk: one SSRC, sequence numbers and timestamps that
/// follow the 20 ms clock, the marker bit on the first packet of each talk spurt.
///
/// G.711 goes back as it came. slin16 goes back as 8 kHz linear, payload type 11: Asterisk reads
/// an unnegotiated dynamic type (its slin16 is 118) only from its static table, which ends at 34,
/// so it would drop slin16 (see `audio::Decimator`).
struct RtpOut {
    ssrc: u32,
    seq: u16,
    /// Timestamps count from this instant.
    epoch: Instant,
    ts0: u32,
    payload_type: u8,
    /// RTP timestamp units per 20 ms frame.
    frame_samples: u32,
    spurt: bool,
}

/// Asterisk's static payload type of 8 kHz signed linear (rtp_engine.c `add_static_payload`).
const SLIN_8K_PAYLOAD_TYPE: u8 = 11;

impl RtpOut {
    fn new(format: Format, seed: u64) -> RtpOut {
        let (payload_type, frame_samples) = match format {
            Format::Slin16 => (SLIN_8K_PAYLOAD_TYPE, Format::Ulaw.frame_samples()),
            f => (f.payload_type(), f.frame_samples()),
        };
        RtpOut {
            ssrc: (seed as u32) | 1,
            seq: (seed >> 32) as u16,
            epoch: Instant::now(),
            ts0: (seed >> 16) as u32,
            payload_type,
            frame_samples,
            spurt: true,
        }
    }

    /// The header of the frame due at `at`, written into `out[..12]`.
    fn header(&mut self, out: &mut [u8], at: Instant) {
        let frames = at.saturating_duration_since(self.epoch).as_nanos() / PTIME.as_nanos();
        let ts = self
            .ts0
            .wrapping_add((frames as u32).wrapping_mul(self.frame_samples));
        write_header(out, self.payload_type, self.spurt, self.seq, ts, self.ssrc);
        self.seq = self.seq.wrapping_add(1);
        self.spurt = false;
    }
}

impl<'a> SessionThread<'a> {
    fn new(
        lease: &'a SocketLease,
        control: &'a Control,
        spec: Arc<BotSpec>,
        opening: Opening,
        notify: Notify,
        connecting: Connecting,
        asterisk_host: IpAddr,
    ) -> SessionThread<'a> {
        let socket = lease.socket();
        let codec = bot::codec(spec.dialect, spec.format, spec.json_control);
        let playout = Playout::for_dialect(spec.dialect, spec.format, spec.max_queue_frames);
        let max_held = (spec.connect_timeout.as_millis() / PTIME.as_millis()).max(1) as usize;
        let decimator = (spec.format == Format::Slin16).then(Decimator::new);
        let seed = u64::from(lease.port()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ connecting.since.elapsed().as_nanos() as u64;
        SessionThread {
            socket,
            control,
            rtp: RtpOut::new(spec.format, seed ^ std_seed()),
            spec,
            opening,
            notify,
            link: Link::Connecting(connecting),
            codec,
            playout,
            liveness: None,
            held: VecDeque::new(),
            held_keys: VecDeque::new(),
            bridged: false,
            carry: Vec::new(),
            audio_type: None,
            decimator,
            max_held,
            seen: u64::MAX,
            peer: None,
            learn_from: asterisk_host,
            local_ip: socket.local_addr().ok().map(|a| a.ip()),
            wake: None,
            last_wake: None,
            unflushed: false,
            unread: false,
            unsent: 0,
            next_tick: None,
            counts: Counts::default(),
            outcome: None,
            failure: None,
            closed_by_bot: false,
            logged: [false; Bad::KINDS.len()],
            queue_reported: 0,
            scratch: vec![0u8; MAX_DATAGRAM],
        }
    }

    fn run(mut self) -> String {
        // The first turn reads both sockets; then what `ppoll` found ready.
        let mut ready = Ready::BOTH;
        loop {
            if self.control.generation.load(Ordering::Acquire) != self.seen && !self.sync() {
                break;
            }
            if ready.udp {
                self.read_rtp();
            }
            self.check_connect();
            if ready.tcp || self.next_tick.is_some_and(|t| t <= Instant::now()) {
                self.read_bot();
            }
            self.play_due();
            self.keep_alive();
            self.send_wake_silence();
            self.flush();
            ready = self.wait();
        }
        self.close();
        let c = &self.counts;
        metrics::bot_session_ended(
            self.spec.metrics,
            self.outcome.unwrap_or(BotOutcome::CallLeft),
            c.to_bot,
            c.from_bot,
            &c.dropped,
        );
        metrics::bot_queue_changed(self.spec.metrics, -(self.queue_reported as i64));
        self.line()
    }

    /// Takes the call's latest commands; false when the session is to stop.
    fn sync(&mut self) -> bool {
        let (stop, keys, bridged) = {
            let mut c = self.control.commands.lock();
            self.seen = self.control.generation.load(Ordering::Relaxed);
            if let Some(peer) = c.peer {
                self.peer = Some(peer);
            }
            self.wake = c.wake;
            (c.stop, std::mem::take(&mut c.keys), c.bridged)
        };
        for key in keys {
            if matches!(self.link, Link::Connecting(_)) {
                if self.held_keys.len() < MAX_KEYS {
                    self.held_keys.push_back(key);
                }
            } else {
                self.send(ToBot::Dtmf(key));
            }
        }
        if bridged && !self.bridged {
            // What the bot queued meanwhile (its greeting) starts now.
            self.bridged = true;
            self.schedule_tick();
        }
        !stop
    }

    /// Reads every packet queued on the UDP socket: caller audio goes to the bot (or is held
    /// while connecting); waker datagrams and strangers are dropped.
    fn read_rtp(&mut self) {
        loop {
            let (n, src) = match self.socket.recv_from(&mut self.scratch) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP port unreachable from a peer that went away shows up here on Linux.
                    debug!("bot session on port {}: recv: {e}", self.port());
                    return;
                }
            };
            if n == 0 && (Some(src.ip()) == self.local_ip || src.ip().is_loopback()) {
                continue; // a wake-up
            }
            let accepted = match self.peer {
                Some(p) => src == p,
                None if src.ip() == self.learn_from && looks_like_rtp(&self.scratch[..n]) => {
                    self.peer = Some(src);
                    true
                }
                None => false,
            };
            let packet = &self.scratch[..n];
            if !accepted || !looks_like_rtp(packet) {
                self.counts.rtp_foreign += 1;
                continue;
            }
            let Some(payload) = rtp::payload(packet) else {
                continue;
            };
            let (start, len) = (
                payload.as_ptr() as usize - packet.as_ptr() as usize,
                payload.len(),
            );
            let payload_type = packet[1] & 0x7f;
            if !self.is_audio(payload_type, len) {
                continue;
            }
            // Asterisk sends what the caller's side framed (20 ms, 30 ms …): the bot gets 20 ms
            // frames, as Twilio sends them; a remainder waits for the next packet.
            let frame = self.spec.format.frame_bytes();
            if self.carry.is_empty() && len == frame {
                let whole = self.scratch[start..start + len].to_vec();
                self.caller_frame(whole);
                continue;
            }
            self.carry
                .extend_from_slice(&self.scratch[start..start + len]);
            while self.carry.len() >= frame {
                let rest = self.carry.split_off(frame);
                let whole = std::mem::replace(&mut self.carry, rest);
                self.caller_frame(whole);
            }
        }
    }

    /// Whether a packet from Asterisk is the call's audio: G.711 has its static payload type;
    /// slin16 a dynamic one, learned from the first packet that can be audio. RFC 2833 key
    /// events and comfort noise are not (keys reach the bot from ARI's DTMF events).
    fn is_audio(&mut self, payload_type: u8, len: usize) -> bool {
        let format = self.spec.format;
        if format != Format::Slin16 {
            return payload_type == format.payload_type() && len > 0;
        }
        let fits = payload_type >= 96 && len >= 32 && len.is_multiple_of(2);
        fits && *self.audio_type.get_or_insert(payload_type) == payload_type
    }

    fn caller_frame(&mut self, payload: Vec<u8>) {
        match self.link {
            Link::Up(_) => self.send_caller_audio(&payload),
            Link::Connecting(_) => {
                if self.held.len() == self.max_held {
                    self.held.pop_front();
                    self.drop_frames(BotDropped::HeldTooLong, 1);
                }
                self.held.push_back(payload);
            }
            Link::Gone => {}
        }
    }

    fn send_caller_audio(&mut self, payload: &[u8]) {
        if self.unsent > MAX_UNSENT {
            self.drop_frames(BotDropped::BotNotReading, 1);
            return;
        }
        if self.send(ToBot::CallerAudio(payload)) {
            self.counts.to_bot += 1;
        }
    }

    fn drop_frames(&mut self, why: BotDropped, n: u64) {
        self.counts.dropped[why as usize] += n;
    }

    /// Encodes `m` and writes it; true when it was handed to the WebSocket.
    fn send(&mut self, m: ToBot) -> bool {
        let Link::Up(socket) = &mut self.link else {
            return false;
        };
        let Some(out) = self.codec.encode(m) else {
            return false;
        };
        let message = match out {
            Outgoing::Text(t) => {
                self.unsent += t.len();
                Message::Text(t)
            }
            Outgoing::Binary(b) => {
                self.unsent += b.len();
                Message::Binary(b)
            }
        };
        match socket.write(message) {
            Ok(()) => {
                self.unflushed = true;
                true
            }
            Err(tungstenite::Error::Io(e)) if ws::would_block(&e) => {
                self.unflushed = true;
                true
            }
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                self.drop_frames(BotDropped::BotNotReading, 1);
                false
            }
            Err(e) => {
                self.fail(Failure::Lost(e.to_string()));
                false
            }
        }
    }

    /// Pushes what the WebSocket holds towards the bot.
    fn flush(&mut self) {
        if !self.unflushed {
            return;
        }
        let Link::Up(socket) = &mut self.link else {
            return;
        };
        match socket.flush() {
            Ok(()) => {
                self.unflushed = false;
                self.unsent = 0;
            }
            Err(tungstenite::Error::Io(e)) if ws::would_block(&e) => {}
            Err(e) => self.fail(Failure::Lost(e.to_string())),
        }
    }

    /// Takes the connector's result once it is there, or gives up at the deadline.
    fn check_connect(&mut self) {
        let Link::Connecting(connecting) = &self.link else {
            return;
        };
        let result = match connecting.result.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) if Instant::now() < connecting.deadline => return,
            Err(_) => {
                let waited = connecting.since.elapsed();
                return self.fail(Failure::ConnectTimeout(waited));
            }
        };
        let took = connecting.since.elapsed();
        let socket = match result {
            Ok(s) => s,
            Err(ws::ConnectError::Status(code)) => return self.fail(Failure::Refused(code)),
            Err(ws::ConnectError::TimedOut(_)) => return self.fail(Failure::ConnectTimeout(took)),
            Err(e) => return self.fail(Failure::Unreachable(e.to_string())),
        };
        if let Err(e) = ws::tcp(&socket).set_nonblocking(true) {
            return self.fail(Failure::Lost(format!("configuring the socket: {e}")));
        }
        self.link = Link::Up(Box::new(socket));
        self.liveness = Some(Liveness::new(
            Instant::now(),
            self.spec.ping_interval,
            self.spec.pong_timeout,
        ));
        metrics::bot_connected(self.spec.metrics, took);
        for out in self.codec.opening(&self.opening) {
            self.write_raw(out);
        }
        let held = std::mem::take(&mut self.held);
        for frame in held {
            self.send_caller_audio(&frame);
        }
        for key in std::mem::take(&mut self.held_keys) {
            self.send(ToBot::Dtmf(key));
        }
        (self.notify)(BotEvent::Connected(took));
    }

    fn write_raw(&mut self, out: Outgoing) {
        let Link::Up(socket) = &mut self.link else {
            return;
        };
        let message = match out {
            Outgoing::Text(t) => Message::Text(t),
            Outgoing::Binary(b) => Message::Binary(b),
        };
        match socket.write(message) {
            Ok(()) => self.unflushed = true,
            Err(tungstenite::Error::Io(e)) if ws::would_block(&e) => self.unflushed = true,
            Err(e) => self.fail(Failure::Lost(e.to_string())),
        }
    }

    /// Reads every message the bot has sent, but stops when a frame is due or after `PTIME`: a
    /// bot that sends faster than it is read must hold up neither the 20 ms clock nor the call's
    /// commands. The rest is read at the next turn, which then does not sleep (`poll` cannot see
    /// what tungstenite has already buffered).
    fn read_bot(&mut self) {
        self.unread = false;
        let began = Instant::now();
        let mut read_one = false;
        loop {
            if std::mem::replace(&mut read_one, true) {
                let now = Instant::now();
                if now >= began + PTIME || self.next_tick.is_some_and(|t| t <= now) {
                    self.unread = true;
                    return;
                }
            }
            let Link::Up(socket) = &mut self.link else {
                return;
            };
            let message = match socket.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if ws::would_block(&e) => return,
                // A pong answered (tungstenite queued it) but could not go yet.
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {
                    continue
                }
                Err(tungstenite::Error::Capacity(_)) => return self.fail(Failure::TooBig),
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return self.bot_closed(None)
                }
                Err(e) => return self.fail(Failure::Lost(e.to_string())),
            };
            if let Some(l) = self.liveness.as_mut() {
                l.on_frame(Instant::now());
            }
            let decoded = match message {
                Message::Text(text) => self.codec.decode_text(&text),
                Message::Binary(data) => self.codec.decode_binary(&data),
                Message::Close(frame) => return self.bot_closed(frame),
                Message::Ping(_) => {
                    // tungstenite queued the pong; it leaves with the next flush.
                    self.unflushed = true;
                    continue;
                }
                Message::Pong(_) | Message::Frame(_) => continue,
            };
            match decoded {
                Ok(said) => self.on_bot(said),
                Err(bad) => self.bad(bad),
            }
        }
    }

    fn bad(&mut self, bad: Bad) {
        let Some(kind) = Bad::KINDS.iter().position(|k| *k == bad.kind()) else {
            return;
        };
        self.counts.bad[kind] += 1;
        metrics::bot_bad_message(self.spec.metrics, kind);
        if !std::mem::replace(&mut self.logged[kind], true) {
            warn!(
                "call {}: bot {}: skipping a message: {bad} (logged once per kind)",
                self.opening.call_id, self.spec.name
            );
        }
    }

    fn on_bot(&mut self, said: FromBot) {
        match said {
            FromBot::Audio(audio) => {
                self.counts.from_bot +=
                    (audio.len() / self.spec.format.frame_bytes().max(1)) as u64;
                let pushed = self.playout.push_audio(&audio);
                let frame = self.spec.format.frame_bytes();
                if pushed.dropped_bytes > 0 {
                    self.drop_frames(
                        BotDropped::QueueFull,
                        pushed.dropped_bytes.div_ceil(frame) as u64,
                    );
                }
                if pushed.trimmed_bytes > 0 {
                    self.drop_frames(BotDropped::PartialFrame, 1);
                }
                if pushed.xoff {
                    self.send(ToBot::Xoff);
                }
                self.report_queue();
                self.schedule_tick();
            }
            FromBot::Mark(name) => {
                self.playout.push_mark(name);
                self.schedule_tick();
            }
            FromBot::Clear => {
                for name in self.playout.clear() {
                    self.send(ToBot::MarkCleared(&name));
                }
                self.schedule_tick();
            }
            FromBot::Transfer(to) => (self.notify)(BotEvent::Transfer(to)),
            FromBot::Hangup => {
                // chan_websocket's HANGUP ends the bot's part, as closing the socket does; the
                // twilio extension asks for the caller to be hung up.
                match self.spec.dialect {
                    Dialect::Asterisk => {
                        self.outcome.get_or_insert(BotOutcome::BotEnded);
                        (self.notify)(BotEvent::Done);
                    }
                    Dialect::Twilio => (self.notify)(BotEvent::Hangup),
                }
            }
            FromBot::Answer => {}
            FromBot::StartBuffering => self.playout.start_buffering(),
            FromBot::StopBuffering(id) => {
                self.playout.stop_buffering(id);
                self.schedule_tick();
            }
            FromBot::ReportQueueDrained => {
                self.playout.report_drained();
                self.schedule_tick();
            }
            FromBot::GetStatus => {
                let status = self.playout.status();
                self.send(ToBot::Status(status));
            }
            FromBot::Pause => self.playout.pause(),
            FromBot::Continue => {
                self.playout.resume();
                self.schedule_tick();
            }
            FromBot::Ignored(why) => debug!(
                "call {}: bot {}: {why}",
                self.opening.call_id, self.spec.name
            ),
        }
    }

    /// Playing resumes at once when audio (or a mark) arrives while nothing was queued.
    fn schedule_tick(&mut self) {
        if self.bridged && self.next_tick.is_none() {
            self.next_tick = Some(Instant::now());
            self.rtp.spurt = true;
        }
    }

    /// Plays every frame that is due, on the 20 ms clock.
    fn play_due(&mut self) {
        let now = Instant::now();
        let mut frame = [0u8; 12 + 640];
        let mut wide = [0u8; 640];
        while let Some(due) = self.next_tick.filter(|t| *t <= now) {
            let bytes = self.spec.format.frame_bytes();
            let (tick, len) = match self.decimator.as_mut() {
                Some(d) => {
                    let tick = self.playout.next_frame(&mut wide[..bytes]);
                    let len = if tick.played {
                        d.process(&wide[..bytes], &mut frame[12..])
                    } else {
                        0
                    };
                    (tick, len)
                }
                None => (self.playout.next_frame(&mut frame[12..12 + bytes]), bytes),
            };
            if tick.played {
                self.rtp.header(&mut frame, due);
                if let Some(peer) = self.peer {
                    if let Err(e) = self.socket.send_to(&frame[..12 + len], peer) {
                        debug!("bot session on port {}: send to {peer}: {e}", self.port());
                    }
                }
            }
            for marker in &tick.marks {
                self.send(marker.to_bot());
            }
            if tick.xon {
                self.send(ToBot::Xon);
            }
            if tick.drained {
                self.send(ToBot::QueueDrained);
            }
            self.report_queue();
            self.next_tick = if !tick.played && self.playout.frames_queued() == 0 {
                None
            } else if now.saturating_duration_since(due) > LATE_RESYNC {
                Some(now + PTIME)
            } else {
                Some(due + PTIME)
            };
        }
    }

    /// Keeps `voicebot1_bot_queued_frames` (the sum over sessions) up to date with this one.
    fn report_queue(&mut self) {
        let now = self.playout.frames_queued();
        if now != self.queue_reported {
            metrics::bot_queue_changed(self.spec.metrics, now as i64 - self.queue_reported as i64);
            self.queue_reported = now;
        }
    }

    /// Pings a quiet bot; a ping unanswered for `pong_timeout` fails the session.
    fn keep_alive(&mut self) {
        let (Link::Up(socket), Some(l)) = (&mut self.link, self.liveness.as_mut()) else {
            return;
        };
        let now = Instant::now();
        if let Some(silence) = l.dead(now) {
            return self.fail(Failure::Silent(silence));
        }
        if l.due_ping(now) {
            l.on_ping(now);
            match socket.write(Message::Ping(Vec::new())) {
                Ok(()) => self.unflushed = true,
                Err(tungstenite::Error::Io(e)) if ws::would_block(&e) => self.unflushed = true,
                Err(e) => self.fail(Failure::Lost(e.to_string())),
            }
        }
    }

    /// While the call wakes Asterisk (before 18.21/20.6), RTP silence every `WAKE_EVERY`.
    fn send_wake_silence(&mut self) {
        let (Some(format), Some(peer)) = (self.wake, self.peer) else {
            return;
        };
        let now = Instant::now();
        if self
            .last_wake
            .is_some_and(|t| now.duration_since(t) < WAKE_EVERY)
        {
            return;
        }
        self.last_wake = Some(now);
        // As the bot's audio goes (8 kHz linear for slin16: see `RtpOut`).
        let bytes = match format {
            Format::Slin16 => Format::Ulaw.frame_samples() as usize * 2,
            f => f.frame_bytes(),
        };
        let mut frame = [0u8; 12 + 640];
        frame[12..12 + bytes].fill(format.silence_byte());
        self.rtp.header(&mut frame, now);
        let _ = self.socket.send_to(&frame[..12 + bytes], peer);
    }

    /// Sleeps until the UDP socket is readable, the WebSocket readable (unless bot audio is
    /// playing: it is read at the ticks) or writable (when it holds output), or the next thing
    /// is due; says which socket woke it. Does not sleep at all when the bot's messages were
    /// left unread or the call changed something since `sync`.
    fn wait(&self) -> Ready {
        // A change made after this turn's `sync` sent a wake-up datagram that `read_rtp` may have
        // read and dropped with the audio: sleeping would miss the change until the next packet,
        // for ever once Asterisk sends no more.
        if self.unread || self.control.generation.load(Ordering::Acquire) != self.seen {
            return Ready::BOTH;
        }
        let now = Instant::now();
        let mut due: Option<Instant> = self.next_tick;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                due = Some(due.map_or(t, |d| d.min(t)));
            }
        };
        match &self.link {
            Link::Connecting(c) => at(Some(c.deadline)),
            Link::Up(_) => at(self.liveness.as_ref().map(|l| l.next_check(now))),
            Link::Gone => {}
        }
        if self.wake.is_some() && self.peer.is_some() {
            at(Some(now + WAKE_EVERY));
        }
        let timeout = due.map(|d| d.saturating_duration_since(now));
        let tcp = match &self.link {
            Link::Up(s) => Some(TcpWait {
                fd: ws::tcp(s).as_raw_fd(),
                reading: self.next_tick.is_none(),
                writing: self.unflushed,
            }),
            _ => None,
        };
        poll(self.socket.as_raw_fd(), tcp, timeout)
    }

    fn fail(&mut self, why: Failure) {
        if matches!(self.link, Link::Gone) {
            return;
        }
        self.link = Link::Gone;
        self.held.clear();
        self.held_keys.clear();
        metrics::bot_failed(self.spec.metrics, why.reason());
        debug!(
            "call {}: bot {} session failed ({why})",
            self.opening.call_id, self.spec.name
        );
        self.outcome.get_or_insert(BotOutcome::Failed);
        self.failure = Some(why.clone());
        (self.notify)(BotEvent::Failed(why));
    }

    /// The bot closed the WebSocket: normally (1000, 1001) its work is done; any other code is a
    /// failure.
    fn bot_closed(&mut self, frame: Option<CloseFrame>) {
        let code = frame.as_ref().map(|f| f.code);
        match code {
            Some(CloseCode::Normal | CloseCode::Away) | None => {
                self.link = Link::Gone;
                self.closed_by_bot = true;
                self.outcome.get_or_insert(BotOutcome::BotEnded);
                debug!(
                    "call {}: bot {} session: the bot closed the connection",
                    self.opening.call_id, self.spec.name
                );
                (self.notify)(BotEvent::Done);
            }
            Some(code) => {
                let reason = frame
                    .map(|f| bot::Snippet::of(&f.reason).to_string())
                    .unwrap_or_default();
                self.fail(Failure::ClosedAbnormally(format!(
                    "code {} {reason}",
                    u16::from(code)
                )));
            }
        }
    }

    /// The call left the bot: twilio's `stop`, then close 1000; whatever is queued leaves within
    /// `CLOSE_FLUSH` or not at all.
    fn close(&mut self) {
        if let Link::Up(_) = self.link {
            self.send(ToBot::Stop);
            if let Link::Up(socket) = &mut self.link {
                let _ = socket.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }));
                let until = Instant::now() + CLOSE_FLUSH;
                loop {
                    match socket.flush() {
                        Err(tungstenite::Error::Io(e))
                            if ws::would_block(&e) && Instant::now() < until =>
                        {
                            poll(
                                -1,
                                Some(TcpWait {
                                    fd: ws::tcp(socket).as_raw_fd(),
                                    reading: true,
                                    writing: true,
                                }),
                                Some(until.saturating_duration_since(Instant::now())),
                            );
                        }
                        _ => break,
                    }
                }
            }
        }
        self.link = Link::Gone;
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The session's line: `bot support: 350 frames to the bot, 348 from it[, dropped …][, bad …]`.
    fn line(&self) -> String {
        let c = &self.counts;
        let mut s = format!(
            "bot {}: {} frames to the bot, {} from it",
            self.spec.name, c.to_bot, c.from_bot
        );
        for (why, n) in BotDropped::ALL.iter().zip(c.dropped) {
            if n > 0 {
                s.push_str(&format!(", {n} dropped ({})", why.label()));
            }
        }
        let bad: u64 = c.bad.iter().sum();
        if bad > 0 {
            s.push_str(&format!(", {bad} bad messages skipped"));
        }
        if c.rtp_foreign > 0 {
            s.push_str(&format!(
                ", {} packets from other addresses or not RTP",
                c.rtp_foreign
            ));
        }
        match (&self.failure, self.closed_by_bot) {
            (Some(f), _) => s.push_str(&format!("; failed: {f}")),
            (None, true) => s.push_str("; closed by the bot"),
            _ => {}
        }
        s
    }
}

/// Which sockets a `ppoll` found ready to read (or broken: an error or a hang-up reads as ready,
/// so that the read reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ready {
    udp: bool,
    tcp: bool,
}

impl Ready {
    /// When it is not known: the first turn, a wait interrupted by a signal.
    const BOTH: Ready = Ready {
        udp: true,
        tcp: true,
    };
}

/// What a wait watches the WebSocket's TCP socket for.
struct TcpWait {
    fd: RawFd,
    reading: bool,
    writing: bool,
}

/// Waits until `udp` (if given, i.e. not -1) is readable, `tcp` readable or writable as asked
/// (or in error, which is always reported), or `timeout` passes (none: for ever). `ppoll` takes
/// a timespec: the 20 ms clock is not rounded to whole milliseconds.
fn poll(udp: RawFd, tcp: Option<TcpWait>, timeout: Option<Duration>) -> Ready {
    let mut fds = [
        libc::pollfd {
            fd: udp,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        },
    ];
    if let Some(t) = tcp {
        fds[1] = libc::pollfd {
            fd: t.fd,
            events: if t.reading { libc::POLLIN } else { 0 }
                | if t.writing { libc::POLLOUT } else { 0 },
            revents: 0,
        };
    }
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(3600) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid array of two initialised pollfd for the duration of the call (a
    // negative fd is ignored by the kernel), `ts_ptr` is null or points to a live timespec, and
    // a null signal mask leaves the mask unchanged.
    let rc = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Ready::BOTH;
    }
    let readable = libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
    Ready {
        udp: fds[0].revents & readable != 0,
        tcp: fds[1].revents & readable != 0,
    }
}

/// Some bits that differ between processes and runs, for the RTP stream's SSRC and starting
/// points (RFC 3550 wants them random; no cryptographic strength is needed).
fn std_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}
