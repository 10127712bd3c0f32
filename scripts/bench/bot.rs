//! Benchmark: voicebot1's bot bridge (`media::BotBridge`: a call's RTP on one side, a WebSocket
//! bot on the other) in each dialect, beside voicebot1's RTP echo at the same load. Run by
//! `scripts/bench-bot.sh`; `cargo bench --bench bot -- --help` for the options.
//!
//! As in `echo.rs`, the product runs in a process of its own (`bot serve …`: a `SocketPool` and
//! one `BotBridge` or `Echo` per session, nothing else), so that its CPU time and memory are read
//! from /proc apart from the load's; its CPU is that of its session threads (`bot-*`, `echo-*`),
//! `/proc/PID/task/*/schedstat`. This process plays both ends of the calls:
//! - a fake Asterisk: UDP sockets that send every session 50 RTP packets a second as Asterisk
//!   does (PT 0, 160 bytes of μ-law, a session's packets 20 ms apart, the sessions spread evenly
//!   over the 20 ms), and read what voicebot1 plays back, stamped by the kernel on arrival
//!   (`SO_TIMESTAMPNS`);
//! - a load bot: a WebSocket server (tungstenite, a few epoll threads) that speaks the dialect as
//!   a bot does: reads `connected`/`start` (twilio) or `MEDIA_START` (asterisk), then sends its
//!   own audio, a lead of a few frames (a bot's head start, which keeps voicebot1's playout queue
//!   from running dry) and then a 20 ms frame every 20 ms, base64 JSON `media` or binary frames,
//!   and reads everything voicebot1 sends.
//!
//! Both ends are in this process and share its clocks, so the payloads carry what is measured:
//! - a caller frame carries when the fake Asterisk sent it; the load bot reads it back out of the
//!   bot's message: frame-in → bot-frame-out latency, from the kernel's receive timestamp of the
//!   TCP data (what voicebot1 costs) and from the load bot's own clock when it parsed the message
//!   (that plus the load bot's wake-up);
//! - a bot frame carries its session, its number and a clear generation; the fake Asterisk times
//!   each session's packets: the spacing of the RTP voicebot1 plays (|spacing − 20 ms|), and,
//!   after the load bot queued 5 s of audio and sent `clear` / `FLUSH_MEDIA`, how many frames of
//!   the old generation still arrived after the clear was written to voicebot1's socket.
//!
//! The machine is shared and noisy: the echo and the two dialects run in turn within a round (the
//! order rotates), ratios are taken within a round, then the median over rounds is printed.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use tungstenite::{Message, WebSocket};

use voicebot1::audio::Format;
use voicebot1::bot::{Dialect, Opening, StreamIds};
use voicebot1::media::{BotBridge, BotEvent, BotSpec, Echo, Session, SocketPool};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PTIME_NS: u64 = 20_000_000;
/// 20 ms of μ-law.
const FRAME: usize = 160;
/// A caller frame's payload starts with this, then the session (u32), the packet's number (u32),
/// when it was sent (this process's monotonic clock, then CLOCK_REALTIME, u64 ns each) and
/// whether it was sent in the measured window (u8).
const CALLER_MAGIC: [u8; 4] = *b"VBc1";
/// A bot frame's payload starts with this, then the session (u32), the frame's number (u32) and
/// its clear generation (u8: 0 before the clear, 1 after).
const BOT_MAGIC: [u8; 4] = *b"VBb1";
/// The fake Asterisk's sockets (session `s` talks to `s % FAKE_ASTERISK_SOCKETS`), each read
/// by a thread of its own.
const FAKE_ASTERISK_SOCKETS: usize = 2;
/// The load bot's epoll threads.
const LOAD_BOT_THREADS: usize = 2;
/// A burst of the clear test goes out in messages of this many frames (1 s).
const BURST_MESSAGE_FRAMES: usize = 50;

const USAGE: &str = "\
bot [--rounds 3] [--sessions 500] [--seconds 10] [--warmup 2] [--lead 5]
    [--kinds echo,twilio,asterisk] [--clear-s 5] [--port 24000] [--baseline PATH]
    [--audio both|caller|bot] [--quick]
  --sessions N   sessions of each kind (the echo's and each dialect's, in turn), 50 frames/s
                 each way
  --seconds S    the measured window of each kind, after --warmup seconds with the audio flowing
  --lead N       frames the load bot sends at once before its steady 50 frames/s
  --clear-s S    the audio the load bot queues before it sends clear / FLUSH_MEDIA (after the
                 window; the clear follows 0.5 s later); 0: no clear test
  --baseline PATH  also run each dialect on PATH's `serve`: this bench built from another
                 commit of the product, for a before/after in the same run (KIND-base)
  --audio WHICH  both ways (the measure of the goals), or only the caller's (the fake Asterisk
                 sends, the load bot is silent) or only the bot's (the other way round; no
                 echo then): what each direction costs
  --quick        --rounds 1 --sessions 100 --seconds 3 --warmup 1 (for trying the bench)
bot serve echo|twilio|asterisk FIRST_PORT SESSIONS PEER_PORTS URL
  voicebot1's side: SESSIONS echoes or bot bridges on 127.0.0.1:FIRST_PORT.., session i's
  Asterisk at 127.0.0.1:PEER_PORTS[i % n] (comma-separated), its bot at URL (- for the echo)
bot loadbot twilio|asterisk PORT [--lead N]
  the load bot alone on 127.0.0.1:PORT, for voicebot1 itself (scripts/bench-bot.sh --setup);
  prints `ready PORT`, runs until SIGINT or SIGTERM
";

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("loadbot") => standalone_load_bot(&args[1..]),
        Some("-h" | "--help") => print!("{USAGE}"),
        _ => run(&Options::parse(&args)),
    }
}

fn usage_error(msg: &str) -> ! {
    eprint!("bot: {msg}\n{USAGE}");
    std::process::exit(2);
}

struct Options {
    rounds: usize,
    sessions: u16,
    seconds: u64,
    warmup: u64,
    lead: usize,
    kinds: Vec<Kind>,
    baseline: Option<String>,
    clear_frames: usize,
    port: u16,
    caller_audio: bool,
    bot_audio: bool,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let mut o = Options {
            rounds: 3,
            sessions: 500,
            seconds: 10,
            warmup: 2,
            lead: 5,
            kinds: vec![Kind::Echo, Kind::Twilio, Kind::Asterisk],
            baseline: None,
            clear_frames: 250,
            port: 24_000,
            caller_audio: true,
            bot_audio: true,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--quick" {
                (o.rounds, o.sessions, o.seconds, o.warmup) = (1, 100, 3, 1);
                continue;
            }
            let value = it
                .next()
                .unwrap_or_else(|| usage_error(&format!("{flag} needs a value")));
            let num = || {
                value
                    .parse::<u64>()
                    .unwrap_or_else(|_| usage_error(&format!("{flag} {value}: not a number")))
            };
            match flag.as_str() {
                "--rounds" => o.rounds = num().max(1) as usize,
                "--sessions" => o.sessions = num().clamp(1, 5000) as u16,
                "--seconds" => o.seconds = num().max(1),
                "--warmup" => o.warmup = num(),
                "--lead" => o.lead = num().clamp(1, 500) as usize,
                "--clear-s" => o.clear_frames = num().min(15) as usize * 50,
                "--port" => o.port = num() as u16,
                "--baseline" => o.baseline = Some(value.clone()),
                "--audio" => {
                    (o.caller_audio, o.bot_audio) = match value.as_str() {
                        "both" => (true, true),
                        "caller" => (true, false),
                        "bot" => (false, true),
                        _ => usage_error("--audio: both, caller or bot"),
                    }
                }
                "--kinds" => {
                    o.kinds = value
                        .split(',')
                        .map(|k| {
                            Kind::parse(k)
                                .unwrap_or_else(|| usage_error(&format!("--kinds: unknown {k}")))
                        })
                        .collect()
                }
                _ => usage_error(&format!("unknown option {flag}")),
            }
        }
        o
    }
}

