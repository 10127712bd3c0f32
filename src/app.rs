//! Wiring: start-up, the event reader thread, the workers, and the stop.
//!
//! Threads and who owns what:
//! - the main thread waits for a signal (or the reader's refusal of this Asterisk); with
//!   `on_stop = "handover"` it first drains (`drain`), then drops the `stop` sender (the reader,
//!   the janitor and the shedders see their receivers disconnect) and waits up to
//!   [`SHUTDOWN_GRACE`] for the calls to be handed over or ended;
//! - the reader thread (`EventReader`) owns the WebSocket. It (re)connects with backoff, adopts
//!   or removes leftovers at start, reconciles after a reconnect, decodes frames and posts each
//!   to its call's mailbox (a new caller through `intake::offer`);
//! - worker threads run whichever call has mail (see `dispatch::Scheduler`, `worker`); the timer
//!   thread posts due timers to their calls; echo threads own one socket each (see `media`);
//! - at the stop every call is posted `Handover` or `Shutdown` and handled on the workers in
//!   parallel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use log::{debug, info, warn};
use parking_lot::Mutex;

use crate::admission::{Admission, Health};
use crate::ari::events::{decode, parse_timestamp};
use crate::ari::websocket::{events_url, ConnectError, EventSocket, Frame};
use crate::ari::{AriClient, AriError, AsteriskVersion, ErrorKind, Support};
use crate::backoff::Backoff;
use crate::call::Phase;
use crate::config::{Config, OnStop};
use crate::dispatch::{route, CallEvent, CallMsg, Scheduler};
use crate::ids::{Ids, Role};
use crate::intake;
use crate::leftovers;
use crate::media::SocketPool;
use crate::metrics;
use crate::shared::{run_teardown, BotDirectory, Counters, RestObserver, Shared, TEARDOWN_THREADS};
use crate::timer::run_timers;
use crate::worker::{ActiveCall, CallHandler};

/// How long shutdown waits for the workers to clean their calls up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Why voicebot1 could not start or stop cleanly.
#[derive(Debug)]
pub enum AppError {
    NoPorts {
        range: String,
        first_error: String,
    },
    Thread(std::io::Error),
    ShutdownTimedOut {
        calls: usize,
    },
    /// The Asterisk voicebot1 connected to is a version it cannot work with.
    Unsupported {
        version: String,
        why: String,
    },
    /// `[metrics] listen` cannot be listened on (in use, or not an address of this host).
    MetricsListen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::NoPorts { range, first_error } => write!(f, "no UDP port in media range {range} could be bound: {first_error}"),
            AppError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            AppError::ShutdownTimedOut { calls } => write!(f, "shutdown timed out with {calls} calls still being cleaned up"),
            AppError::Unsupported { version, why } => write!(f, "Asterisk {version} is not supported: {why}"),
            AppError::MetricsListen { addr, error } => write!(
                f,
                "metrics.listen: cannot listen on {addr}: {error} (another voicebot1 or exporter there? choose another port, or \"off\")"
            ),
        }
    }
}

impl std::error::Error for AppError {}

/// Binds the pool, logging which ports could not be bound.
pub fn bind_pool(config: &Config) -> Result<SocketPool, AppError> {
    let m = &config.media;
    let range = format!("{}:{}-{}", m.bind_host, m.port_min, m.port_max);
    let (pool, failures) = SocketPool::bind(m.bind_host, m.port_min, m.port_max);
    if !failures.is_empty() {
        let ports: Vec<String> = failures
            .iter()
            .take(20)
            .map(|f| f.port.to_string())
            .collect();
        let more = if failures.len() > 20 {
            format!(" and {} more", failures.len() - 20)
        } else {
            String::new()
        };
        warn!(
            "media: {} ports could not be bound ({}{more}): {}",
            failures.len(),
            ports.join(", "),
            failures[0].error
        );
    }
    if pool.total() == 0 {
        return Err(AppError::NoPorts {
            range,
            first_error: failures
                .first()
                .map(|f| f.error.to_string())
                .unwrap_or_else(|| "empty range".into()),
        });
    }
    info!(
        "media: {} of {} ports usable on {range}",
        pool.total(),
        usize::from(m.port_max - m.port_min) + 1
    );
    Ok(pool)
}

