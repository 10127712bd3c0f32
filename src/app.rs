//! Wiring: start-up, the event reader thread, the workers, and shutdown.
//!
//! Threads and who owns what:
//! - the main thread waits for a signal; on the first it drops the `stop` sender (the reader sees
//!   its receiver disconnect), then waits up to [`SHUTDOWN_GRACE`] for the workers;
//! - the reader thread owns the WebSocket and the [`Dispatcher`] (every worker's sender). It
//!   (re)connects with backoff, sweeps leftovers at start, reconciles after a reconnect, decodes
//!   frames and routes them. When it returns, the dispatcher drops and the workers wind down;
//! - worker threads own their calls (see `worker`); echo threads own one socket each (see `media`).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, TryRecvError};
use log::{debug, info, warn};

use crate::ari::events::decode;
use crate::ari::websocket::{events_url, ConnectError, EventSocket, Frame};
use crate::ari::{AriClient, ErrorKind};
use crate::config::Config;
use crate::dispatch::{route, Dispatcher, WorkerMsg};
use crate::ids::Ids;
use crate::media::SocketPool;
use crate::worker::{Shared, Worker};

/// How long shutdown waits for the workers to clean their calls up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Why voicebot1 could not start or stop cleanly.
#[derive(Debug)]
pub enum AppError {
    NoPorts { range: String, first_error: String },
    Thread(std::io::Error),
    Signal(String),
    ShutdownTimedOut { calls: usize },
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::NoPorts { range, first_error } => write!(f, "no UDP port in media range {range} could be bound: {first_error}"),
            AppError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            AppError::Signal(e) => write!(f, "cannot install the signal handler: {e}"),
            AppError::ShutdownTimedOut { calls } => write!(f, "shutdown timed out with {calls} calls still being cleaned up"),
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
        let ports: Vec<String> = failures.iter().take(20).map(|f| f.port.to_string()).collect();
        let more = if failures.len() > 20 { format!(" and {} more", failures.len() - 20) } else { String::new() };
        warn!("media: {} ports could not be bound ({}{more}): {}", failures.len(), ports.join(", "), failures[0].error);
    }
    if pool.total() == 0 {
        return Err(AppError::NoPorts {
            range,
            first_error: failures.first().map(|f| f.error.to_string()).unwrap_or_else(|| "empty range".into()),
        });
    }
    info!("media: {} of {} ports usable on {range}", pool.total(), usize::from(m.port_max - m.port_min) + 1);
    Ok(pool)
}