/// What is measured: a kind of session, served by this bench or by a baseline build of it.
struct Subject {
    kind: Kind,
    label: String,
    /// The executable whose `serve` runs the sessions; `None`: this one.
    exe: Option<String>,
}

impl Subject {
    fn all(o: &Options) -> Vec<Subject> {
        let mut all: Vec<Subject> = o
            .kinds
            .iter()
            .filter(|k| o.caller_audio || **k != Kind::Echo)
            .map(|k| Subject {
                kind: *k,
                label: k.name().into(),
                exe: None,
            })
            .collect();
        if let Some(exe) = &o.baseline {
            for k in o.kinds.iter().filter(|k| **k != Kind::Echo) {
                all.push(Subject {
                    kind: *k,
                    label: format!("{}-base", k.name()),
                    exe: Some(exe.clone()),
                });
            }
        }
        all
    }
}

/// What sits behind the sessions' ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Echo,
    Twilio,
    Asterisk,
}

impl Kind {
    fn parse(name: &str) -> Option<Kind> {
        match name {
            "echo" => Some(Kind::Echo),
            "twilio" => Some(Kind::Twilio),
            "asterisk" => Some(Kind::Asterisk),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Twilio => "twilio",
            Kind::Asterisk => "asterisk",
        }
    }

    fn dialect(self) -> Option<Dialect> {
        match self {
            Kind::Echo => None,
            Kind::Twilio => Some(Dialect::Twilio),
            Kind::Asterisk => Some(Dialect::Asterisk),
        }
    }

    /// Whether a thread of the serving process is a session thread of this kind (the product
    /// names them `echo-<call>` and `bot-<call>`; a bot's connector, `bot-connect-<call>`, is
    /// gone once connected).
    fn is_session_thread(self, comm: &str) -> bool {
        match self {
            Kind::Echo => comm.starts_with("echo-"),
            _ => comm.starts_with("bot-") && !comm.starts_with("bot-connect"),
        }
    }
}

// --- clocks -------------------------------------------------------------------------------------

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// This process's monotonic clock, ns.
fn mono_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// CLOCK_REALTIME in ns: the clock of the kernel's receive timestamps.
fn real_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// --- voicebot1's side: `serve` -----------------------------------------------------------------

/// `serve`: voicebot1's sessions, as a call has them: each pinned to its Asterisk address, each
/// bot bridge connecting to the bot at once. Prints `ready RSS_KB_BEFORE CONNECTED FAILED` once
/// every bot has connected (or failed); stops every session when stdin closes.
fn serve(args: &[String]) {
    let [kind, first, sessions, peers, url] = args else {
        usage_error("serve takes 5 arguments")
    };
    let bad = |what: &str| -> ! { usage_error(&format!("serve: bad {what}")) };
    let kind = Kind::parse(kind).unwrap_or_else(|| bad("KIND"));
    let first: u16 = first.parse().unwrap_or_else(|_| bad("FIRST_PORT"));
    let sessions: u16 = sessions.parse().unwrap_or_else(|_| bad("SESSIONS"));
    let peers: Vec<SocketAddr> = peers
        .split(',')
        .map(|p| SocketAddr::new(LOCAL, p.parse().unwrap_or_else(|_| bad("PEER_PORTS"))))
        .collect();
    let (pool, failures) = SocketPool::bind(LOCAL, first, first + sessions - 1);
    if let Some(f) = failures.first() {
        eprintln!("serve: cannot bind port {}: {}", f.port, f.error);
        std::process::exit(1);
    }
    let rss_before = rss_kb(std::process::id());
    let spec = kind.dialect().map(|dialect| {
        Arc::new(BotSpec {
            name: "bench".into(),
            url: url.clone(),
            dialect,
            format: Format::Ulaw,
            json_control: true,
            authorization: None,
            tls: None,
            connect_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(5),
            pong_timeout: Duration::from_secs(5),
            max_queue_frames: 1000,
            metrics: 0,
        })
    });
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let live: Vec<Box<dyn Session>> = (0..sessions)
        .map(|i| {
            let lease = pool.lease().expect("a free socket");
            let session: Box<dyn Session> = match &spec {
                None => Box::new(Echo::start(lease, LOCAL, &i.to_string()).expect("echo thread")),
                Some(spec) => {
                    let (connected, failed) = (Arc::clone(&connected), Arc::clone(&failed));
                    let notify = Box::new(move |event: BotEvent| match event {
                        BotEvent::Connected(_) => {
                            connected.fetch_add(1, Ordering::Relaxed);
                        }
                        BotEvent::Failed(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    });
                    Box::new(
                        BotBridge::start(lease, LOCAL, Arc::clone(spec), opening(i), notify)
                            .expect("bot session thread"),
                    )
                }
            };
            session.set_peer(peers[usize::from(i) % peers.len()]);
            // As a call does once the caller and the media channel are bridged: a bot's audio
            // is queued, not played, until then.
            session.caller_bridged();
            session
        })
        .collect();
    if spec.is_some() {
        let deadline = Instant::now() + Duration::from_secs(60);
        while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed)
            < usize::from(sessions)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!(
        "ready {rss_before} {} {}",
        connected.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    std::io::stdout().flush().ok();
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    let stopping = Instant::now();
    let lines: Vec<String> = live.into_iter().map(|s| s.finish()).collect();
    eprintln!(
        "  (voicebot1 serve {}: {sessions} sessions stopped in {} ms, pool {}/{} free; {})",
        kind.name(),
        stopping.elapsed().as_millis(),
        pool.free(),
        pool.total(),
        summarize(&lines)
    );
}

/// A session's opening: its number is its call id (`start.customParameters.call_id`,
/// MEDIA_START's `channel_id`), which the load bot reads to know the session.
fn opening(i: u16) -> Opening {
    Opening {
        call_id: i.to_string(),
        bot: "bench".into(),
        channel_name: format!("PJSIP/bench-{i:08x}"),
        caller_number: "+15550100000".into(),
        caller_name: "Bench".into(),
        exten: "3308487".into(),
        params: vec![("bench".into(), "1".into())],
        ids: StreamIds::from_seed(0x5eed_0000 + u128::from(i)),
    }
}

/// The sessions' lines (`bot bench: N frames to the bot, M from it, K dropped (why)…`) summed.
fn summarize(lines: &[String]) -> String {
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = Vec::new();
    for line in lines {
        for part in line.split([',', ';']) {
            let part = part.trim();
            if let Some((n, why)) = part.split_once(" dropped (") {
                if let Ok(n) = n.parse::<u64>() {
                    *dropped
                        .entry(why.trim_end_matches(')').to_string())
                        .or_default() += n;
                }
            }
        }
        if line.contains("; failed:") {
            failed.push(line);
        }
    }
    let mut s = if dropped.is_empty() {
        "nothing dropped".to_string()
    } else {
        dropped
            .iter()
            .map(|(why, n)| format!("{n} dropped ({why})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(first) = failed.first() {
        s.push_str(&format!("; {} failed, e.g. {first}", failed.len()));
    }
    s
}

// --- /proc --------------------------------------------------------------------------------------

/// A thread's CPU time so far: on-CPU ns (`schedstat`'s first field: exact, where `stat`'s
/// utime and stime are 10 ms ticks, and their split proved meaningless on a VM), and how often
/// it went to sleep (`status`'s voluntary_ctxt_switches: its wake-ups).
#[derive(Clone, Copy, Default)]
struct ThreadCpu {
    ns: u64,
    sleeps: u64,
}

/// The CPU time of each live thread of `pid` whose name `keep` accepts (the main thread, named
/// after the program, never).
fn thread_cpu(pid: u32, keep: impl Fn(&str) -> bool) -> HashMap<u32, ThreadCpu> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            if tid == pid {
                return None;
            }
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            if !keep(comm.trim_end()) {
                return None;
            }
            let schedstat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            let sleeps = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Some((
                tid,
                ThreadCpu {
                    ns: schedstat.split_whitespace().next()?.parse().ok()?,
                    sleeps,
                },
            ))
        })
        .collect()
}

/// What `after` used since `before`, summed over the threads of `before` (all live throughout).
fn cpu_used(before: &HashMap<u32, ThreadCpu>, after: &HashMap<u32, ThreadCpu>) -> ThreadCpu {
    let mut used = ThreadCpu::default();
    for (tid, b) in before {
        if let Some(a) = after.get(tid) {
            used.ns += a.ns.saturating_sub(b.ns);
            used.sleeps += a.sleeps.saturating_sub(b.sleeps);
        }
    }
    used
}

/// On-CPU time of every live thread of `pid`, the main thread's included, in ns.
fn process_cpu_ns(pid: u32) -> u64 {
    let main = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    main + thread_cpu(pid, |_| true)
        .values()
        .map(|t| t.ns)
        .sum::<u64>()
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

// --- kernel receive timestamps ------------------------------------------------------------------

/// Asks the kernel to stamp what `fd` receives (`SO_TIMESTAMPNS`, CLOCK_REALTIME).
fn enable_timestamps(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::SO_TIMESTAMPNS, 1)
}

fn set_int_option(fd: RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What one `recvmsg` returned: the bytes, the sender's port (datagrams), the kernel's receive
/// timestamp (CLOCK_REALTIME ns; for a stream, that of the last segment read; 0 when none).
struct Received {
    len: usize,
    port: u16,
    stamp: u64,
}

fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: all-zero bytes are valid values of these plain C structs.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s: aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points to a live buffer of the length given with it.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = 0;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within the length it
    // set; the timestamp is read unaligned from inside it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let port = if msg.msg_namelen as usize >= std::mem::size_of::<libc::sockaddr_in>() {
        u16::from_be(addr.sin_port)
    } else {
        0
    };
    Ok(Received {
        len: n as usize,
        port,
        stamp,
    })
}