/// Runs voicebot1 until `signals` delivers a stop request, then shuts down.
pub fn run(config: Config, signals: Receiver<()>) -> Result<(), AppError> {
    let config = Arc::new(config);
    // Before anything else: an address in use stops voicebot1 here, with one line.
    let endpoint = config.metrics.listen.map(|addr| {
        metrics::Endpoint::bind(addr).map_err(|error| AppError::MetricsListen { addr, error })
    });
    let endpoint = endpoint.transpose()?;
    let pool = bind_pool(&config)?;
    let (shed_tx, shed_rx) = intake::channel();
    let (teardown_tx, teardown_rx) = crossbeam_channel::unbounded();
    let admission = Arc::new(Admission::new(config.admission.clone()));
    let observer = Arc::new(RestObserver {
        admission: Arc::clone(&admission),
    });
    let shared = Arc::new(Shared {
        ari: AriClient::new(&config.ari, observer),
        ids: Ids::new(&config.ari.app),
        config: Arc::clone(&config),
        pool: pool.clone(),
        registry: Mutex::new(HashMap::new()),
        draining: AtomicBool::new(false),
        late_commands: AtomicBool::new(false),
        admission,
        waiting: Mutex::new(VecDeque::new()),
        bots: BotDirectory::new(&config.bots),
        shed: shed_tx,
        teardown: teardown_tx,
        unconfirmed: Mutex::new(HashSet::new()),
        counters: Counters::default(),
    });

    let live = Arc::clone(&shared);
    // Stops when `run` returns: /health answers (503 while stopping) until the very end.
    let _metrics = endpoint
        .map(|e| e.serve(move || live.live()))
        .transpose()
        .map_err(AppError::Thread)?;
    let calls: Arc<Scheduler<ActiveCall>> = Arc::new(Scheduler::new());
    let (timer_tx, timer_rx) = crossbeam_channel::unbounded();
    let handler = Arc::new(CallHandler::new(
        Arc::clone(&shared),
        timer_tx,
        Arc::downgrade(&calls),
    ));
    // The teardown threads stop last: after the workers, whose last turns send them work.
    let (teardown_stop_tx, teardown_stop_rx) = crossbeam_channel::bounded::<()>(0);
    let mut teardowns = Vec::new();
    for i in 0..TEARDOWN_THREADS {
        let (shared, queue, stop) = (
            Arc::clone(&shared),
            teardown_rx.clone(),
            teardown_stop_rx.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("teardown-{i}"))
            .spawn(move || run_teardown(&shared, &queue, &stop))
            .map_err(AppError::Thread)?;
        teardowns.push(handle);
    }
    drop(teardown_rx);
    let n_workers = config.service.workers.max(1);
    warn_if_over_session_limit(n_workers);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
    let mut workers = Vec::new();
    for i in 0..n_workers {
        let (calls, handler, done) = (Arc::clone(&calls), Arc::clone(&handler), done_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                calls.run_worker(handler.as_ref());
                let _ = done.send(i);
            })
            .map_err(AppError::Thread)?;
        workers.push(handle);
    }
    drop(done_tx);
    // The timer thread stops when the last handler (and with it the timer sender) is dropped.
    let timer_calls = Arc::clone(&calls);
    std::thread::Builder::new()
        .name("timers".into())
        .spawn(move || run_timers(timer_rx, &timer_calls))
        .map_err(AppError::Thread)?;
    drop(handler);

    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (refused_tx, refused_rx) = crossbeam_channel::bounded::<AppError>(1);
    let (janitor_shared, janitor_calls, janitor_stop) =
        (Arc::clone(&shared), Arc::clone(&calls), stop_rx.clone());
    let every = config.service.janitor;
    let janitor_thread = std::thread::Builder::new()
        .name("janitor".into())
        .spawn(move || leftovers::janitor(&janitor_shared, &janitor_calls, &janitor_stop, every))
        .map_err(AppError::Thread)?;
    let mut shedders = Vec::new();
    for i in 0..intake::SHEDDERS {
        let (shared, rejections, stop) = (Arc::clone(&shared), shed_rx.clone(), stop_rx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("shedder-{i}"))
            .spawn(move || intake::run_shedder(&shared, &rejections, &stop))
            .map_err(AppError::Thread)?;
        shedders.push(handle);
    }
    let (admission_shared, admission_calls, admission_stop) =
        (Arc::clone(&shared), Arc::clone(&calls), stop_rx.clone());
    let admission_thread = std::thread::Builder::new()
        .name("admission".into())
        .spawn(move || intake::run_admission(&admission_shared, &admission_calls, &admission_stop))
        .map_err(AppError::Thread)?;
    let (door_shared, door_stop) = (Arc::clone(&shared), stop_rx.clone());
    let door_thread = std::thread::Builder::new()
        .name("door".into())
        .spawn(move || intake::run_door(&door_shared, &door_stop))
        .map_err(AppError::Thread)?;
    let reader_shared = Arc::clone(&shared);
    let reader = std::thread::Builder::new()
        .name("ari-events".into())
        .spawn({
            let calls = Arc::clone(&calls);
            move || {
                EventReader {
                    shared: reader_shared,
                    calls,
                    stop: stop_rx,
                    refused: refused_tx,
                }
                .run()
            }
        })
        .map_err(AppError::Thread)?;

    // Wait for the first signal, or for the reader to refuse this Asterisk.
    let refused = crossbeam_channel::select! {
        recv(signals) -> _ => None,
        recv(refused_rx) -> refusal => refusal.ok(),
    };
    let handover = refused.is_none() && config.service.on_stop == OnStop::Handover;
    if handover {
        drain(&shared, &calls, config.service.drain);
    } else if refused.is_none() {
        info!(
            "shutdown requested: taking no new calls, cleaning up {} active calls",
            shared.active_calls()
        );
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    drop(stop_tx);
    join_until(reader, deadline);
    join_until(janitor_thread, deadline);
    join_until(admission_thread, deadline);
    join_until(door_thread, deadline);
    for shedder in shedders {
        join_until(shedder, deadline);
    }
    // Every call is handed over or ended through its normal end path, on all workers at once.
    calls.post_all(if handover {
        &CallMsg::Handover
    } else {
        &CallMsg::Shutdown
    });
    while !calls.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cleaned = calls.is_empty();
    calls.stop_workers(workers.len());
    let mut finished = 0;
    while finished < workers.len() {
        match done_rx.recv_deadline(deadline) {
            Ok(_) => finished += 1,
            Err(_) => break,
        }
    }
    // The calls' last hang-ups and bridge destroys, sent before the teardown threads return.
    drop(teardown_stop_tx);
    for teardown in teardowns {
        join_until(teardown, deadline);
    }
    // Echo threads hand their sockets back as they stop; give the last ones a moment.
    while pool.free() < pool.total() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let active = shared.active_calls();
    if active > 0 {
        // What a crash would have left: the next instance adopts what it can, as after one.
        let left: Vec<String> = shared
            .registry
            .lock()
            .iter()
            .take(50)
            .map(|(call, phase)| format!("{call} ({})", describe_phase(*phase)))
            .collect();
        warn!(
            "shutdown: out of time with {active} calls still waiting on Asterisk, left as they are for the next voicebot1: {}{}",
            left.join(", "),
            if active > left.len() { format!(" and {} more", active - left.len()) } else { String::new() }
        );
    }
    info!("totals: {}", shared.counters.summary());
    info!(
        "shutdown complete: {} calls cleaned up, {} handed over, {active} left, pool {}/{} free",
        shared.counters.ended_by_shutdown.load(Ordering::Relaxed),
        shared.counters.handed_over.load(Ordering::Relaxed),
        pool.free(),
        pool.total()
    );
    if let Some(refusal) = refused {
        return Err(refusal);
    }
    if !cleaned || finished < workers.len() {
        return Err(AppError::ShutdownTimedOut { calls: active });
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// The first part of a handover stop: no new bot sessions, callers with the bot transferred, and
/// a wait (up to `longest`) until every call is connected. Events are still read meanwhile: a
/// transfer needs its destination's answer.
fn drain(shared: &Shared, calls: &Scheduler<ActiveCall>, longest: Duration) {
    shared.draining.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    if shared.admission.health() != Health::Normal {
        // Transfers would be requests to a slow Asterisk, and a failed one hangs its caller up.
        // Callers with the bot are left with it: the next instance transfers them, as after a
        // crash. Only calls half-way (set-up, a destination ringing) are waited for.
        info!(
            "stop requested while Asterisk is slow: handing {} calls over to the next voicebot1 as they are (no new calls; callers with the bot stay with it and the next voicebot1 transfers them; up to {} s for set-ups and ringing destinations)",
            shared.active_calls(),
            longest.as_secs()
        );
        calls.post_all(&CallMsg::Hold);
        let half_way = |p: &Phase| matches!(p, Phase::Setup | Phase::Transfer);
        while shared.calls_where(half_way) > 0 && t0.elapsed() < longest {
            std::thread::sleep(Duration::from_millis(20));
        }
        match shared.calls_where(half_way) {
            0 => info!(
                "drained in {} ms: no call half-way",
                t0.elapsed().as_millis()
            ),
            n => warn!(
                "drain time ({} s) is over with {n} calls still half-way (set-up or ringing)",
                longest.as_secs()
            ),
        }
        return;
    }
    info!(
        "stop requested: handing {} calls over to the next voicebot1 (no new calls; callers with the bot are transferred; up to {} s)",
        shared.active_calls(),
        longest.as_secs()
    );
    calls.post_all(&CallMsg::Drain);
    while shared.calls_not_connected() > 0 && t0.elapsed() < longest {
        std::thread::sleep(Duration::from_millis(20));
    }
    match shared.calls_not_connected() {
        0 => info!("drained in {} ms: every call is connected", t0.elapsed().as_millis()),
        n => warn!(
            "drain time ({} s) is over with {n} calls not connected: callers with the bot and ringing ones are handed over, the rest ended",
            longest.as_secs()
        ),
    }
}

fn join_until(handle: JoinHandle<()>, deadline: Instant) {
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if handle.is_finished() {
        let _ = handle.join();
    }
}

/// The event reader thread (`ari-events`), the only thread that reads the WebSocket.
struct EventReader {
    shared: Arc<Shared>,
    calls: Arc<Scheduler<ActiveCall>>,
    stop: Receiver<()>,
    /// Told when this Asterisk cannot be worked with; the main thread then shuts down.
    refused: crossbeam_channel::Sender<AppError>,
}

/// Why a connection attempt or session ended.
enum SessionEnd {
    Stopped,
    Lost(String),
    Refused(AppError),
}

impl EventReader {
    fn run(self) {
        let cfg = &self.shared.config.ari;
        let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
        let mut swept = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let reconnecting = swept;
            match self.session(&mut swept, reconnecting, &mut backoff) {
                SessionEnd::Stopped => break,
                SessionEnd::Refused(why) => {
                    let _ = self.refused.send(why);
                    break;
                }
                SessionEnd::Lost(why) => {
                    let delay = backoff.next_delay();
                    warn!(
                        "ARI: {why}; reconnecting in {:.1} s (attempt {attempt})",
                        delay.as_secs_f64()
                    );
                    if self.stopped_within(delay) {
                        break;
                    }
                }
            }
        }
        debug!("event reader stopped");
    }

    /// One connection: check ARI answers and Asterisk's version, connect the WebSocket, adopt
    /// what is left in Asterisk (first time) or reconcile, sweep and adopt (after a reconnect),
    /// then read until the connection is lost or voicebot1 stops.
    fn session(&self, swept: &mut bool, reconnecting: bool, backoff: &mut Backoff) -> SessionEnd {
        let ari = &self.shared.ari;
        let cfg = &self.shared.config.ari;
        let version = match ari.asterisk_version() {
            Ok(v) => v,
            Err(e) => {
                return SessionEnd::Lost(match e.kind {
                    ErrorKind::Unauthorized(code) => unauthorized(code, &cfg.username),
                    _ => e.to_string(),
                })
            }
        };
        match AsteriskVersion::parse(&version).map(|v| (v.support(), v)) {
            Some((Support::Supported, v)) => {
                let late = v.runs_commands_late();
                if late && !self.shared.late_commands.swap(true, Ordering::Relaxed) {
                    info!("ARI: Asterisk {v} runs a channel's queued commands only when the channel wakes (before 18.21/20.6): voicebot1 wakes the bot's media channel during set-up");
                }
                self.shared.late_commands.store(late, Ordering::Relaxed);
            }
            Some((Support::Unsupported(why), v)) => {
                return SessionEnd::Refused(AppError::Unsupported {
                    version: v.raw,
                    why,
                })
            }
            None => {
                warn!("ARI: cannot tell whether Asterisk {version:?} is supported (no release number in it); going on")
            }
        }
        let mut socket = match EventSocket::connect(cfg, ari.tls()) {
            Ok(s) => s,
            Err(ConnectError::Unauthorized(code)) => {
                return SessionEnd::Lost(unauthorized(code, &cfg.username))
            }
            Err(ConnectError::Other(m)) => return SessionEnd::Lost(m),
        };
        info!(
            "ARI: connected to Asterisk {version} at {}, taking calls for {:?}",
            events_url(cfg),
            cfg.app
        );
        // The requests that went unanswered were the lost connection's: this Asterisk answers.
        self.shared.admission.reset_unanswered();
        if !*swept {
            // After the WebSocket connected: every event from now on is read after the listing,
            // so nothing that happens meanwhile is lost; the frames wait in the socket.
            if let Err(e) = leftovers::adopt(&self.shared, &self.calls) {
                return SessionEnd::Lost(e.to_string());
            }
            *swept = true;
        }
        if reconnecting {
            Counters::bump(&self.shared.counters.reconnects);
            if let Err(e) = self.reconcile() {
                // Retried by reconnecting: a call whose channels vanished must not wait for
                // events that will never come.
                return SessionEnd::Lost(format!("cannot reconcile after reconnect: {e}"));
            }
            if let Err(e) = leftovers::sweep(&self.shared, &self.calls, &mut HashSet::new()) {
                warn!("janitor: {e}");
            }
            // Callers that entered the application while the WebSocket was down.
            if let Err(e) = leftovers::adopt(&self.shared, &self.calls) {
                warn!("ARI: after reconnect: {e}");
            }
        }
        let connected_at = Instant::now();
        let _connected = metrics::AriConnected::mark();
        loop {
            if self.stop_requested() {
                return SessionEnd::Stopped;
            }
            match socket.read() {
                Ok(Frame::Text(text)) => self.on_frame(&text),
                Ok(Frame::Idle) => {}
                Err(why) => {
                    // A connection that held for a while resets the backoff.
                    if connected_at.elapsed() > Duration::from_secs(30) {
                        backoff.reset();
                    }
                    return SessionEnd::Lost(format!("event WebSocket lost: {why}"));
                }
            }
        }
    }

    fn on_frame(&self, text: &str) {
        log::trace!("ARI event: {text}");
        // How late Asterisk delivers its events: an early sign of a loaded Asterisk (admission).
        if let Some(lag) = event_lag(text) {
            self.shared.admission.event_lag(lag, Instant::now());
        }
        match decode(text) {
            Ok(event) => {
                match route(&self.shared.ids, &self.shared.config.ari.inbound_arg, event) {
                    Some((call, CallEvent::Inbound(caller))) => {
                        intake::offer(&self.shared, &self.calls, call, caller)
                    }
                    Some((call, ev)) => {
                        if let CallEvent::Left(Role::Caller, _) = ev {
                            intake::caller_left(&self.shared, &call);
                        }
                        self.calls.post(call, CallMsg::Event(ev))
                    }
                    None => {}
                }
            }
            Err(e) => {
                let n = Counters::bump(&self.shared.counters.events_skipped);
                warn!(
                    "ARI: skipping {e} ({} bytes; {n} skipped so far)",
                    text.len()
                );
            }
        }
    }

    /// After a reconnect: tells every worker which channels still exist.
    fn reconcile(&self) -> Result<(), AriError> {
        let channels = self.shared.ari.list_channels()?;
        let alive: HashSet<String> = channels.into_iter().map(|c| c.id).collect();
        info!(
            "ARI: reconciling active calls with {} channels in Asterisk",
            alive.len()
        );
        self.calls.post_all(&CallMsg::Reconcile(Arc::new(alive)));
        Ok(())
    }

    fn stop_requested(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sleeps up to `d`; true if voicebot1 is stopping.
    fn stopped_within(&self, d: Duration) -> bool {
        matches!(
            self.stop.recv_timeout(d),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        )
    }
}

/// Asterisk's default HTTP `sessionlimit` (http.conf): connections past it are closed at once.
const ASTERISK_SESSION_LIMIT: usize = 100;

/// The connections voicebot1 may hold to Asterisk at once: each worker and its set-up helper,
/// the shedders, the teardown threads, the door, the janitor and the event WebSocket.
fn connections_to_asterisk(workers: usize) -> usize {
    2 * workers + intake::SHEDDERS + TEARDOWN_THREADS + 3
}

fn warn_if_over_session_limit(workers: usize) {
    let n = connections_to_asterisk(workers);
    if n >= ASTERISK_SESSION_LIMIT {
        warn!(
            "service.workers = {workers}: voicebot1 may hold {n} connections to Asterisk at once; raise sessionlimit in Asterisk's http.conf above {n} (its default, {ASTERISK_SESSION_LIMIT}, closes the ones past it) or lower service.workers"
        );
    }
}

/// The one line an operator needs when Asterisk refuses the credentials (REST or WebSocket).
fn unauthorized(code: u16, user: &str) -> String {
    format!("{code}: check [ari] username/password (user {user:?})")
}

/// How long ago, by this host's clock, an event frame was stamped (its `"timestamp"`), without
/// decoding the whole frame; `None` without a usable one.
fn event_lag(text: &str) -> Option<Duration> {
    let key = "\"timestamp\":\"";
    let start = text.find(key)? + key.len();
    let end = start + text[start..].find('"')?;
    let at = parse_timestamp(&text[start..end])?;
    Some(
        std::time::SystemTime::now()
            .duration_since(at)
            .unwrap_or(Duration::ZERO),
    )
}

/// A call's phase in the operator's words.
fn describe_phase(phase: Phase) -> &'static str {
    match phase {
        Phase::Setup => "being set up",
        Phase::Media => "with the bot",
        Phase::Transfer => "destination called",
        Phase::Connected => "caller and destination connected",
        Phase::Ended => "ended",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_workers_fit_asterisks_default_session_limit() {
        // 16: `[service] workers`' default (config's tests hold the shipped file to it).
        assert_eq!(connections_to_asterisk(16), 83);
        assert!(connections_to_asterisk(16) < ASTERISK_SESSION_LIMIT);
        assert!(connections_to_asterisk(24) < ASTERISK_SESSION_LIMIT);
        assert!(connections_to_asterisk(25) >= ASTERISK_SESSION_LIMIT);
    }
}
