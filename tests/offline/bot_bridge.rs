//! The bot bridge (`media::bot::BotBridge`) against FAKE bots: every failure a bot can cause has a
//! defined outcome, and each test here shows one.
//!
//! Each test drives the real bridge in-process: a one-port `SocketPool` on 127.0.0.1 (each test
//! has its own port, 26200-26249: above the sandbox Asterisk's RTP and the cluster boxes', below
//! conf/voicebot1.toml's 26500-26999 and every other test's), a UDP socket playing Asterisk (RTP
//! as Asterisk sends it: 12-byte header, PT 0 with 160 bytes of μ-law, or PT 118 with 640 bytes
//! of big-endian slin16, every 20 ms) and a fake bot: a `TcpListener` and `tungstenite` on a
//! thread, scripted to do what no real bot can be made to do on demand. The session's events go
//! into a channel, its line comes from `Session::finish`, its figures from the process's metrics
//! (each test has a bot name of its own, registered once per process) and its warnings from a
//! capturing logger (each test has a call id of its own).
//!
//! Every wait is bounded (a few seconds at most): a fake bot's socket has read timeouts, its
//! result comes back through a channel read with a timeout, and no thread is ever joined.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, Once, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use voicebot1::audio::Format;
use voicebot1::bot::{Bad, Dialect, Opening, StreamIds};
use voicebot1::media::bot::{BotBridge, BotEvent, BotSpec, Failure};
use voicebot1::media::{Session, SocketPool};
use voicebot1::metrics::{render, Live, METRICS};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The first UDP port of these tests; test `k` uses `PORTS + k`.
const PORTS: u16 = 26200;
/// How long any one wait of these tests may last before it fails.
const WAIT: Duration = Duration::from_secs(5);
const PTIME: Duration = Duration::from_millis(20);
/// The payload type the fake Asterisk gives slin16 (a dynamic one, as Asterisk's is).
const SLIN16_PT: u8 = 118;

// --- the process-wide test set-up: bot names for the metrics, a logger --------------------------

/// Every bot name the tests use; a bot's index in the metrics is its position here.
const BOTS: &[&str] = &[
    "refused_tcp",
    "unresolved",
    "tls_to_plain",
    "http_status",
    "no_upgrade",
    "close_1011",
    "close_no_frame",
    "tcp_reset",
    "close_1000",
    "silent",
    "bad_twilio",
    "bad_chan_websocket",
    "too_big",
    "flood",
    "endless_flood",
    "wake_up",
    "not_reading",
    "late_upgrade",
    "dtmf_twilio",
    "dtmf_chan_websocket",
    "clear_twilio",
    "flush_chan_websocket",
    "mark",
    "stop",
    "requests_twilio",
    "requests_chan_websocket",
    "early",
];

fn bot_index(name: &str) -> usize {
    BOTS.iter()
        .position(|b| *b == name)
        .unwrap_or_else(|| panic!("bot {name} is not in BOTS"))
}

static SET_UP: Once = Once::new();

/// Registers the bots in the process's metrics and installs the capturing logger, once.
fn set_up() {
    SET_UP.call_once(|| {
        METRICS.register_bots(BOTS.iter().map(|b| b.to_string()).collect(), &Bad::KINDS);
        if log::set_logger(&CAPTURE).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    });
}

/// Keeps the warnings and infos logged in this process (the bridge's lines name their call).
struct Capture;

static CAPTURE: Capture = Capture;
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let mut lines = lock(&LOGGED);
            if lines.len() < 100_000 {
                lines.push(format!("{} {}", record.level(), record.args()));
            }
        }
    }

    fn flush(&self) {}
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The lines logged so far that name `call`.
fn logged_for(call: &str) -> Vec<String> {
    let needle = format!("call {call}:");
    lock(&LOGGED)
        .iter()
        .filter(|l| l.contains(&needle))
        .cloned()
        .collect()
}

/// The tests that load the CPU or the heap (floods, a message over 1 MiB, hundreds of sessions
/// in a row) run alone: on two cores they would hold up the sessions whose pace, timing or
/// memory other tests measure, which run beside each other.
static HEAVY: RwLock<()> = RwLock::new(());