/// The load bot's TCP stream: read with `recvmsg`, keeping the kernel's timestamp of the last
/// segment read, so that a message's arrival is known whatever the load bot's own delays.
struct StampedTcp {
    stream: TcpStream,
    last_stamp: u64,
}

impl Read for StampedTcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = recv_stamped(self.stream.as_raw_fd(), buf)?;
        if r.len > 0 && r.stamp != 0 {
            self.last_stamp = r.stamp;
        }
        Ok(r.len)
    }
}

impl Write for StampedTcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

// --- what the parent's threads share ------------------------------------------------------------

struct Shared {
    kind: Kind,
    /// The load bot alone, behind voicebot1 itself: call ids are no session numbers and the
    /// caller audio is not the fake Asterisk's.
    standalone: bool,
    sessions: usize,
    first_port: u16,
    lead: usize,
    clear_frames: usize,
    /// The fake Asterisk sends the caller's audio.
    caller_audio: bool,
    /// The load bot sends audio.
    bot_audio: bool,
    /// The audio flows in the measured window.
    measuring: AtomicBool,
    /// The fake Asterisk stops sending.
    stop_sending: AtomicBool,
    /// The receivers and the load bot stop.
    stop: AtomicBool,
    /// The clear test starts then (this process's monotonic ns; 0: not yet).
    clear_from: AtomicU64,
    /// When each session's clear left the load bot (CLOCK_REALTIME ns; 0: not yet).
    clear_written: Vec<AtomicU64>,
    /// Caller frames sent in the measured window.
    caller_sent: AtomicU64,
}

impl Shared {
    fn new(kind: Kind, o: &Options, first_port: u16) -> Shared {
        Shared {
            kind,
            standalone: false,
            sessions: usize::from(o.sessions),
            first_port,
            lead: o.lead,
            clear_frames: if o.bot_audio { o.clear_frames } else { 0 },
            caller_audio: o.caller_audio,
            bot_audio: o.bot_audio,
            measuring: AtomicBool::new(false),
            stop_sending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            clear_from: AtomicU64::new(0),
            clear_written: (0..o.sessions).map(|_| AtomicU64::new(0)).collect(),
            caller_sent: AtomicU64::new(0),
        }
    }
}

// --- the fake Asterisk --------------------------------------------------------------------------

fn fake_asterisk_sockets() -> Vec<UdpSocket> {
    (0..FAKE_ASTERISK_SOCKETS)
        .map(|_| {
            let sock = UdpSocket::bind((LOCAL, 0)).expect("bind the fake Asterisk");
            let fd = sock.as_raw_fd();
            // Room for a second of every session's packets if a reader is held up (root may
            // exceed rmem_max).
            set_int_option(fd, libc::SO_RCVBUFFORCE, 16 << 20)
                .or_else(|_| set_int_option(fd, libc::SO_RCVBUF, 16 << 20))
                .expect("receive buffer");
            enable_timestamps(fd).expect("SO_TIMESTAMPNS");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            sock
        })
        .collect()
}

/// A caller's RTP packet as Asterisk sends it (PT 0, 20 ms of μ-law), stamped.
fn caller_packet(session: u32, n: u32, measured: bool) -> [u8; 12 + FRAME] {
    let mut p = [0xffu8; 12 + FRAME];
    p[0] = 0x80;
    p[1] = 0; // PCMU
    p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
    p[4..8].copy_from_slice(&n.wrapping_mul(FRAME as u32).to_be_bytes());
    p[8..12].copy_from_slice(&(session + 1).to_be_bytes());
    let payload = &mut p[12..];
    payload[..4].copy_from_slice(&CALLER_MAGIC);
    payload[4..8].copy_from_slice(&session.to_be_bytes());
    payload[8..12].copy_from_slice(&n.to_be_bytes());
    payload[12..20].copy_from_slice(&mono_ns().to_be_bytes());
    payload[20..28].copy_from_slice(&real_ns().to_be_bytes());
    payload[28] = u8::from(measured);
    p
}

/// A caller frame read back: (session, sent monotonic ns, sent realtime ns, measured).
fn read_caller_frame(payload: &[u8]) -> Option<(u32, u64, u64, bool)> {
    if payload.len() < 29 || payload[..4] != CALLER_MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_be_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    Some((u32_at(4), u64_at(12), u64_at(20), payload[28] == 1))
}

/// Every session's 50 packets a second, from its fake Asterisk socket to its port, the sessions
/// spread evenly over the 20 ms.
fn send_caller_audio(socks: Vec<UdpSocket>, shared: Arc<Shared>) {
    let sessions = shared.sessions as u64;
    let interval = Duration::from_nanos(PTIME_NS / sessions);
    let (mut next, mut i) = (Instant::now(), 0u64);
    while !shared.stop_sending.load(Ordering::Relaxed) {
        if !shared.caller_audio {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let now = Instant::now();
        while next <= now {
            let session = (i % sessions) as usize;
            let measured = shared.measuring.load(Ordering::Relaxed);
            let packet = caller_packet(session as u32, (i / sessions) as u32, measured);
            let to = (LOCAL, shared.first_port + session as u16);
            if socks[session % socks.len()].send_to(&packet, to).is_ok() && measured {
                shared.caller_sent.fetch_add(1, Ordering::Relaxed);
            }
            i += 1;
            next += interval;
        }
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .max(Duration::from_micros(50)),
        );
    }
}