/// Runs voicebot1 until `signals` delivers a stop request, then shuts down.
pub fn run(config: Config, signals: Receiver<()>) -> Result<(), AppError> {
    let config = Arc::new(config);
    let pool = bind_pool(&config)?;
    let shared = Arc::new(Shared {
        ari: AriClient::new(&config.ari),
        ids: Ids::new(&config.ari.app),
        config: Arc::clone(&config),
        pool: pool.clone(),
        active: AtomicUsize::new(0),
        ended_by_shutdown: AtomicUsize::new(0),
    });

    let (dispatcher, receivers) = Dispatcher::new(config.service.workers);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
    let mut workers = Vec::new();
    for (i, rx) in receivers.into_iter().enumerate() {
        let worker = Worker::new(i, Arc::clone(&shared));
        let done = done_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                worker.run(rx);
                let _ = done.send(i);
            })
            .map_err(AppError::Thread)?;
        workers.push(handle);
    }
    drop(done_tx);

    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let reader_shared = Arc::clone(&shared);
    let reader = std::thread::Builder::new()
        .name("ari-events".into())
        .spawn(move || Reader { shared: reader_shared, dispatcher, stop: stop_rx }.run())
        .map_err(AppError::Thread)?;

    // Wait for the first signal.
    let _ = signals.recv();
    info!("shutdown requested: taking no new calls, cleaning up {} active calls", shared.active.load(Ordering::Relaxed));
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    drop(stop_tx);
    join_until(reader, deadline);
    let mut finished = 0;
    while finished < workers.len() {
        match done_rx.recv_deadline(deadline) {
            Ok(_) => finished += 1,
            Err(_) => break,
        }
    }
    // Echo threads hand their sockets back as they stop; give the last ones a moment.
    while pool.free() < pool.total() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let active = shared.active.load(Ordering::Relaxed);
    info!(
        "shutdown complete: {} calls cleaned up, {active} left, pool {}/{} free",
        shared.ended_by_shutdown.load(Ordering::Relaxed),
        pool.free(),
        pool.total()
    );
    if finished < workers.len() {
        return Err(AppError::ShutdownTimedOut { calls: active });
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn join_until(handle: JoinHandle<()>, deadline: Instant) {
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if handle.is_finished() {
        let _ = handle.join();
    }
}

/// The event reader thread.
struct Reader {
    shared: Arc<Shared>,
    dispatcher: Dispatcher,
    stop: Receiver<()>,
}

/// Why a connection attempt or session ended.
enum SessionEnd {
    Stopped,
    Lost(String),
}

impl Reader {
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
                SessionEnd::Lost(why) => {
                    let delay = backoff.next_delay();
                    warn!("ARI: {why}; reconnecting in {:.1} s (attempt {attempt})", delay.as_secs_f64());
                    if self.stopped_within(delay) {
                        break;
                    }
                }
            }
        }
        debug!("event reader stopped");
        // `self.dispatcher` drops here: every worker sees its channel disconnect.
    }

    /// One connection: check ARI answers, sweep (first time), connect the WebSocket, reconcile
    /// (after a reconnect), then read until the connection is lost or voicebot1 stops.
    fn session(&self, swept: &mut bool, reconnecting: bool, backoff: &mut Backoff) -> SessionEnd {
        let ari = &self.shared.ari;
        let cfg = &self.shared.config.ari;
        let version = match ari.asterisk_version() {
            Ok(v) => v,
            Err(e) => {
                return SessionEnd::Lost(match e.kind {
                    ErrorKind::Unauthorized(code) => format!("{code}: check [ari] username/password (user {:?})", cfg.username),
                    _ => e.to_string(),
                })
            }
        };
        if !*swept {
            if let Err(e) = self.sweep() {
                return SessionEnd::Lost(e);
            }
            *swept = true;
        }
        let mut socket = match EventSocket::connect(cfg) {
            Ok(s) => s,
            Err(ConnectError::Unauthorized(code)) => {
                return SessionEnd::Lost(format!("{code}: check [ari] username/password (user {:?})", cfg.username))
            }
            Err(ConnectError::Other(m)) => return SessionEnd::Lost(m),
        };
        info!("ARI: connected to Asterisk {version} at {}, taking calls for {:?}", events_url(cfg), cfg.app);
        if reconnecting {
            self.reconcile();
        }
        let connected_at = Instant::now();
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
        match decode(text) {
            Ok(event) => {
                if let Some((call, ev)) = route(&self.shared.ids, &self.shared.config.ari.inbound_arg, event) {
                    self.dispatcher.send(call, ev);
                }
            }
            Err(e) => warn!("ARI: skipping {e} ({} bytes)", text.len()),
        }
    }

    /// Removes what an earlier voicebot1 left behind (killed, crashed): bridges and channels with
    /// our id prefix, and callers stranded in our Stasis application. Runs before the WebSocket
    /// connects, so no call of this instance can be among them (Stasis() fails while no
    /// application is connected).
    fn sweep(&self) -> Result<(), String> {
        let ari = &self.shared.ari;
        let ids = &self.shared.ids;
        let app = &self.shared.config.ari.app;
        let channels = ari.list_channels().map_err(|e| e.to_string())?;
        let bridges = ari.list_bridges().map_err(|e| e.to_string())?;
        let mut hung_up = 0;
        for ch in &channels {
            let stranded = ch.dialplan.as_ref().is_some_and(|d| {
                d.app_name.eq_ignore_ascii_case("Stasis") && d.app_data.split(',').next().map(str::trim) == Some(app.as_str())
            });
            if ids.is_ours(&ch.id) || stranded {
                match ari.hangup(&ch.id, crate::ari::HangupReason::Normal) {
                    Ok(()) => hung_up += 1,
                    Err(e) if e.is_not_found() => {}
                    Err(e) => warn!("sweep: {e}"),
                }
                info!("sweep: hung up leftover channel {} ({})", ch.id, ch.name);
            }
        }
        let mut destroyed = 0;
        for b in bridges.iter().filter(|b| ids.is_ours(&b.id)) {
            match ari.destroy_bridge(&b.id) {
                Ok(()) => destroyed += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => warn!("sweep: {e}"),
            }
            info!("sweep: destroyed leftover bridge {}", b.id);
        }
        info!("sweep: {hung_up} leftover channels hung up, {destroyed} leftover bridges destroyed");
        Ok(())
    }

    /// After a reconnect: tells every worker which channels still exist.
    fn reconcile(&self) {
        match self.shared.ari.list_channels() {
            Ok(channels) => {
                let alive: HashSet<String> = channels.into_iter().map(|c| c.id).collect();
                info!("ARI: reconciling active calls with {} channels in Asterisk", alive.len());
                self.dispatcher.broadcast(WorkerMsg::Reconcile(Arc::new(alive)));
            }
            Err(e) => warn!("ARI: cannot reconcile after reconnect: {e}"),
        }
    }

    fn stop_requested(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sleeps up to `d`; true if voicebot1 is stopping.
    fn stopped_within(&self, d: Duration) -> bool {
        matches!(self.stop.recv_timeout(d), Err(crossbeam_channel::RecvTimeoutError::Disconnected))
    }
}

/// Capped exponential backoff with up to 25% jitter.
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
        Backoff { min, max, current: min, seed }
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        // xorshift: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = base.mul_f64((self.seed % 1000) as f64 / 4000.0);
        (base + jitter).min(self.max + self.max / 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (d, base) in delays.iter().zip([100u64, 200, 400, 800, 1000, 1000, 1000, 1000]) {
            let base = Duration::from_millis(base);
            assert!(*d >= base && *d <= base + base / 4, "{d:?} vs {base:?}");
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(126));
    }
}