/// For a test that loads the CPU or the heap: no other heavy or timed test runs meanwhile.
fn heavy() -> RwLockWriteGuard<'static, ()> {
    HEAVY
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// For a test that measures time: no heavy test runs meanwhile.
fn timed() -> RwLockReadGuard<'static, ()> {
    HEAVY
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One series of the metrics for bot `bot`: `family{bot="…"[,label="value"]}`.
fn metric(family: &str, bot: &str, label: Option<(&str, &str)>) -> u64 {
    let text = render(&METRICS, &Live::default());
    let prefix = match label {
        Some((k, v)) => format!("{family}{{bot=\"{bot}\",{k}=\"{v}\"}} "),
        None => format!("{family}{{bot=\"{bot}\"}} "),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {prefix} in the metrics"))
}

fn failures(bot: &str, reason: &str) -> u64 {
    metric(
        "voicebot1_bot_failures_total",
        bot,
        Some(("reason", reason)),
    )
}

fn ended(bot: &str, outcome: &str) -> u64 {
    metric(
        "voicebot1_bot_sessions_ended_total",
        bot,
        Some(("outcome", outcome)),
    )
}

fn dropped(bot: &str, reason: &str) -> u64 {
    metric(
        "voicebot1_bot_frames_dropped_total",
        bot,
        Some(("reason", reason)),
    )
}

fn bad_messages(bot: &str, kind: &str) -> u64 {
    metric(
        "voicebot1_bot_bad_messages_total",
        bot,
        Some(("kind", kind)),
    )
}

/// The process's resident set, in kB.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `n` in the line's ", n dropped (reason)", 0 if none.
fn line_dropped(line: &str, reason: &str) -> u64 {
    let tail = format!(" dropped ({reason})");
    let counts = line.split(';').next().unwrap_or_default();
    counts
        .split(", ")
        .find_map(|part| part.strip_suffix(&tail))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `(to the bot, from it)` in the line's "N frames to the bot, M from it".
fn line_frames(line: &str) -> (u64, u64) {
    let number_before = |marker: &str| -> u64 {
        line.split(marker)
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count before {marker:?} in {line:?}"))
    };
    (
        number_before(" frames to the bot"),
        number_before(" from it"),
    )
}

// --- audio and RTP as Asterisk sends it --------------------------------------------------------

/// 20 ms of audio numbered `n` (its first two bytes), never silence.
fn frame(format: Format, n: u16) -> Vec<u8> {
    let mut f = vec![0x55; format.frame_bytes()];
    f[..2].copy_from_slice(&n.to_be_bytes());
    f
}

/// The number of a frame made by [`frame`].
fn number(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

/// `count` numbered frames from `first` on, one stream.
fn frames(format: Format, first: u16, count: u16) -> Vec<u8> {
    (first..first + count)
        .flat_map(|n| frame(format, n))
        .collect()
}

fn payload_type(format: Format) -> u8 {
    match format {
        Format::Slin16 => SLIN16_PT,
        other => other.payload_type(),
    }
}

/// An RTP packet as Asterisk sends it.
fn rtp(format: Format, seq: u16, payload: &[u8]) -> Vec<u8> {
    let ts = u32::from(seq).wrapping_mul(format.frame_samples());
    let mut p = vec![0x80, payload_type(format)];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Sends `count` numbered caller frames from `first` on, one every 20 ms on absolute deadlines,
/// on a thread of its own; the channel says when the last has gone.
fn caller_audio(
    asterisk: &UdpSocket,
    to: u16,
    format: Format,
    first: u16,
    count: u16,
) -> Receiver<()> {
    let socket = asterisk
        .try_clone()
        .expect("clone the fake Asterisk socket");
    let (done, sent) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..count {
            let due = start + PTIME * u32::from(i);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let _ = socket.send_to(
                &rtp(format, first + i, &frame(format, first + i)),
                (LOCAL, to),
            );
        }
        let _ = done.send(());
    });
    sent
}

// --- the call side: the bridge, its events, the fake Asterisk ----------------------------------

fn spec(name: &str, url: String, dialect: Dialect, format: Format) -> BotSpec {
    BotSpec {
        name: name.to_string(),
        url,
        dialect,
        format,
        json_control: true,
        authorization: None,
        tls: None,
        connect_timeout: Duration::from_secs(2),
        ping_interval: Duration::from_secs(5),
        pong_timeout: Duration::from_secs(5),
        max_queue_frames: 1000,
        metrics: bot_index(name),
    }
}

/// One call with a bot: the bridge on its own port, the fake Asterisk it plays to.
struct Call {
    session: Option<Box<dyn Session>>,
    events: Receiver<BotEvent>,
    asterisk: UdpSocket,
    port: u16,
    format: Format,
    call_id: String,
    started: Instant,
    _pool: SocketPool,
}

impl Call {
    /// Starts the bridge on port `PORTS + k` and points it at a fresh fake Asterisk, the caller
    /// bridged at once.
    fn start(k: u16, spec: BotSpec) -> Call {
        let call = Call::start_unbridged(k, spec);
        call.session().caller_bridged();
        call
    }

    /// The same, the caller not bridged yet (`session().caller_bridged()` does it).
    fn start_unbridged(k: u16, spec: BotSpec) -> Call {
        set_up();
        let port = PORTS + k;
        // The last call on this port may still hold its pool for a moment (its connector
        // thread's last wake-up).
        let until = Instant::now() + Duration::from_secs(1);
        let pool = loop {
            let (pool, failures) = SocketPool::bind(LOCAL, port, port);
            if failures.is_empty() {
                break pool;
            }
            assert!(Instant::now() < until, "port {port} busy: {failures:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        let lease = pool.lease().expect("a port");
        let call_id = format!("fake-bot-{}", spec.name);
        let opening = Opening {
            call_id: call_id.clone(),
            bot: spec.name.clone(),
            channel_name: "PJSIP/alice-00000001".into(),
            caller_number: "+15551230000".into(),
            caller_name: "Alice".into(),
            exten: "100".into(),
            params: vec![("lang".into(), "fr".into())],
            ids: StreamIds::from_seed(u128::from(port)),
        };
        let (tx, events): (Sender<BotEvent>, _) = crossbeam_channel::unbounded();
        let format = spec.format;
        let started = Instant::now();
        let bridge = BotBridge::start(
            lease,
            LOCAL,
            Arc::new(spec),
            opening,
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        )
        .expect("the bridge starts");
        let asterisk = UdpSocket::bind((LOCAL, 0)).expect("the fake Asterisk's socket");
        asterisk
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        // The first SIOCGSTAMP turns the kernel's receive timestamps on.
        arrived(&asterisk);
        let session: Box<dyn Session> = Box::new(bridge);
        session.set_peer(asterisk.local_addr().expect("an address"));
        Call {
            session: Some(session),
            events,
            asterisk,
            port,
            format,
            call_id,
            started,
            _pool: pool,
        }
    }

    fn session(&self) -> &dyn Session {
        self.session.as_deref().expect("the session runs")
    }

    /// The next event, within `within`; panics after.
    fn event(&self, within: Duration) -> BotEvent {
        self.events
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("no bot event within {within:?}"))
    }

    fn connected(&self) {
        match self.event(WAIT) {
            BotEvent::Connected(_) => {}
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    /// No event for `d`.
    fn quiet_for(&self, d: Duration) {
        if let Ok(e) = self.events.recv_timeout(d) {
            panic!("unexpected bot event {e:?}");
        }
    }

    fn send_rtp(&self, seq: u16, payload: &[u8]) {
        self.asterisk
            .send_to(&rtp(self.format, seq, payload), (LOCAL, self.port))
            .expect("send RTP");
    }

    /// The RTP voicebot1 plays, with arrival times, until `until`.
    fn played_until(&self, until: Instant) -> Vec<(Instant, Vec<u8>)> {
        self.receive(usize::MAX, until)
    }

    /// The RTP played until `n` packets came or `within` passed.
    fn played(&self, n: usize, within: Duration) -> Vec<(Instant, Vec<u8>)> {
        self.receive(n, Instant::now() + within)
    }

    fn receive(&self, n: usize, until: Instant) -> Vec<(Instant, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while out.len() < n && Instant::now() < until {
            if let Ok((len, from)) = self.asterisk.recv_from(&mut buf) {
                let at = arrived(&self.asterisk);
                assert_eq!(from.port(), self.port, "RTP from the call's port");
                assert!(len >= 12 && buf[0] >> 6 == 2, "an RTP packet");
                out.push((at, buf[12..len].to_vec()));
            }
        }
        out
    }

    /// Ends the session as the call does; its line and how long ending took.
    fn finish(mut self) -> (String, Duration) {
        let session = self.session.take().expect("the session runs");
        finish_within(session, WAIT).expect("Session::finish returns within the wait")
    }
}

impl Drop for Call {
    /// A test that failed midway still ends its session, within the wait.
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = finish_within(session, WAIT);
        }
    }
}

/// `Session::finish` on a thread of its own: its line and how long it took, or `None` if it did
/// not return within `within` (the session is then left behind).
fn finish_within(session: Box<dyn Session>, within: Duration) -> Option<(String, Duration)> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let line = session.finish();
        let _ = tx.send((line, t0.elapsed()));
    });
    rx.recv_timeout(within).ok()
}

// --- the fake bots -----------------------------------------------------------------------------

type Ws = WebSocket<TcpStream>;

/// A fake bot: where it listens, and what its script returns when it is done.
struct FakeBot<T> {
    url: String,
    result: Receiver<T>,
}

impl<T> FakeBot<T> {
    fn result(&self) -> T {
        self.result
            .recv_timeout(WAIT)
            .expect("the fake bot's script ended within the wait (a panic in it shows above)")
    }
}

/// Listens on 127.0.0.1 and runs `script` on a thread with the listener.
fn fake_bot<T: Send + 'static>(
    script: impl FnOnce(TcpListener) -> T + Send + 'static,
) -> FakeBot<T> {
    fake_bot_on(
        TcpListener::bind((LOCAL, 0)).expect("the fake bot listens"),
        script,
    )
}

fn fake_bot_on<T: Send + 'static>(
    listener: TcpListener,
    script: impl FnOnce(TcpListener) -> T + Send + 'static,
) -> FakeBot<T> {
    let url = format!("ws://{}/bot", listener.local_addr().expect("an address"));
    let (tx, result) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(script(listener));
    });
    FakeBot { url, result }
}

/// The first TCP connection within the wait, blocking, with read and write timeouts.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).expect("non-blocking accept");
    let until = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking stream");
                stream.set_read_timeout(Some(WAIT)).expect("read timeout");
                stream.set_write_timeout(Some(WAIT)).expect("write timeout");
                return stream;
            }
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("voicebot1 did not connect: {e}"),
        }
    }
}

/// Accepts voicebot1's connection and its upgrade.
fn accept_ws(listener: &TcpListener) -> Ws {
    tungstenite::accept(accept(listener)).expect("the upgrade")
}

/// The next text message, answering pings on the way; `None` at a close or an error.
fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(t),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

fn next_json(ws: &mut Ws) -> Option<Value> {
    next_text(ws).map(|t| serde_json::from_str(&t).expect("voicebot1 sends JSON"))
}