/// What a fake Asterisk socket saw of voicebot1's RTP.
#[derive(Default)]
struct RxStats {
    /// |spacing − 20 ms| of consecutive packets of a session in the window, ns.
    spacing_dev: Vec<u32>,
    /// The echo's round trip (sent → echoed back, kernel timestamp), ns.
    round_trip: Vec<u32>,
    packets: u64,
    /// Sequence numbers skipped (lost or reordered packets) in the window.
    gaps: u64,
    /// Packets with the marker bit in the window: the playout ran dry and started again.
    spurts: u64,
    /// Datagrams from no session's port, or not ours.
    foreign: u64,
    /// Per session: arrival of the old generation's frames during the clear test, and of the
    /// first frame of the new one.
    clear: HashMap<usize, ClearSeen>,
}

#[derive(Default)]
struct ClearSeen {
    old: Vec<u64>,
    first_new: u64,
}

/// Reads one fake Asterisk socket until `stop`.
fn receive_rtp(sock: UdpSocket, shared: Arc<Shared>) -> RxStats {
    let mut stats = RxStats::default();
    // Per session: the last packet's arrival and sequence number.
    let mut last: Vec<Option<(u64, u16)>> = vec![None; shared.sessions];
    let mut buf = [0u8; 2048];
    let fd = sock.as_raw_fd();
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(r) = recv_stamped(fd, &mut buf) else {
            continue;
        };
        let session = usize::from(r.port.wrapping_sub(shared.first_port));
        if session >= shared.sessions || r.len < 12 + 13 {
            stats.foreign += 1;
            continue;
        }
        let packet = &buf[..r.len];
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let marker = packet[1] & 0x80 != 0;
        let measuring = shared.measuring.load(Ordering::Relaxed);
        if measuring {
            stats.packets += 1;
            if marker {
                stats.spurts += 1;
            }
            match last[session] {
                Some((at, prev)) if seq == prev.wrapping_add(1) && !marker => {
                    let dev = r.stamp.abs_diff(at + PTIME_NS);
                    stats.spacing_dev.push(dev.min(u64::from(u32::MAX)) as u32);
                }
                Some(_) if !marker => stats.gaps += 1,
                _ => {}
            }
        }
        last[session] = Some((r.stamp, seq));
        let payload = &packet[12..];
        if let Some((_, _, sent_real, true)) = read_caller_frame(payload) {
            // The echo's round trip.
            let rtt = r.stamp.saturating_sub(sent_real);
            stats.round_trip.push(rtt.min(u64::from(u32::MAX)) as u32);
        } else if payload[..4] == BOT_MAGIC {
            if shared.clear_from.load(Ordering::Relaxed) != 0 {
                let seen = stats.clear.entry(session).or_default();
                match payload[12] {
                    0 => seen.old.push(r.stamp),
                    _ if seen.first_new == 0 => seen.first_new = r.stamp,
                    _ => {}
                }
            }
        } else {
            stats.foreign += 1;
        }
    }
    stats
}

// --- the load bot -------------------------------------------------------------------------------

/// A bot frame: whose, which, and of which clear generation.
fn bot_frame(session: usize, n: u32, generation: u8) -> [u8; FRAME] {
    let mut f = [0xffu8; FRAME];
    f[..4].copy_from_slice(&BOT_MAGIC);
    f[4..8].copy_from_slice(&(session as u32).to_be_bytes());
    f[8..12].copy_from_slice(&n.to_be_bytes());
    f[12] = generation;
    f
}

#[derive(Deserialize)]
struct TwilioIn<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    media: Option<TwilioMediaIn<'a>>,
    start: Option<TwilioStartIn>,
}

#[derive(Deserialize)]
struct TwilioMediaIn<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TwilioStartIn {
    stream_sid: String,
    custom_parameters: HashMap<String, String>,
}

#[derive(Deserialize)]
struct AsteriskEventIn {
    event: String,
    channel_id: Option<String>,
}

/// Where a connection is in the clear test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClearStep {
    /// Steady audio; the burst comes at the test's start plus this session's offset.
    Before,
    /// The burst is queued; the clear goes at this time (monotonic ns).
    Burst(u64),
    /// The clear is written but not yet all out.
    Clearing,
    Done,
}

/// One call's WebSocket, from the load bot's side.
struct Conn {
    ws: WebSocket<StampedTcp>,
    kind: Kind,
    session: Option<usize>,
    stream_sid: String,
    /// The next steady frame is due then (monotonic ns); `None` before the opening and while
    /// the clear test holds the audio back.
    next_send: Option<u64>,
    /// The lead is to go with the next frame.
    lead_due: bool,
    frame_no: u32,
    generation: u8,
    clear: ClearStep,
    /// Written but not flushed yet.
    dirty: bool,
    /// Waiting for EPOLLOUT.
    writing: bool,
    closed: bool,
}

#[derive(Default)]
struct BotStats {
    /// Caller frame sent → its message's TCP data received (kernel timestamp), ns.
    latency_kernel: Vec<u32>,
    /// Caller frame sent → its message parsed by the load bot, ns.
    latency_user: Vec<u32>,
    /// Caller frames sent in the window and received.
    caller_frames: u64,
    bot_frames: u64,
    bad: u64,
    connections: usize,
}

impl BotStats {
    fn merge(&mut self, other: BotStats) {
        self.latency_kernel.extend(other.latency_kernel);
        self.latency_user.extend(other.latency_user);
        self.caller_frames += other.caller_frames;
        self.bot_frames += other.bot_frames;
        self.bad += other.bad;
        self.connections += other.connections;
    }
}

impl Conn {
    fn new(ws: WebSocket<StampedTcp>, kind: Kind) -> Conn {
        Conn {
            ws,
            kind,
            session: None,
            stream_sid: String::new(),
            next_send: None,
            lead_due: true,
            frame_no: 0,
            generation: 0,
            clear: ClearStep::Before,
            dirty: false,
            writing: false,
            closed: false,
        }
    }

    fn fd(&self) -> RawFd {
        self.ws.get_ref().stream.as_raw_fd()
    }

    /// The opening was read: the audio starts after an offset that spreads the sessions'
    /// frames over the 20 ms, as their calls would be.
    fn begin(&mut self, session: usize, shared: &Shared) {
        let session = if shared.standalone {
            self.fd() as usize % shared.sessions
        } else {
            session
        };
        self.session = Some(session);
        let offset = (session * 7919 % shared.sessions) as u64 * PTIME_NS / shared.sessions as u64;
        self.next_send = Some(mono_ns() + offset);
    }