/// Reads voicebot1's opening messages; the twilio stream sid (chan_websocket: the channel id).
fn read_opening(ws: &mut Ws, dialect: Dialect) -> String {
    match dialect {
        Dialect::Twilio => {
            let connected = next_json(ws).expect("connected");
            assert_eq!(connected["event"], "connected");
            let start = next_json(ws).expect("start");
            assert_eq!(start["event"], "start");
            start["streamSid"]
                .as_str()
                .expect("start.streamSid")
                .to_string()
        }
        Dialect::Asterisk => {
            let start = next_json(ws).expect("MEDIA_START");
            assert_eq!(start["event"], "MEDIA_START");
            start["channel_id"]
                .as_str()
                .expect("channel_id")
                .to_string()
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A twilio `media` message from the bot.
fn media(sid: &str, audio: &[u8]) -> Message {
    Message::Text(format!(
        r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"{}"}}}}"#,
        b64(audio)
    ))
}

fn send(ws: &mut Ws, m: Message) {
    ws.send(m).expect("the fake bot sends");
}

/// Keeps the socket open, not reading, for `d`.
fn hold(ws: Ws, d: Duration) {
    std::thread::sleep(d);
    drop(ws);
}

/// Reads until a close or an error, for at most the wait: the close handshake completes.
fn read_to_close(ws: &mut Ws) {
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Close(_)) => continue,
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

// --- connecting ---------------------------------------------------------------------------------

/// Starts a call with `spec`; the failure it reports first, when (since the start), and its line.
fn connect_failure(k: u16, spec: BotSpec) -> (Failure, Duration, String) {
    let call = Call::start(k, spec);
    let event = call.event(WAIT);
    let after = call.started.elapsed();
    // Caller audio after the failure is read and dropped; the session goes on until the call
    // ends it.
    call.send_rtp(1, &frame(call.format, 1));
    let (line, took) = call.finish();
    eprintln!("{line} (after {after:?}; finish took {took:?})");
    assert!(took < Duration::from_millis(500), "finish took {took:?}");
    match event {
        BotEvent::Failed(f) => (f, after, line),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn fake_bot_not_listening_fails_unreachable_within_connect_timeout() {
    let port = TcpListener::bind((LOCAL, 0))
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port();
    // The listener is dropped: nothing listens there, the connection is refused.
    let mut s = spec(
        "refused_tcp",
        format!("ws://127.0.0.1:{port}/bot"),
        Dialect::Twilio,
        Format::Ulaw,
    );
    s.connect_timeout = Duration::from_secs(1);
    let (failure, after, line) = connect_failure(0, s);
    assert!(
        matches!(&failure, Failure::Unreachable(m) if m.contains("connecting")),
        "{failure:?}"
    );
    assert!(after < Duration::from_secs(1), "failed after {after:?}");
    assert!(line.contains("0 frames to the bot, 0 from it"), "{line}");
    assert!(line.contains("; failed: unreachable"), "{line}");
    assert_eq!(failures("refused_tcp", "unreachable"), 1);
    assert_eq!(ended("refused_tcp", "failed"), 1);
}

#[test]
fn fake_bot_name_that_does_not_resolve_fails_unreachable_within_connect_timeout() {
    let mut s = spec(
        "unresolved",
        "ws://voicebot1-fake-bot.invalid:8080/bot".into(),
        Dialect::Twilio,
        Format::Ulaw,
    );
    s.connect_timeout = Duration::from_secs(1);
    let (failure, after, line) = connect_failure(1, s);
    assert!(
        matches!(&failure, Failure::Unreachable(m) if m.contains("resolving")),
        "{failure:?}"
    );
    assert!(after < Duration::from_secs(1), "failed after {after:?}");
    assert!(line.contains("; failed: unreachable: resolving"), "{line}");
    assert_eq!(failures("unresolved", "unreachable"), 1);
}

#[test]
fn fake_bot_speaking_no_tls_to_a_wss_url_fails_unreachable_within_connect_timeout() {
    // A plain WebSocket server (what a wss:// URL to a ws:// bot reaches): it reads the TLS
    // ClientHello as HTTP, refuses it and closes.
    let bot = fake_bot(|listener| {
        let stream = accept(&listener);
        tungstenite::accept(stream).is_err()
    });
    let mut s = spec(
        "tls_to_plain",
        bot.url.replace("ws://", "wss://"),
        Dialect::Twilio,
        Format::Ulaw,
    );
    s.tls = Some(voicebot1::net::tls::client_config(None).expect("TLS settings"));
    s.connect_timeout = Duration::from_secs(1);
    let (failure, after, line) = connect_failure(2, s);
    assert!(
        matches!(&failure, Failure::Unreachable(m) if m.contains("handshake")),
        "{failure:?}"
    );
    assert!(after < Duration::from_secs(1), "failed after {after:?}");
    assert!(bot.result(), "the plain server saw no WebSocket upgrade");
    assert!(line.contains("; failed: unreachable: handshake"), "{line}");
    assert_eq!(failures("tls_to_plain", "unreachable"), 1);
}

#[test]
#[allow(clippy::result_large_err)] // tungstenite's callback returns its ErrorResponse: not ours to shrink.
fn fake_bot_answering_the_upgrade_with_401_404_500_is_refused_with_the_status() {
    for (i, code) in [401u16, 404, 500].into_iter().enumerate() {
        let bot = fake_bot(move |listener| {
            let stream = accept(&listener);
            let refused = tungstenite::accept_hdr(stream, |_: &Request, _: Response| {
                let mut answer = ErrorResponse::new(None);
                *answer.status_mut() =
                    tungstenite::http::StatusCode::from_u16(code).expect("a status");
                Err(answer)
            });
            refused.is_err()
        });
        let mut s = spec(
            "http_status",
            bot.url.clone(),
            Dialect::Twilio,
            Format::Ulaw,
        );
        s.connect_timeout = Duration::from_secs(1);
        let (failure, after, line) = connect_failure(3 + i as u16, s);
        assert_eq!(failure, Failure::Refused(code));
        assert!(after < Duration::from_secs(1), "failed after {after:?}");
        assert!(bot.result());
        assert!(
            line.ends_with(&format!(
                "; failed: refused the connection with HTTP {code}"
            )),
            "{line}"
        );
    }
    assert_eq!(failures("http_status", "refused"), 3);
    assert_eq!(ended("http_status", "failed"), 3);
}

#[test]
fn fake_bot_that_never_answers_the_upgrade_times_out_at_connect_timeout() {
    let _timed = timed();
    let timeout = Duration::from_millis(500);
    let bot = fake_bot(move |listener| {
        let mut stream = accept(&listener);
        // Reads the upgrade request and answers nothing until voicebot1 gives up.
        let mut buf = [0u8; 4096];
        let request = stream.read(&mut buf).unwrap_or(0);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let closed = matches!(stream.read(&mut buf), Ok(0));
        (request, closed)
    });
    let mut s = spec("no_upgrade", bot.url.clone(), Dialect::Twilio, Format::Ulaw);
    s.connect_timeout = timeout;
    let (failure, after, line) = connect_failure(6, s);
    match failure {
        Failure::ConnectTimeout(waited) => {
            assert!(waited >= timeout, "waited {waited:?}")
        }
        other => panic!("expected ConnectTimeout, got {other:?}"),
    }
    assert!(
        after >= timeout && after < timeout + Duration::from_millis(200),
        "failed after {after:?}"
    );
    let (request, closed) = bot.result();
    assert!(request > 0, "the fake bot got the upgrade request");
    assert!(closed, "voicebot1 closed the connection it gave up");
    assert!(line.contains("; failed: not connected within"), "{line}");
    assert_eq!(failures("no_upgrade", "connect_timeout"), 1);
}

#[test]
fn fake_bot_that_never_answers_the_upgrade_is_a_timeout_to_the_connector_too() {
    // The connector's own view of the same bot: its read times out at the deadline, which must
    // read as a timeout whichever of it and the session notices first.
    use voicebot1::net::ws::{connect, ConnectError, Request as WsRequest};
    let bot = fake_bot(|listener| {
        let mut stream = accept(&listener);
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = stream.read(&mut buf);
    });
    let t0 = Instant::now();
    let result = connect(&WsRequest {
        url: &bot.url,
        headers: &[],
        tls: None,
        per_attempt: Duration::from_millis(300),
        deadline: t0 + Duration::from_millis(300),
        max_message: 1 << 20,
    });
    let took = t0.elapsed();
    match result {
        Err(ConnectError::TimedOut(m)) => assert_eq!(m, "during the handshake"),
        Err(e) => panic!("expected a handshake timeout, got {e}"),
        Ok(_) => panic!("connected to a bot that never answered"),
    }
    assert!(took < Duration::from_millis(500), "took {took:?}");
    bot.result();
}

// --- how the bot ends ----------------------------------------------------------------------------

#[test]
fn fake_bot_closing_with_1011_fails_closed_abnormally() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        read_opening(&mut ws, Dialect::Twilio);
        let _ = ws.close(Some(CloseFrame {
            code: CloseCode::Error,
            reason: "bot crashed".into(),
        }));
        read_to_close(&mut ws);
    });
    let call = Call::start(
        7,
        spec("close_1011", bot.url.clone(), Dialect::Twilio, Format::Ulaw),
    );
    call.connected();
    match call.event(WAIT) {
        BotEvent::Failed(Failure::ClosedAbnormally(m)) => {
            assert!(m.contains("1011") && m.contains("bot crashed"), "{m}")
        }
        other => panic!("expected ClosedAbnormally, got {other:?}"),
    }
    bot.result();
    let (line, _) = call.finish();
    assert!(
        line.contains("; failed: closed the connection abnormally (code 1011"),
        "{line}"
    );
    assert_eq!(failures("close_1011", "closed_abnormally"), 1);
    assert_eq!(ended("close_1011", "failed"), 1);
}

#[test]
fn fake_bot_closing_tcp_without_a_close_frame_is_lost() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        read_opening(&mut ws, Dialect::Twilio);
        drop(ws); // FIN, no close frame
    });
    let call = Call::start(
        8,
        spec(
            "close_no_frame",
            bot.url.clone(),
            Dialect::Twilio,
            Format::Ulaw,
        ),
    );
    call.connected();
    match call.event(WAIT) {
        BotEvent::Failed(Failure::Lost(m)) => assert!(m.contains("closing handshake"), "{m}"),
        other => panic!("expected Lost, got {other:?}"),
    }
    bot.result();
    let (line, _) = call.finish();
    assert!(line.contains("; failed: connection lost"), "{line}");
    assert_eq!(failures("close_no_frame", "lost"), 1);
}

#[test]
fn fake_bot_resetting_the_tcp_connection_is_lost() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        read_opening(&mut ws, Dialect::Twilio);
        // SO_LINGER 0: closing sends a RST.
        let _ = socket2::SockRef::from(ws.get_ref()).set_linger(Some(Duration::ZERO));
        drop(ws);
    });
    let call = Call::start(
        9,
        spec("tcp_reset", bot.url.clone(), Dialect::Twilio, Format::Ulaw),
    );
    call.connected();
    match call.event(WAIT) {
        BotEvent::Failed(Failure::Lost(m)) => assert!(m.to_lowercase().contains("reset"), "{m}"),
        other => panic!("expected Lost, got {other:?}"),
    }
    bot.result();
    let (line, _) = call.finish();
    assert!(line.contains("; failed: connection lost"), "{line}");
    assert_eq!(failures("tcp_reset", "lost"), 1);
}

#[test]
fn fake_bot_closing_with_1000_is_done() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        read_opening(&mut ws, Dialect::Twilio);
        let _ = ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        read_to_close(&mut ws);
    });
    let call = Call::start(
        10,
        spec("close_1000", bot.url.clone(), Dialect::Twilio, Format::Ulaw),
    );
    call.connected();
    assert_eq!(call.event(WAIT), BotEvent::Done);
    bot.result();
    call.quiet_for(Duration::from_millis(100));
    let (line, _) = call.finish();
    assert!(line.ends_with("; closed by the bot"), "{line}");
    assert_eq!(ended("close_1000", "bot_ended"), 1);
    assert_eq!(ended("close_1000", "failed"), 0);
}

#[test]
fn fake_bot_gone_silent_fails_silent_after_ping_interval_and_pong_timeout() {
    let _timed = timed();
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        read_opening(&mut ws, Dialect::Twilio);
        // Stops reading: no pong ever goes back.
        hold(ws, Duration::from_secs(2));
    });
    let mut s = spec("silent", bot.url.clone(), Dialect::Twilio, Format::Ulaw);
    s.ping_interval = Duration::from_millis(200);
    s.pong_timeout = Duration::from_millis(300);
    let call = Call::start(11, s);
    call.connected();
    let connected = Instant::now();
    match call.event(WAIT) {
        BotEvent::Failed(Failure::Silent(silence)) => {
            assert!(silence >= Duration::from_millis(500), "{silence:?}")
        }
        other => panic!("expected Silent, got {other:?}"),
    }
    let after = connected.elapsed();
    eprintln!("silent: failed {after:?} after connecting");
    assert!(
        after >= Duration::from_millis(450) && after < Duration::from_millis(800),
        "failed {after:?} after connecting"
    );
    let (line, _) = call.finish();
    assert!(line.contains("; failed: silent for"), "{line}");
    assert_eq!(failures("silent", "silent"), 1);
    bot.result();
}

#[test]
fn fake_bot_failed_session_finishes_at_once_while_caller_audio_arrives() {
    let _heavy = heavy();
    // The call's stop comes as caller audio is read: its wake-up datagram may be read (and
    // dropped) with the audio. After a failure nothing else would wake the session.
    let port = TcpListener::bind((LOCAL, 0))
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port();
    const ROUNDS: u16 = 300;
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let mut call = Call::start(
            27,
            spec(
                "wake_up",
                format!("ws://127.0.0.1:{port}/bot"),
                Dialect::Twilio,
                Format::Ulaw,
            ),
        );
        assert!(matches!(call.event(WAIT), BotEvent::Failed(_)));
        for seq in 0..10 {
            call.send_rtp(seq, &frame(Format::Ulaw, seq));
        }
        // The stop at a different moment of the reading each round.
        let spin = Instant::now() + Duration::from_micros(u64::from(round % 50) * 2);
        while Instant::now() < spin {
            std::hint::spin_loop();
        }
        let session = call.session.take().expect("the session runs");
        let finished = finish_within(session, Duration::from_secs(1));
        let (_, took) = finished.unwrap_or_else(|| panic!("round {round}: finish hangs"));
        slowest = slowest.max(took);
    }
    eprintln!("wake-up: the slowest of {ROUNDS} finishes took {slowest:?}");
    // Scheduling on a busy machine aside, a finish is a wake-up and a join.
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    assert_eq!(ended("wake_up", "failed"), u64::from(ROUNDS));
}

// --- messages that cannot be used ------------------------------------------------------------------