    fn read_all(&mut self, shared: &Shared, stats: &mut BotStats) {
        loop {
            let message = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {
                    continue
                }
                Err(_) => {
                    self.closed = true;
                    return;
                }
            };
            match message {
                Message::Text(text) => self.on_text(&text, shared, stats),
                Message::Binary(data) => match shared.kind {
                    Kind::Asterisk => self.on_caller_audio(&data, shared, stats),
                    _ => stats.bad += 1,
                },
                // tungstenite queued the answer (pong, close).
                Message::Ping(_) | Message::Close(_) => self.dirty = true,
                Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    fn on_text(&mut self, text: &str, shared: &Shared, stats: &mut BotStats) {
        match shared.kind {
            Kind::Twilio => {
                let Ok(m) = serde_json::from_str::<TwilioIn>(text) else {
                    stats.bad += 1;
                    return;
                };
                match &*m.event {
                    "media" => {
                        let mut audio = Vec::with_capacity(FRAME);
                        match m.media.map(|m| BASE64.decode_vec(&*m.payload, &mut audio)) {
                            Some(Ok(())) => self.on_caller_audio(&audio, shared, stats),
                            _ => stats.bad += 1,
                        }
                    }
                    "start" => {
                        let session = m.start.as_ref().and_then(|s| {
                            let id = s.custom_parameters.get("call_id")?;
                            id.parse::<usize>().ok().or(shared.standalone.then_some(0))
                        });
                        match (m.start, session) {
                            (Some(start), Some(session)) if session < shared.sessions => {
                                self.stream_sid = start.stream_sid;
                                self.begin(session, shared);
                            }
                            _ => stats.bad += 1,
                        }
                    }
                    "connected" | "stop" | "mark" | "dtmf" => {}
                    _ => stats.bad += 1,
                }
            }
            _ => {
                let Ok(m) = serde_json::from_str::<AsteriskEventIn>(text) else {
                    stats.bad += 1;
                    return;
                };
                if m.event == "MEDIA_START" {
                    let id = m.channel_id.unwrap_or_default();
                    match id.parse::<usize>().ok().or(shared.standalone.then_some(0)) {
                        Some(session) if session < shared.sessions => self.begin(session, shared),
                        _ => stats.bad += 1,
                    }
                }
            }
        }
    }

    fn on_caller_audio(&mut self, audio: &[u8], shared: &Shared, stats: &mut BotStats) {
        if shared.standalone {
            return;
        }
        let Some((_, sent_mono, sent_real, measured)) = read_caller_frame(audio) else {
            stats.bad += 1;
            return;
        };
        if !measured {
            return;
        }
        stats.caller_frames += 1;
        let kernel = self.ws.get_ref().last_stamp.saturating_sub(sent_real);
        let user = mono_ns().saturating_sub(sent_mono);
        stats
            .latency_kernel
            .push(kernel.min(u64::from(u32::MAX)) as u32);
        stats
            .latency_user
            .push(user.min(u64::from(u32::MAX)) as u32);
    }

    /// Sends `frames` frames of audio in one message.
    fn send_audio(&mut self, frames: usize, stats: &mut BotStats) {
        let Some(session) = self.session else { return };
        let mut audio = Vec::with_capacity(frames * FRAME);
        for _ in 0..frames {
            audio.extend_from_slice(&bot_frame(session, self.frame_no, self.generation));
            self.frame_no += 1;
        }
        stats.bot_frames += frames as u64;
        let message = match self.kind {
            // The shape of Twilio's own docs ("Send a Media message").
            Kind::Twilio => {
                let mut text = String::with_capacity(80 + self.stream_sid.len() + frames * 216);
                text.push_str(r#"{"event":"media","streamSid":""#);
                text.push_str(&self.stream_sid);
                text.push_str(r#"","media":{"payload":""#);
                BASE64.encode_string(&audio, &mut text);
                text.push_str(r#""}}"#);
                Message::Text(text)
            }
            _ => Message::Binary(audio),
        };
        self.write(message);
    }

    fn send_clear(&mut self) {
        let text = match self.kind {
            Kind::Twilio => format!(r#"{{"event":"clear","streamSid":"{}"}}"#, self.stream_sid),
            _ => r#"{"command":"FLUSH_MEDIA"}"#.to_string(),
        };
        self.write(Message::Text(text));
    }

    fn write(&mut self, message: Message) {
        match self.ws.write(message) {
            Ok(()) => self.dirty = true,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.dirty = true
            }
            Err(_) => self.closed = true,
        }
    }

    /// The next time this connection has something to do (monotonic ns).
    fn due(&self, shared: &Shared) -> Option<u64> {
        let clear = match self.clear {
            ClearStep::Before => self.burst_at(shared),
            ClearStep::Burst(at) => Some(at),
            ClearStep::Clearing | ClearStep::Done => None,
        };
        match (self.next_send, clear) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When this session's clear test starts: the sessions are spread over 2 s.
    fn burst_at(&self, shared: &Shared) -> Option<u64> {
        let from = shared.clear_from.load(Ordering::Relaxed);
        let session = self.session?;
        (from != 0 && shared.clear_frames > 0)
            .then(|| from + session as u64 * 2_000_000_000 / shared.sessions as u64)
    }

    /// Sends what is due at `now`: steady frames (all that are due, so that the rate holds
    /// whatever the wake-ups), the clear test's burst and its clear.
    fn act(&mut self, now: u64, shared: &Shared, stats: &mut BotStats) {
        if self.closed || self.session.is_none() || !shared.bot_audio {
            return;
        }
        while let Some(at) = self.next_send.filter(|at| *at <= now) {
            let frames = if std::mem::replace(&mut self.lead_due, false) {
                shared.lead
            } else {
                1
            };
            self.send_audio(frames, stats);
            self.next_send = Some(at + PTIME_NS);
        }
        match self.clear {
            ClearStep::Before if self.burst_at(shared).is_some_and(|at| at <= now) => {
                // A long answer, faster than real time, as a TTS sends it.
                self.next_send = None;
                let mut left = shared.clear_frames;
                while left > 0 {
                    let n = left.min(BURST_MESSAGE_FRAMES);
                    self.send_audio(n, stats);
                    left -= n;
                }
                self.clear = ClearStep::Burst(now + 500_000_000);
            }
            ClearStep::Burst(at) if at <= now => {
                // The caller interrupts: clear, then a new answer.
                self.send_clear();
                self.generation = 1;
                self.clear = ClearStep::Clearing;
            }
            _ => {}
        }
    }

    /// Pushes what is written out; registers for EPOLLOUT while it cannot.
    fn flush(&mut self, ep: RawFd, shared: &Shared) {
        if !self.dirty || self.closed {
            return;
        }
        let done = match self.ws.flush() {
            Ok(()) => true,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => {
                self.closed = true;
                return;
            }
        };
        if done {
            self.dirty = false;
            if self.clear == ClearStep::Clearing {
                // The clear is in voicebot1's socket now.
                if let Some(session) = self.session {
                    shared.clear_written[session].store(real_ns(), Ordering::Relaxed);
                }
                self.clear = ClearStep::Done;
                self.lead_due = true;
                self.next_send = Some(mono_ns());
            }
        }
        if done == self.writing {
            self.writing = !done;
            let events = libc::EPOLLIN as u32 | if done { 0 } else { libc::EPOLLOUT as u32 };
            epoll_ctl(ep, libc::EPOLL_CTL_MOD, self.fd(), events);
        }
    }
}

fn epoll_ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32) {
    let mut event = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: `event` is a live epoll_event; the kernel copies it.
    unsafe { libc::epoll_ctl(ep, op, fd, &mut event) };
}

/// The load bot: a listening socket, an acceptor thread (the upgrades) and epoll threads that
/// own the connections.
struct LoadBot {
    port: u16,
    acceptor: JoinHandle<()>,
    workers: Vec<JoinHandle<BotStats>>,
}

struct Worker {
    ep: RawFd,
    inbox: Mutex<Vec<Conn>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: the epoll descriptor is this worker's own, closed once.
        unsafe { libc::close(self.ep) };
    }
}

impl LoadBot {
    fn start(port: u16, shared: Arc<Shared>) -> LoadBot {
        let listener = listen(port);
        let port = listener.local_addr().expect("load bot address").port();
        let workers: Vec<Arc<Worker>> = (0..LOAD_BOT_THREADS)
            .map(|_| {
                // SAFETY: plain system call; the descriptor is owned by the Worker.
                let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
                assert!(ep >= 0, "epoll_create1: {}", io::Error::last_os_error());
                Arc::new(Worker {
                    ep,
                    inbox: Mutex::new(Vec::new()),
                })
            })
            .collect();
        let acceptor = {
            let (workers, shared) = (workers.clone(), Arc::clone(&shared));
            std::thread::Builder::new()
                .name("lb-accept".into())
                .spawn(move || accept_connections(listener, &workers, &shared))
                .expect("load bot acceptor")
        };
        let workers = workers
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("lb-{i}"))
                    .spawn(move || run_worker(&w, &shared))
                    .expect("load bot thread")
            })
            .collect();
        LoadBot {
            port,
            acceptor,
            workers,
        }
    }

    /// Waits for the threads (after `shared.stop`).
    fn join(self) -> BotStats {
        let _ = self.acceptor.join();
        let mut stats = BotStats::default();
        for w in self.workers {
            stats.merge(w.join().expect("load bot thread"));
        }
        stats
    }
}

/// A listening socket with room for every session's connection at once.
fn listen(port: u16) -> TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("load bot socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&SocketAddr::new(LOCAL, port).into())
        .unwrap_or_else(|e| panic!("load bot: cannot listen on port {port}: {e}"));
    socket.listen(4096).expect("listen");
    socket.into()
}

fn accept_connections(listener: TcpListener, workers: &[Arc<Worker>], shared: &Shared) {
    listener.set_nonblocking(true).expect("non-blocking");
    let mut accepted = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => {
                eprintln!("load bot: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let ready = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_nodelay(true))
            .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(5))))
            .and_then(|()| enable_timestamps(stream.as_raw_fd()));
        if let Err(e) = ready {
            eprintln!("load bot: configuring a connection: {e}");
            continue;
        }
        let ws = match tungstenite::accept(StampedTcp {
            stream,
            last_stamp: 0,
        }) {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("load bot: upgrade: {e}");
                continue;
            }
        };
        if let Err(e) = ws.get_ref().stream.set_nonblocking(true) {
            eprintln!("load bot: configuring a connection: {e}");
            continue;
        }
        let worker = &workers[accepted % workers.len()];
        accepted += 1;
        let conn = Conn::new(ws, shared.kind);
        let fd = conn.fd();
        worker.inbox.lock().expect("inbox").push(conn);
        // After the push: an event for `fd` finds the connection.
        epoll_ctl(worker.ep, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32);
    }
}