#[test]
fn fake_bot_bad_twilio_messages_are_counted_logged_once_per_kind_and_skipped() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        let sid = read_opening(&mut ws, Dialect::Twilio);
        for _ in 0..2 {
            send(&mut ws, Message::Text("this is not JSON".into()));
            send(&mut ws, Message::Text(r#"{"event":"dance"}"#.into()));
            send(
                &mut ws,
                media(&format!("MZ{}", "0".repeat(32)), &[0x11; 160]),
            );
            send(
                &mut ws,
                Message::Text(format!(
                    r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"@@@@"}}}}"#
                )),
            );
            send(&mut ws, Message::Binary(vec![0x11; 160]));
        }
        // Audio after them still plays.
        send(&mut ws, media(&sid, &frames(Format::Ulaw, 1, 5)));
        hold(ws, Duration::from_secs(2));
    });
    let call = Call::start(
        12,
        spec("bad_twilio", bot.url.clone(), Dialect::Twilio, Format::Ulaw),
    );
    call.connected();
    let played = call.played(5, WAIT);
    let numbers: Vec<u16> = played.iter().map(|(_, p)| number(p)).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5], "the audio after the bad messages");
    call.quiet_for(Duration::from_millis(50));
    let call_id = call.call_id.clone();
    let (line, _) = call.finish();
    assert!(line.contains("0 frames to the bot, 5 from it"), "{line}");
    assert!(line.contains(", 10 bad messages skipped"), "{line}");
    assert!(!line.contains("failed"), "{line}");
    for kind in [
        "not_json",
        "unknown_event",
        "wrong_stream_sid",
        "bad_base64",
        "binary_frame",
    ] {
        assert_eq!(bad_messages("bad_twilio", kind), 2, "{kind}");
    }
    let warnings: Vec<String> = logged_for(&call_id)
        .into_iter()
        .filter(|l| l.contains("skipping a message"))
        .collect();
    assert_eq!(warnings.len(), 5, "one warning per kind: {warnings:#?}");
    for words in [
        "not a JSON object",
        "unknown event \"dance\"",
        "is not this stream's",
        "not base64",
        "binary frame of 160 bytes",
    ] {
        assert_eq!(
            warnings.iter().filter(|w| w.contains(words)).count(),
            1,
            "{words}: {warnings:#?}"
        );
    }
    bot.result();
}

#[test]
fn fake_bot_odd_sized_slin16_and_bad_chan_websocket_commands_are_counted_and_skipped() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        read_opening(&mut ws, Dialect::Asterisk);
        for _ in 0..2 {
            send(&mut ws, Message::Binary(vec![0x11; 641]));
            send(&mut ws, Message::Text("DANCE".into()));
            send(&mut ws, Message::Text("{not json".into()));
        }
        // slin16 little-endian on this wire: the frames' numbers, swapped.
        let mut audio = frames(Format::Slin16, 1, 3);
        for pair in audio.chunks_exact_mut(2) {
            pair.swap(0, 1);
        }
        send(&mut ws, Message::Binary(audio));
        hold(ws, Duration::from_secs(2));
    });
    let call = Call::start(
        13,
        spec(
            "bad_chan_websocket",
            bot.url.clone(),
            Dialect::Asterisk,
            Format::Slin16,
        ),
    );
    call.connected();
    let played = call.played(3, WAIT);
    assert_eq!(played.len(), 3);
    // slin16 goes back to Asterisk as 8 kHz linear (320 bytes a frame), decimated: the frames'
    // 0x5555 filler survives the low-pass within a percent.
    assert!(played.iter().all(|(_, p)| p.len() == 320));
    let level = i32::from(number(&played[2].1[160..162]));
    assert!((level - 0x5555).abs() < 0x5555 / 100, "{level:#x}");
    let call_id = call.call_id.clone();
    let (line, _) = call.finish();
    assert!(line.contains("0 frames to the bot, 3 from it"), "{line}");
    assert!(line.contains(", 6 bad messages skipped"), "{line}");
    for kind in ["partial_sample", "unknown_command", "not_json"] {
        assert_eq!(bad_messages("bad_chan_websocket", kind), 2, "{kind}");
    }
    let warnings = logged_for(&call_id)
        .into_iter()
        .filter(|l| l.contains("skipping a message"))
        .count();
    assert_eq!(warnings, 3);
    bot.result();
}

#[test]
fn fake_bot_message_over_1_mib_fails_too_big() {
    let _heavy = heavy();
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        let sid = read_opening(&mut ws, Dialect::Twilio);
        // Just under the limit is fine: a mark padded with blanks, answered at once.
        let under = format!(
            r#"{{"event":"mark","streamSid":"{sid}","mark":{{"name":"under"}}}}{}"#,
            " ".repeat(1_000_000)
        );
        send(&mut ws, Message::Text(under));
        let answered = next_json(&mut ws).is_some_and(|m| m["mark"]["name"] == "under");
        let over = format!(
            r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"{}"}}}}"#,
            "A".repeat(1 << 20)
        );
        let _ = ws.send(Message::Text(over));
        read_to_close(&mut ws);
        answered
    });
    let call = Call::start(
        14,
        spec("too_big", bot.url.clone(), Dialect::Twilio, Format::Ulaw),
    );
    call.connected();
    assert_eq!(call.event(WAIT), BotEvent::Failed(Failure::TooBig));
    assert!(bot.result(), "the message under 1 MiB was read");
    let (line, _) = call.finish();
    assert!(
        line.contains("; failed: sent a message over 1048576 bytes"),
        "{line}"
    );
    assert_eq!(failures("too_big", "too_big"), 1);
}

// --- a bot that floods, a bot that does not read -------------------------------------------------

/// When the last datagram read from `socket` reached it: the kernel's receive timestamp
/// (`SIOCGSTAMP`), so that the pace measured is voicebot1's, not that of this test's thread on
/// a busy machine; now if the kernel has none.
fn arrived(socket: &UdpSocket) -> Instant {
    use std::os::fd::AsRawFd;
    use std::time::{SystemTime, UNIX_EPOCH};
    /// `SIOCGSTAMP` (`SIOCGSTAMP_OLD`, a `struct timeval` of the C library's `time_t`).
    const SIOCGSTAMP: libc::c_ulong = 0x8906;
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut stamp = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: the descriptor is the open socket `socket` borrows, and `stamp` is a live timeval
    // the ioctl writes into.
    let done = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSTAMP as _, &mut stamp) };
    if done != 0 {
        return now;
    }
    let at = UNIX_EPOCH
        + Duration::new(
            u64::try_from(stamp.tv_sec).unwrap_or(0),
            u32::try_from(stamp.tv_usec).unwrap_or(0) * 1000,
        );
    now.checked_sub(wall.duration_since(at).unwrap_or_default())
        .unwrap_or(now)
}

/// The gaps between `start` and the first arrival, then between arrivals.
#[derive(Debug)]
struct Pace {
    largest: Duration,
    mean: Duration,
}

impl Pace {
    fn of(start: Instant, arrivals: &[(Instant, Vec<u8>)]) -> Pace {
        let mut gaps = Vec::with_capacity(arrivals.len());
        let mut last = start;
        for (at, _) in arrivals {
            gaps.push(at.saturating_duration_since(last));
            last = *at;
        }
        Pace {
            largest: gaps.iter().copied().max().unwrap_or_default(),
            mean: gaps.iter().sum::<Duration>() / gaps.len().max(1) as u32,
        }
    }

    /// The 20 ms clock kept: no frame lost over the run (20 ± 1 ms on average) and no gap of a
    /// quarter second. Shorter gaps are a busy machine's scheduling, which the kernel's
    /// timestamps show too (largest gaps of 25-60 ms on a quiet machine, 100-170 ms at a load
    /// average of 15-40 on two cores); a session held up by its bot stops for seconds.
    fn assert_kept(&self) {
        let average = Duration::from_millis(19)..Duration::from_millis(21);
        assert!(
            average.contains(&self.mean) && self.largest < Duration::from_millis(250),
            "the RTP to Asterisk lost its pace: {self:?}"
        );
    }
}

/// chan_websocket slin16 audio as the bot sends it (little-endian), `seconds` long.
fn slin16_le(seconds: usize) -> Vec<u8> {
    vec![0x01u8; seconds * 32_000]
}

#[test]
fn fake_bot_flooding_ten_minutes_of_audio_fills_a_capped_queue_and_rtp_keeps_its_pace() {
    // The RSS figure holds in a run where nothing else fails: a panic's backtrace loads the
    // test binary's debug information, some 100 MB.
    let _heavy = heavy();
    const SECONDS: u64 = 600;
    let (go, flood) = crossbeam_channel::bounded::<()>(1);
    let bot = fake_bot(move |listener| {
        let mut ws = accept_ws(&listener);
        read_opening(&mut ws, Dialect::Asterisk);
        let _ = flood.recv_timeout(WAIT);
        // Ten minutes of slin16, one second per message, as fast as TCP takes it.
        let second = slin16_le(1);
        let t0 = Instant::now();
        for _ in 0..SECONDS {
            send(&mut ws, Message::Binary(second.clone()));
        }
        let sent_in = t0.elapsed();
        // GET_STATUS is answered once everything before it has been read.
        send(&mut ws, Message::Text("GET_STATUS".into()));
        let mut xoff = false;
        let status = loop {
            match next_json(&mut ws) {
                Some(m) if m["event"] == "STATUS" => break Some(m),
                Some(m) => xoff |= m["event"] == "MEDIA_XOFF",
                None => break None,
            }
        };
        let queued = status.and_then(|s| s["queue_length"].as_u64());
        // The socket stays open until the test is done with the call.
        (sent_in, xoff, queued, Instant::now(), ws)
    });
    let call = Call::start(
        15,
        spec("flood", bot.url.clone(), Dialect::Asterisk, Format::Slin16),
    );
    call.connected();
    let rss_before = rss_kb();
    let go_at = Instant::now();
    go.send(()).expect("the fake bot waits");
    // RTP during the flood and after it.
    // RTP while the flood is read (however long a busy machine takes) and half a second after.
    let mut played = Vec::new();
    let (sent_in, xoff, queued, status_at, _ws) = loop {
        played.extend(call.played_until(Instant::now() + Duration::from_millis(100)));
        if let Ok(result) = bot.result.try_recv() {
            break result;
        }
        assert!(
            go_at.elapsed() < 3 * WAIT,
            "the flood is read within {:?}",
            3 * WAIT
        );
    };
    let rss_after = rss_kb();
    played.extend(call.played_until(Instant::now() + Duration::from_millis(500)));
    let pace = Pace::of(go_at, &played);
    let during = played.iter().filter(|(t, _)| *t <= status_at).count() as u64;
    let due_during = (status_at - go_at).as_millis() as u64 / 20;
    let (line, _) = call.finish();
    let (_, from_bot) = line_frames(&line);
    let queue_full = line_dropped(&line, "queue_full");
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "flood: {SECONDS} s of audio sent in {sent_in:?}; RSS {rss_before} kB -> {rss_after} kB \
         (+{growth} kB); queue {queued:?} frames at the end; {queue_full} frames dropped \
         (queue_full); RTP: {during} packets while the flood was read ({due_during} due), {} in \
         all, {pace:?}",
        played.len(),
    );
    assert!(xoff, "the bot was told MEDIA_XOFF");
    let queued = queued.expect("the bot got a STATUS");
    assert!((990..=1000).contains(&queued), "the queue stops at its cap");
    assert_eq!(from_bot, SECONDS * 50, "{line}");
    // Every frame was played, is queued or was dropped (a frame may be on its way either side
    // of the status).
    let accounted = queue_full + queued + during;
    assert!(
        accounted.abs_diff(from_bot) <= 3,
        "{queue_full} dropped + {queued} queued + {during} played of {from_bot}"
    );
    assert_eq!(dropped("flood", "queue_full"), queue_full);
    assert!(growth < 4 * 1024, "RSS grew by {growth} kB");
    assert!(
        during + 3 >= due_during,
        "{during} frames played of {due_during} due"
    );
    let span = played.last().map_or(Duration::ZERO, |(t, _)| *t - go_at);
    assert!(
        played.len() as u64 + 3 >= span.as_millis() as u64 / 20,
        "{} packets in {span:?}",
        played.len()
    );
    pace.assert_kept();
}