fn run_worker(worker: &Worker, shared: &Shared) -> BotStats {
    let mut stats = BotStats::default();
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    while !shared.stop.load(Ordering::Relaxed) {
        for conn in worker.inbox.lock().expect("inbox").drain(..) {
            stats.connections += 1;
            conns.insert(conn.fd(), conn);
        }
        let now = mono_ns();
        let due = conns.values().filter_map(|c| c.due(shared)).min();
        let timeout_ms = due.map_or(10, |d| d.saturating_sub(now).div_ceil(1_000_000).min(10));
        // SAFETY: `events` is a live buffer of `events.len()` epoll_event.
        let n = unsafe {
            libc::epoll_wait(
                worker.ep,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                timeout_ms as libc::c_int,
            )
        };
        for event in &events[..n.max(0) as usize] {
            let fd = event.u64 as RawFd;
            if let Some(conn) = conns.get_mut(&fd) {
                conn.read_all(shared, &mut stats);
                if event.events & libc::EPOLLOUT as u32 != 0 {
                    conn.dirty = true;
                }
            }
        }
        let now = mono_ns();
        for conn in conns.values_mut() {
            conn.act(now, shared, &mut stats);
            conn.flush(worker.ep, shared);
        }
        // Closed connections leave the epoll set when their socket is dropped.
        conns.retain(|_, c| !c.closed);
    }
    stats
}