#[test]
fn fake_bot_flooding_without_end_holds_up_neither_rtp_nor_finish() {
    let _heavy = heavy();
    let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
    let bot = fake_bot(move |listener| {
        let mut ws = accept_ws(&listener);
        read_opening(&mut ws, Dialect::Asterisk);
        // Faster than voicebot1 reads, until told to stop (or voicebot1 closes).
        let second = slin16_le(1);
        let until = Instant::now() + Duration::from_secs(4);
        let mut sent = 0u64;
        while Instant::now() < until && stopped.try_recv().is_err() {
            if ws.send(Message::Binary(second.clone())).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let call = Call::start(
        26,
        spec(
            "endless_flood",
            bot.url.clone(),
            Dialect::Asterisk,
            Format::Slin16,
        ),
    );
    call.connected();
    let rss_before = rss_kb();
    let start = Instant::now();
    let played = call.played_until(start + Duration::from_millis(1500));
    let pace = Pace::of(start, &played);
    let rss_after = rss_kb();
    let (line, finish_took) = call.finish();
    let _ = stop.send(());
    let seconds_sent = bot.result();
    let (_, from_bot) = line_frames(&line);
    eprintln!(
        "endless flood: {} RTP packets in 1.5 s, {pace:?}; \
         finish took {finish_took:?} while the bot sent; {seconds_sent} s of audio sent, \
         {from_bot} frames read; RSS {rss_before} kB -> {rss_after} kB",
        played.len()
    );
    assert!(played.len() >= 70, "{} packets in 1.5 s", played.len());
    pace.assert_kept();
    assert!(
        finish_took < Duration::from_millis(100),
        "finish took {finish_took:?}"
    );
}

/// Shrinks the send buffer of voicebot1's end of `stream`, found among this process's
/// descriptors by its addresses, to what a slow path's would hold. Loopback TCP buffers hold
/// megabytes (a 64 KiB MSS, send buffers that grow to 4 MiB): at 32 kB/s of caller audio a bot
/// would have to stop reading for minutes before voicebot1 held anything back.
fn shrink_peer_send_buffer(stream: &TcpStream) -> bool {
    use std::os::fd::{BorrowedFd, RawFd};
    let (Ok(ours), Ok(theirs)) = (stream.local_addr(), stream.peer_addr()) else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor was open a moment ago; it is only asked for its addresses (and,
        // once they are voicebot1's end of this connection, given a buffer size): a descriptor
        // closed meanwhile makes those calls fail with EBADF, and a reused one does not match.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        if local == Some(theirs) && peer == Some(ours) {
            return socket.set_send_buffer_size(4096).is_ok();
        }
    }
    false
}

#[test]
fn fake_bot_that_never_reads_costs_caller_frames_not_the_session_thread() {
    let _timed = timed();
    let (stopped_tx, stopped) = crossbeam_channel::bounded::<bool>(1);
    let listener = TcpListener::bind((LOCAL, 0)).expect("the fake bot listens");
    // A small receive window, inherited by the accepted connection.
    socket2::SockRef::from(&listener)
        .set_recv_buffer_size(4096)
        .expect("SO_RCVBUF");
    let bot = fake_bot_on(listener, move |listener| {
        let stream = accept(&listener);
        let shrunk = shrink_peer_send_buffer(&stream);
        let mut ws = tungstenite::accept(stream).expect("the upgrade");
        read_opening(&mut ws, Dialect::Asterisk);
        // Six seconds of audio queued (little-endian on this wire), then no more reading.
        let mut audio = frames(Format::Slin16, 0, 300);
        for pair in audio.chunks_exact_mut(2) {
            pair.swap(0, 1);
        }
        for chunk in audio.chunks(6400) {
            send(&mut ws, Message::Binary(chunk.to_vec()));
        }
        let _ = stopped_tx.send(shrunk);
        hold(ws, Duration::from_secs(7));
    });
    let call = Call::start(
        16,
        spec(
            "not_reading",
            bot.url.clone(),
            Dialect::Asterisk,
            Format::Slin16,
        ),
    );
    call.connected();
    let shrunk = stopped
        .recv_timeout(WAIT)
        .expect("the bot queued its audio");
    assert!(
        shrunk,
        "voicebot1's socket found and its send buffer shrunk"
    );
    let first = call.played(1, WAIT);
    assert_eq!(first.len(), 1, "voicebot1 plays the bot's audio");
    // Four seconds of caller audio at 50 packets a second, into a bot that reads nothing.
    let start = Instant::now();
    let sent = caller_audio(&call.asterisk, call.port, Format::Slin16, 0, 200);
    let played = call.played_until(start + Duration::from_secs(4));
    sent.recv_timeout(WAIT).expect("the caller audio went");
    let pace = Pace::of(start, &played);
    // Whatever is still in flight is read before the end.
    std::thread::sleep(Duration::from_millis(50));
    let (line, finish_took) = call.finish();
    let (to_bot, _) = line_frames(&line);
    let not_reading = line_dropped(&line, "bot_not_reading");
    eprintln!(
        "not reading: {} RTP packets played in 4 s, {pace:?}; \
         {to_bot} caller frames handed to the socket, {not_reading} dropped (bot_not_reading); \
         finish took {finish_took:?}",
        played.len()
    );
    assert!(not_reading > 0, "{line}");
    assert_eq!(
        to_bot + not_reading,
        200,
        "every caller frame sent or counted: {line}"
    );
    assert_eq!(dropped("not_reading", "bot_not_reading"), not_reading);
    assert!(played.len() >= 195, "{} packets in 4 s", played.len());
    pace.assert_kept();
    assert!(
        finish_took < Duration::from_millis(100),
        "finish took {finish_took:?}"
    );
    assert!(!line.contains("failed"), "{line}");
    bot.result();
}

// --- set-up ----------------------------------------------------------------------------------------

#[test]
#[allow(clippy::result_large_err)] // tungstenite's callback returns its ErrorResponse: not ours to shrink.
fn fake_bot_answering_the_upgrade_late_gets_all_caller_audio_held_meanwhile_in_order() {
    let bot = fake_bot(|listener| {
        let stream = accept(&listener);
        let mut ws = tungstenite::accept_hdr(stream, |_: &Request, response: Response| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(response)
        })
        .expect("the upgrade");
        read_opening(&mut ws, Dialect::Twilio);
        let mut got = Vec::new();
        while got.len() < 30 {
            let Some(m) = next_json(&mut ws) else { break };
            if m["event"] == "media" {
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(m["media"]["payload"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                got.push((
                    number(&payload),
                    m["media"]["chunk"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        got
    });
    let call = Call::start(
        17,
        spec(
            "late_upgrade",
            bot.url.clone(),
            Dialect::Twilio,
            Format::Ulaw,
        ),
    );
    let sent = caller_audio(&call.asterisk, call.port, Format::Ulaw, 0, 30);
    match call.event(WAIT) {
        BotEvent::Connected(took) => {
            eprintln!("late upgrade: connected after {took:?}");
            assert!(took >= Duration::from_millis(300), "{took:?}")
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    sent.recv_timeout(WAIT).expect("the caller audio went");
    let got = bot.result();
    let numbers: Vec<u16> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        (0..30).collect::<Vec<u16>>(),
        "all of it, in order"
    );
    let chunks: Vec<String> = got.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(chunks, (1..=30).map(|c| c.to_string()).collect::<Vec<_>>());
    let (line, _) = call.finish();
    assert!(
        line.starts_with("bot late_upgrade: 30 frames to the bot, 0 from it"),
        "{line}"
    );
    assert_eq!(line_dropped(&line, "held_too_long"), 0);
}

// --- what the call and the bot ask of each other --------------------------------------------------

#[test]
fn fake_bot_hears_the_callers_keys_as_twilio_dtmf() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        let sid = read_opening(&mut ws, Dialect::Twilio);
        let mut digits = Vec::new();
        while digits.len() < 2 {
            let Some(m) = next_json(&mut ws) else { break };
            if m["event"] == "dtmf" {
                assert_eq!(m["streamSid"], sid.as_str());
                assert_eq!(m["dtmf"]["track"], "inbound_track");
                digits.push(m["dtmf"]["digit"].as_str().unwrap_or_default().to_string());
            }
        }
        read_to_close(&mut ws);
        digits
    });
    let call = Call::start(
        18,
        spec(
            "dtmf_twilio",
            bot.url.clone(),
            Dialect::Twilio,
            Format::Ulaw,
        ),
    );
    call.connected();
    call.session().dtmf('5');
    call.session().dtmf('#');
    std::thread::sleep(Duration::from_millis(100));
    call.finish();
    assert_eq!(bot.result(), ["5", "#"]);
}

#[test]
fn fake_bot_hears_the_callers_keys_as_chan_websocket_dtmf_end() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        let channel = read_opening(&mut ws, Dialect::Asterisk);
        let mut digits = Vec::new();
        while digits.len() < 2 {
            let Some(m) = next_json(&mut ws) else { break };
            if m["event"] == "DTMF_END" {
                assert_eq!(m["channel_id"], channel.as_str());
                digits.push(m["digit"].as_str().unwrap_or_default().to_string());
            }
        }
        read_to_close(&mut ws);
        digits
    });
    let call = Call::start(
        19,
        spec(
            "dtmf_chan_websocket",
            bot.url.clone(),
            Dialect::Asterisk,
            Format::Ulaw,
        ),
    );
    call.connected();
    call.session().dtmf('1');
    call.session().dtmf('*');
    std::thread::sleep(Duration::from_millis(100));
    call.finish();
    assert_eq!(bot.result(), ["1", "*"]);
}

/// A bot queues 2 s of audio and a mark, then clears after `clear_after`; when the clear went,
/// and (twilio) when the cleared mark came back.
fn clear_script(
    dialect: Dialect,
    clear_after: Duration,
) -> impl FnOnce(TcpListener) -> (Instant, Option<Instant>) + Send + 'static {
    move |listener| {
        let mut ws = accept_ws(&listener);
        let sid = read_opening(&mut ws, dialect);
        let audio = frames(Format::Ulaw, 0, 100);
        match dialect {
            Dialect::Twilio => {
                send(&mut ws, media(&sid, &audio));
                send(
                    &mut ws,
                    Message::Text(format!(
                        r#"{{"event":"mark","streamSid":"{sid}","mark":{{"name":"end"}}}}"#
                    )),
                );
            }
            Dialect::Asterisk => {
                send(&mut ws, Message::Binary(audio));
                send(&mut ws, Message::Text("MARK_MEDIA end".into()));
            }
        }
        std::thread::sleep(clear_after);
        send(
            &mut ws,
            Message::Text(match dialect {
                Dialect::Twilio => format!(r#"{{"event":"clear","streamSid":"{sid}"}}"#),
                Dialect::Asterisk => "FLUSH_MEDIA".into(),
            }),
        );
        let cleared = Instant::now();
        let _ = ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)));
        let mut answered = None;
        while let Some(m) = next_json(&mut ws) {
            let mark = m["event"] == "mark" || m["event"] == "MEDIA_MARK_PROCESSED";
            if mark && answered.is_none() {
                answered = Some(Instant::now());
            }
        }
        (cleared, answered)
    }
}

/// Plays a bot's clear; the frames the fake Asterisk got before and after the clear went.
fn frames_around_a_clear(k: u16, name: &str, dialect: Dialect) -> (usize, usize, Option<Duration>) {
    let bot = fake_bot(clear_script(dialect, Duration::from_millis(400)));
    let call = Call::start(k, spec(name, bot.url.clone(), dialect, Format::Ulaw));
    call.connected();
    let played = call.played_until(Instant::now() + Duration::from_millis(1000));
    let (cleared, answered) = bot.result();
    let before = played.iter().filter(|(t, _)| *t <= cleared).count();
    let after = played.iter().filter(|(t, _)| *t > cleared).count();
    let (line, _) = call.finish();
    assert!(line.contains("0 frames to the bot, 100 from it"), "{line}");
    (before, after, answered.map(|a| a - cleared))
}

#[test]
fn fake_bot_twilio_clear_stops_the_audio_within_one_frame_and_answers_its_mark() {
    let _timed = timed();
    let (before, after, mark) = frames_around_a_clear(20, "clear_twilio", Dialect::Twilio);
    eprintln!("clear: {before} frames before it, {after} after; mark answered after {mark:?}");
    assert!((15..=25).contains(&before), "{before} frames in 400 ms");
    assert!(after <= 1, "{after} frames after the clear");
    let mark = mark.expect("the cleared mark is answered");
    assert!(mark < Duration::from_millis(100), "{mark:?}");
}

#[test]
fn fake_bot_chan_websocket_flush_media_stops_the_audio_within_one_frame() {
    let _timed = timed();
    let (before, after, mark) =
        frames_around_a_clear(21, "flush_chan_websocket", Dialect::Asterisk);
    eprintln!("FLUSH_MEDIA: {before} frames before it, {after} after");
    assert!((15..=25).contains(&before), "{before} frames in 400 ms");
    assert!(after <= 1, "{after} frames after FLUSH_MEDIA");
    assert_eq!(mark, None, "FLUSH_MEDIA drops its marks unanswered");
}

#[test]
fn fake_bot_mark_after_one_second_of_audio_is_answered_a_second_later() {
    let _timed = timed();
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        let sid = read_opening(&mut ws, Dialect::Twilio);
        send(&mut ws, media(&sid, &frames(Format::Ulaw, 0, 50)));
        send(
            &mut ws,
            Message::Text(format!(
                r#"{{"event":"mark","streamSid":"{sid}","mark":{{"name":"one second"}}}}"#
            )),
        );
        let sent = Instant::now();
        loop {
            match next_json(&mut ws) {
                Some(m) if m["event"] == "mark" => {
                    assert_eq!(m["mark"]["name"], "one second");
                    break Some(sent.elapsed());
                }
                Some(_) => continue,
                None => break None,
            }
        }
    });
    let call = Call::start(
        22,
        spec("mark", bot.url.clone(), Dialect::Twilio, Format::Ulaw),
    );
    call.connected();
    let played = call.played(50, WAIT);
    let answered = bot.result().expect("the mark is answered");
    eprintln!("mark: answered {answered:?} after 1 s of audio");
    assert_eq!(played.len(), 50);
    assert!(
        answered >= Duration::from_millis(950) && answered < Duration::from_millis(1150),
        "answered after {answered:?}"
    );
    call.finish();
}

#[test]
fn fake_bot_greeting_sent_before_the_caller_is_bridged_is_played_whole_once_bridged() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        let sid = read_opening(&mut ws, Dialect::Twilio);
        // The greeting at once, as bots do on `start`.
        send(&mut ws, media(&sid, &frames(Format::Ulaw, 1, 25)));
        // Keys pressed while connecting reach the bot too.
        let mut digits = Vec::new();
        while digits.is_empty() {
            let Some(m) = next_json(&mut ws) else { break };
            if m["event"] == "dtmf" {
                digits.push(m["dtmf"]["digit"].as_str().unwrap_or_default().to_string());
            }
        }
        read_to_close(&mut ws);
        digits
    });
    let call = Call::start_unbridged(
        27,
        spec("early", bot.url.clone(), Dialect::Twilio, Format::Ulaw),
    );
    // Pressed before the bot is connected (the connector needs a moment).
    call.session().dtmf('7');
    call.connected();
    // Not bridged: nothing is played (it would be lost in an unbridged channel).
    let early = call.played_until(Instant::now() + Duration::from_millis(300));
    assert!(
        early.is_empty(),
        "{} frames played before the bridge",
        early.len()
    );
    call.session().caller_bridged();
    let played = call.played(25, WAIT);
    let numbers: Vec<u16> = played.iter().map(|(_, p)| number(p)).collect();
    assert_eq!(
        numbers,
        (1..=25).collect::<Vec<u16>>(),
        "the whole greeting, in order"
    );
    let (line, _) = call.finish();
    assert!(line.contains("0 frames to the bot, 25 from it"), "{line}");
    assert_eq!(bot.result(), ["7"]);
}

#[test]
fn fake_bot_twilio_gets_stop_then_close_1000_when_the_call_finishes() {
    let _timed = timed();
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        let sid = read_opening(&mut ws, Dialect::Twilio);
        let mut events = Vec::new();
        let mut close = None;
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            match ws.read() {
                Ok(Message::Text(t)) => {
                    let m: Value = serde_json::from_str(&t).expect("JSON");
                    if m["event"] == "stop" {
                        assert_eq!(m["streamSid"], sid.as_str());
                        assert!(m["stop"]["callSid"].as_str().is_some());
                    }
                    events.push(m["event"].as_str().unwrap_or_default().to_string());
                }
                Ok(Message::Close(frame)) => close = frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (events, close)
    });
    let call = Call::start(
        23,
        spec("stop", bot.url.clone(), Dialect::Twilio, Format::Ulaw),
    );
    call.connected();
    call.send_rtp(1, &frame(Format::Ulaw, 1));
    std::thread::sleep(Duration::from_millis(100));
    let (line, took) = call.finish();
    let (events, close) = bot.result();
    eprintln!("stop: the bot got {events:?} then close {close:?}; finish took {took:?}");
    assert_eq!(events, ["media", "stop"]);
    assert_eq!(close, Some(1000));
    assert!(took < Duration::from_millis(100), "finish took {took:?}");
    assert_eq!(line, "bot stop: 1 frames to the bot, 0 from it");
    assert_eq!(ended("stop", "call_left"), 1);
}

#[test]
fn fake_bot_twilio_transfer_and_hangup_come_out_as_events() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        let sid = read_opening(&mut ws, Dialect::Twilio);
        for text in [
            format!(r#"{{"event":"transfer","streamSid":"{sid}","transfer":{{"to":"sales"}}}}"#),
            format!(r#"{{"event":"transfer","streamSid":"{sid}"}}"#),
            format!(r#"{{"event":"hangup","streamSid":"{sid}"}}"#),
        ] {
            send(&mut ws, Message::Text(text));
        }
        read_to_close(&mut ws);
    });
    let call = Call::start(
        24,
        spec(
            "requests_twilio",
            bot.url.clone(),
            Dialect::Twilio,
            Format::Ulaw,
        ),
    );
    call.connected();
    assert_eq!(call.event(WAIT), BotEvent::Transfer(Some("sales".into())));
    assert_eq!(call.event(WAIT), BotEvent::Transfer(None));
    assert_eq!(call.event(WAIT), BotEvent::Hangup);
    call.quiet_for(Duration::from_millis(100));
    let (line, _) = call.finish();
    bot.result();
    assert!(!line.contains(';'), "{line}");
    assert_eq!(ended("requests_twilio", "call_left"), 1);
}

#[test]
fn fake_bot_chan_websocket_transfer_and_hangup_come_out_as_events() {
    let bot = fake_bot(|listener| {
        let mut ws = accept_ws(&listener);
        read_opening(&mut ws, Dialect::Asterisk);
        for text in ["TRANSFER sales", r#"{"command":"TRANSFER"}"#, "HANGUP"] {
            send(&mut ws, Message::Text(text.into()));
        }
        read_to_close(&mut ws);
    });
    let call = Call::start(
        25,
        spec(
            "requests_chan_websocket",
            bot.url.clone(),
            Dialect::Asterisk,
            Format::Ulaw,
        ),
    );
    call.connected();
    assert_eq!(call.event(WAIT), BotEvent::Transfer(Some("sales".into())));
    assert_eq!(call.event(WAIT), BotEvent::Transfer(None));
    assert_eq!(call.event(WAIT), BotEvent::Done);
    call.quiet_for(Duration::from_millis(100));
    let (line, _) = call.finish();
    bot.result();
    assert!(!line.contains("failed"), "{line}");
    assert_eq!(ended("requests_chan_websocket", "bot_ended"), 1);
}