/// `loadbot`: the load bot alone, for voicebot1 itself (`bench-bot.sh --setup`, which runs it
/// as a helper: no stdin, stopped by SIGTERM): it reads what every call sends and sends its
/// audio; there is no fake Asterisk to time anything.
fn standalone_load_bot(args: &[String]) {
    let (kind, port, lead) = match args {
        [kind, port] => (kind, port, "5"),
        [kind, port, flag, lead] if flag == "--lead" => (kind, port, lead.as_str()),
        _ => usage_error("loadbot takes twilio|asterisk PORT [--lead N]"),
    };
    let kind = Kind::parse(kind)
        .filter(|k| *k != Kind::Echo)
        .unwrap_or_else(|| usage_error("loadbot: twilio or asterisk"));
    let port: u16 = port
        .parse()
        .unwrap_or_else(|_| usage_error("loadbot: bad PORT"));
    let shared = Arc::new(Shared {
        kind,
        standalone: true,
        // Only spreads the calls' audio over the 20 ms (`Conn::begin`).
        sessions: 1000,
        first_port: 0,
        lead: lead
            .parse()
            .unwrap_or_else(|_| usage_error("loadbot: bad --lead")),
        clear_frames: 0,
        caller_audio: false,
        bot_audio: true,
        measuring: AtomicBool::new(false),
        stop_sending: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        clear_from: AtomicU64::new(0),
        clear_written: Vec::new(),
        caller_sent: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .expect("signal handler");
    let bot = LoadBot::start(port, Arc::clone(&shared));
    println!("ready {}", bot.port);
    std::io::stdout().flush().ok();
    let _ = stop_rx.recv();
    shared.stop.store(true, Ordering::Relaxed);
    let stats = bot.join();
    eprintln!(
        "  (load bot: {} connections, {} bot frames sent, {} messages not understood)",
        stats.connections, stats.bot_frames, stats.bad
    );
}

// --- one kind's run -----------------------------------------------------------------------------

/// A running `serve`; closing its stdin stops it.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    rss_before_kb: u64,
    connected: usize,
    failed: usize,
}

impl Server {
    fn start(subject: &Subject, first: u16, sessions: u16, peers: &str, url: &str) -> Server {
        let kind = subject.kind;
        let exe = match &subject.exe {
            Some(exe) => exe.into(),
            None => std::env::current_exe().expect("current exe"),
        };
        let mut child = Command::new(exe)
            .args([
                "serve",
                kind.name(),
                &first.to_string(),
                &sessions.to_string(),
                peers,
                url,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start serve");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("read ready");
        let fields: Vec<u64> = ready
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("serve {} did not start: {ready:?}", kind.name()))
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let stdin = child.stdin.take();
        Server {
            child,
            stdin,
            rss_before_kb: fields.first().copied().unwrap_or(0),
            connected: fields.get(1).copied().unwrap_or(0) as usize,
            failed: fields.get(2).copied().unwrap_or(0) as usize,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one kind measured in one round.
#[derive(Clone, Debug, Default)]
struct Figures {
    /// The session threads' CPU per second of a session, µs.
    cpu_us_per_session_s: f64,
    /// The same as % of one core, all sessions.
    cpu_percent: f64,
    /// The serving process's, all threads.
    process_percent: f64,
    /// The session threads' wake-ups per second of a session.
    wakeups_per_session_s: f64,
    /// This process's (the fake Asterisk's and the load bot's), % of one core.
    load_percent: f64,
    /// The caller frames the fake Asterisk sent, % of 50 per second per session: under 100,
    /// the machine could not keep up with the load and the figures are those of an overload.
    offered_percent: f64,
    rss_kb_per_session: f64,
    /// Caller frame in → bot frame out (the echo: the round trip), kernel timestamps, µs.
    latency_p50_us: f64,
    latency_p99_us: f64,
    /// The same parsed by the load bot.
    latency_user_p50_us: f64,
    latency_user_p99_us: f64,
    /// |spacing − 20 ms| of the RTP played to the fake Asterisk, µs.
    jitter_p50_us: f64,
    jitter_p99_us: f64,
    jitter_max_us: f64,
    /// Frames of the old generation that arrived after the clear was written: p50, p99, max
    /// over the sessions tested, and how many were.
    clear_p50: f64,
    clear_p99: f64,
    clear_max: f64,
    clear_sessions: usize,
    /// Old frames after a new one (the queue not emptied).
    clear_old_after_new: u64,
    caller_sent: u64,
    caller_lost: u64,
    played: u64,
    gaps: u64,
    spurts: u64,
    connected: usize,
    failed: usize,
}

fn run_subject(subject: &Subject, o: &Options, first: u16) -> Figures {
    let kind = subject.kind;
    let shared = Arc::new(Shared::new(kind, o, first));
    let socks = fake_asterisk_sockets();
    let peers = socks
        .iter()
        .map(|s| s.local_addr().expect("address").port().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let load_bot = (kind != Kind::Echo).then(|| LoadBot::start(0, Arc::clone(&shared)));
    let url = load_bot.as_ref().map_or("-".to_string(), |b| {
        format!("ws://127.0.0.1:{}/bench", b.port)
    });
    let receivers: Vec<JoinHandle<RxStats>> = socks
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (sock, shared) = (s.try_clone().expect("clone"), Arc::clone(&shared));
            std::thread::Builder::new()
                .name(format!("fa-recv-{i}"))
                .spawn(move || receive_rtp(sock, shared))
                .expect("receiver")
        })
        .collect();
    let server = Server::start(subject, first, o.sessions, &peers, &url);
    let pid = server.pid();
    let sender = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("fa-send".into())
            .spawn(move || send_caller_audio(socks, shared))
            .expect("sender")
    };
    std::thread::sleep(Duration::from_secs(o.warmup));

    let threads0 = thread_cpu(pid, |c| kind.is_session_thread(c));
    let process0 = process_cpu_ns(pid);
    let load0 = process_cpu_ns(std::process::id());
    let since = Instant::now();
    shared.measuring.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(o.seconds));
    shared.measuring.store(false, Ordering::SeqCst);
    let elapsed = since.elapsed().as_nanos() as f64;
    let threads1 = thread_cpu(pid, |c| kind.is_session_thread(c));
    let process1 = process_cpu_ns(pid);
    let load1 = process_cpu_ns(std::process::id());
    let rss = rss_kb(pid);
    let cpu = cpu_used(&threads0, &threads1);
    let used = cpu.ns;
    if threads0.len() != usize::from(o.sessions) {
        eprintln!(
            "  ({}: {} session threads found, {} sessions)",
            kind.name(),
            threads0.len(),
            o.sessions
        );
    }

    // The last frames of the window arrive, then the clear test (the bots).
    std::thread::sleep(Duration::from_millis(200));
    if kind != Kind::Echo && shared.clear_frames > 0 {
        shared.clear_from.store(mono_ns(), Ordering::SeqCst);
        // Bursts spread over 2 s, the clear 0.5 s after each, then a second of new audio.
        std::thread::sleep(Duration::from_millis(3_700));
    }
    shared.stop_sending.store(true, Ordering::SeqCst);
    sender.join().expect("sender");
    let (connected, failed) = (server.connected, server.failed);
    let rss_before = server.rss_before_kb;
    server.stop();
    shared.stop.store(true, Ordering::SeqCst);
    let bot = load_bot.map(LoadBot::join).unwrap_or_default();
    let mut rx = RxStats::default();
    for r in receivers {
        let r = r.join().expect("receiver");
        rx.spacing_dev.extend(r.spacing_dev);
        rx.round_trip.extend(r.round_trip);
        rx.packets += r.packets;
        rx.gaps += r.gaps;
        rx.spurts += r.spurts;
        rx.foreign += r.foreign;
        rx.clear.extend(r.clear);
    }

    let sessions = f64::from(o.sessions);
    let us = |ns: u32| f64::from(ns) / 1e3;
    let (latency, latency_user) = match kind {
        Kind::Echo => (sorted(rx.round_trip), Vec::new()),
        _ => (sorted(bot.latency_kernel), sorted(bot.latency_user)),
    };
    let jitter = sorted(rx.spacing_dev);
    let caller_sent = shared.caller_sent.load(Ordering::SeqCst);
    let caller_got = match kind {
        Kind::Echo => latency.len() as u64,
        _ => bot.caller_frames,
    };
    let mut clear_counts: Vec<u32> = Vec::new();
    let mut clear_old_after_new = 0;
    for (session, seen) in &rx.clear {
        let written = shared.clear_written[*session].load(Ordering::SeqCst);
        if written == 0 {
            continue;
        }
        clear_counts.push(seen.old.iter().filter(|t| **t > written).count() as u32);
        if seen.first_new != 0 {
            clear_old_after_new += seen.old.iter().filter(|t| **t > seen.first_new).count() as u64;
        }
    }
    let clear_counts = sorted(clear_counts);
    Figures {
        cpu_us_per_session_s: used as f64 / 1e3 / sessions / (elapsed / 1e9),
        cpu_percent: used as f64 / elapsed * 100.0,
        process_percent: process1.saturating_sub(process0) as f64 / elapsed * 100.0,
        wakeups_per_session_s: cpu.sleeps as f64 / sessions / (elapsed / 1e9),
        load_percent: load1.saturating_sub(load0) as f64 / elapsed * 100.0,
        offered_percent: if o.caller_audio {
            caller_sent as f64 * 100.0 / (sessions * 50.0 * elapsed / 1e9)
        } else {
            100.0
        },
        rss_kb_per_session: rss.saturating_sub(rss_before) as f64 / sessions,
        latency_p50_us: us(percentile(&latency, 0.5)),
        latency_p99_us: us(percentile(&latency, 0.99)),
        latency_user_p50_us: us(percentile(&latency_user, 0.5)),
        latency_user_p99_us: us(percentile(&latency_user, 0.99)),
        jitter_p50_us: us(percentile(&jitter, 0.5)),
        jitter_p99_us: us(percentile(&jitter, 0.99)),
        jitter_max_us: us(jitter.last().copied().unwrap_or(0)),
        clear_p50: f64::from(percentile(&clear_counts, 0.5)),
        clear_p99: f64::from(percentile(&clear_counts, 0.99)),
        clear_max: f64::from(clear_counts.last().copied().unwrap_or(0)),
        clear_sessions: clear_counts.len(),
        clear_old_after_new,
        caller_sent,
        caller_lost: caller_sent.saturating_sub(caller_got),
        played: rx.packets,
        gaps: rx.gaps,
        spurts: rx.spurts,
        connected: if kind == Kind::Echo {
            usize::from(o.sessions)
        } else {
            connected
        },
        failed,
    }
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn median(v: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// First port of `n` consecutive UDP ports on 127.0.0.1 free now, from `from` on.
fn free_ports(from: u16, n: u16) -> u16 {
    let mut first = from;
    loop {
        let probe: Vec<_> = (0..n)
            .map(|i| UdpSocket::bind((LOCAL, first + i)))
            .collect();
        if probe.iter().all(Result::is_ok) {
            return first;
        }
        first = first
            .checked_add(n + 16)
            .filter(|f| *f < 32_000)
            .unwrap_or_else(|| panic!("no {n} free UDP ports below 32000"));
    }
}

// --- the rounds and the table -------------------------------------------------------------------

fn run(o: &Options) {
    epoch();
    let subjects = Subject::all(o);
    let first = free_ports(o.port, o.sessions);
    println!(
        "# {} rounds of {} sessions x 50 frames/s {}, {} s measured after {} s, for each of {}; load bot lead {} frames; clear test {} frames; ports {}..",
        o.rounds,
        o.sessions,
        match (o.caller_audio, o.bot_audio) {
            (true, true) => "each way",
            (true, false) => "of caller audio only (the load bot silent)",
            _ => "of bot audio only (the fake Asterisk silent)",
        },
        o.seconds,
        o.warmup,
        subjects
            .iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        o.lead,
        o.clear_frames,
        first
    );
    let mut all: Vec<Vec<Figures>> = vec![Vec::new(); subjects.len()];
    for round in 0..o.rounds {
        let n = subjects.len();
        for k in (0..n).map(|i| (i + round) % n) {
            let kind = subjects[k].kind;
            let f = run_subject(&subjects[k], o, first);
            println!(
                "  round {round} {:<13} cpu {:>6.1} us/session-s ({:>5.1} % of a core; process {:>5.1} %)  {:>5.1} wake-ups/session-s  rss {:>5.1} KB/session  | load generators {:>5.1} %, caller frames sent {:>5.1} % of 50/s",
                subjects[k].label,
                f.cpu_us_per_session_s,
                f.cpu_percent,
                f.process_percent,
                f.wakeups_per_session_s,
                f.rss_kb_per_session,
                f.load_percent,
                f.offered_percent,
            );
            println!(
                "  {:<21} latency p50 {:>6.1} p99 {:>7.1} us{}  jitter p50 {:>6.1} p99 {:>7.1} max {:>7.1} us  played {} gaps {} spurts {}  caller frames lost {}/{}{}",
                "",
                f.latency_p50_us,
                f.latency_p99_us,
                match kind {
                    Kind::Echo => " (round trip)".to_string(),
                    _ => format!(
                        " (load bot's clock p50 {:.1} p99 {:.1})",
                        f.latency_user_p50_us, f.latency_user_p99_us
                    ),
                },
                f.jitter_p50_us,
                f.jitter_p99_us,
                f.jitter_max_us,
                f.played,
                f.gaps,
                f.spurts,
                f.caller_lost,
                f.caller_sent,
                match kind {
                    Kind::Echo => String::new(),
                    _ => format!(
                        "  clear: frames after p50 {:.0} p99 {:.0} max {:.0} ({} sessions; old after new {})  connected {} failed {}",
                        f.clear_p50, f.clear_p99, f.clear_max, f.clear_sessions, f.clear_old_after_new, f.connected, f.failed
                    ),
                }
            );
            all[k].push(f);
        }
    }

    println!();
    println!(
        "{:<13} {:>13} {:>13} {:>6} {:>11} | {:>10} {:>10} | {:>10} {:>10} | {:>13} | {:>8}",
        "kind",
        "cpu_us/sess-s",
        "wakeups/sess-s",
        "cpu%",
        "rss_KB/sess",
        "lat_p50_us",
        "lat_p99_us",
        "jit_p50_us",
        "jit_p99_us",
        "clear_p99/max",
        "offered%"
    );
    for (k, subject) in subjects.iter().enumerate() {
        let m = |f: fn(&Figures) -> f64| median(all[k].iter().map(f));
        println!(
            "{:<13} {:>13.1} {:>13.1} {:>6.1} {:>11.1} | {:>10.1} {:>10.1} | {:>10.1} {:>10.1} | {:>13} | {:>8.1}",
            subject.label,
            m(|f| f.cpu_us_per_session_s),
            m(|f| f.wakeups_per_session_s),
            m(|f| f.cpu_percent),
            m(|f| f.rss_kb_per_session),
            m(|f| f.latency_p50_us),
            m(|f| f.latency_p99_us),
            m(|f| f.jitter_p50_us),
            m(|f| f.jitter_p99_us),
            match subject.kind {
                Kind::Echo => "-".to_string(),
                _ => format!("{:.0}/{:.0}", m(|f| f.clear_p99), m(|f| f.clear_max)),
            },
            m(|f| f.offered_percent),
        );
    }
    if all.iter().flatten().any(|f| f.offered_percent < 95.0) {
        println!(
            "WARNING: the fake Asterisk sent under 95 % of the caller frames in some rounds (offered%): the machine did not keep up with the load, and those figures are an overload's (try fewer --sessions)"
        );
    }
    // The bots' audio must have been played (50 frames/s per session in the window): a bench
    // whose sessions play nothing measures only half of the bridge.
    let expected = f64::from(o.sessions) * 50.0 * o.seconds as f64;
    if o.bot_audio
        && subjects.iter().zip(&all).any(|(s, figures)| {
            s.kind != Kind::Echo && figures.iter().any(|f| (f.played as f64) < 0.9 * expected)
        })
    {
        println!(
            "WARNING: a bot kind played under 90 % of the bot's frames in some rounds (played): its figures are not those of audio both ways"
        );
    }
    println!("(echo: latency is its round trip, in → out; bots: caller frame in → bot frame out, kernel timestamps)");

    // Ratios within a round, then their median.
    let ratios = |a: usize, b: usize| -> (f64, String) {
        let r: Vec<f64> = all[a]
            .iter()
            .zip(&all[b])
            .map(|(a, b)| a.cpu_us_per_session_s / b.cpu_us_per_session_s)
            .collect();
        let each = r.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>();
        (median(r.iter().copied()), each.join(" "))
    };
    for (k, base) in subjects.iter().enumerate() {
        let Some(new) = subjects
            .iter()
            .position(|s| base.exe.is_some() && s.exe.is_none() && s.kind == base.kind)
        else {
            continue;
        };
        let (ratio, each) = ratios(new, k);
        println!(
            "{:<8} CPU per session-second, this build / the baseline: {ratio:.2} (rounds: {each})",
            base.kind.name()
        );
    }
    let Some(echo) = subjects.iter().position(|s| s.kind == Kind::Echo) else {
        return;
    };
    if !o.bot_audio {
        println!("(caller audio only: the ratios below are not the goals', which are for audio both ways)");
    }
    let mut summary = Vec::new();
    for (k, subject) in subjects.iter().enumerate() {
        let goal = match subject.kind {
            Kind::Echo => continue,
            Kind::Twilio => 2.0,
            Kind::Asterisk => 1.5,
        };
        let (ratio, each) = ratios(k, echo);
        let m = |f: fn(&Figures) -> f64| median(all[k].iter().map(f));
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "{:<13} CPU per session-second {:.2}x the echo's (rounds: {}; goal <= {goal}: {}); latency p99 {:.0} us (goal <= 1000: {}); jitter p99 {:.0} us (goal <= 2000: {}); frames after clear max {:.0} (goal <= 1: {})",
            subject.label,
            ratio,
            each,
            verdict(ratio <= goal),
            m(|f| f.latency_p99_us),
            verdict(m(|f| f.latency_p99_us) <= 1000.0),
            m(|f| f.jitter_p99_us),
            verdict(m(|f| f.jitter_p99_us) <= 2000.0),
            m(|f| f.clear_max),
            verdict(m(|f| f.clear_max) <= 1.0),
        );
        summary.push(format!("{} {ratio:.2}x", subject.label));
    }
    println!(
        "summary: CPU per session-second vs the echo: {}",
        summary.join(", ")
    );
}
