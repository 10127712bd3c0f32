//! What every thread of the running service shares: the REST client, the ids, the configuration,
//! the port pool, the registry of active calls, admission control and the totals.
//!
//! [`Shared`] is built once in `app::run` and handed to every thread as an `Arc`: read-only apart
//! from its atomics and two locks (`registry`, `unconfirmed`). [`Counters`] are the totals the
//! operator reads in the log at shutdown and on `/metrics`. [`RestObserver`] is what the REST
//! client is told each request's answer through: it feeds admission's signals and the metrics.
//! [`run_teardown`] is the teardown threads' loop: a call's hang-ups and bridge destroy, off the
//! workers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, warn};
use parking_lot::Mutex;

use crate::admission::{Admission, DoorState, Overload, Rejection};
use crate::ari::rest::{Answer, Observer};
use crate::ari::{AriClient, AriError, HangupReason};
use crate::bot::Bad;
use crate::call::{Phase, Policy};
use crate::config::{BotsConfig, Config};
use crate::dispatch::NewCaller;
use crate::ids::{CallId, Ids};
use crate::media::{BotSpec, SocketPool};
use crate::metrics::{self, CallPhase, Class, Live, Operation};
use crate::net::tls;

/// What every worker shares (read-only, or atomics).
pub struct Shared {
    pub ari: AriClient,
    pub ids: Ids,
    pub config: Arc<Config>,
    pub pool: SocketPool,
    /// The calls alive on all workers, with their phase after their last turn. A call is in it
    /// before it creates anything in Asterisk and leaves it only after its cleanup (or its
    /// handover), so the janitor may treat any resource with our prefix whose call is not here
    /// as an orphan.
    pub registry: Mutex<HashMap<CallId, Phase>>,
    /// A handover stop is under way: no new bot sessions.
    pub draining: AtomicBool,
    /// The connected Asterisk runs a channel's queued ARI commands only when the channel wakes
    /// (before 18.21 / 20.6), so voicebot1 wakes the channels of an `addChannel` while it waits
    /// (see ARCHITECTURE.md): set at every connect from its version.
    pub late_commands: AtomicBool,
    /// Admission control's policy, fed by [`RestObserver`] and the reader's event lag.
    pub admission: Arc<Admission>,
    /// New callers waiting while Asterisk is briefly slow (see `intake`).
    pub waiting: Mutex<VecDeque<Waiter>>,
    /// The WebSocket bots, ready to connect to.
    pub bots: BotDirectory,
    /// Callers not taken, for the shedder threads to hang up.
    pub shed: Sender<Rejection>,
    /// A call's hang-ups and bridge destroy, for the teardown threads: nothing waits for their
    /// answers, so no worker waits on them (a hang-up Asterisk holds for seconds would hold a
    /// worker, and every call behind it, that long).
    pub teardown: Sender<Teardown>,
    /// Channels whose hang-up failed (no answer, 5xx): the janitor retries each until Asterisk
    /// confirms it is gone. Callers need this: their ids are not ours, so nothing else finds them.
    pub unconfirmed: Mutex<HashSet<String>>,
    pub counters: Counters,
}

/// Totals since start, for the operator (logged at shutdown and where they change).
#[derive(Debug, Default)]
pub struct Counters {
    pub calls: AtomicU64,
    pub pool_exhausted: AtomicU64,
    pub orphans_hung_up: AtomicU64,
    /// ARI event frames that could not be decoded.
    pub events_skipped: AtomicU64,
    pub reconnects: AtomicU64,
    pub ended_by_shutdown: AtomicU64,
    /// Calls ended because handling them panicked (a bug).
    pub panics: AtomicU64,
    /// Calls taken over from an earlier instance at start-up.
    pub adopted: AtomicU64,
    /// Calls left in Asterisk for the next instance at a handover stop.
    pub handed_over: AtomicU64,
    /// New calls not taken by admission control (rejected, or transferred without the bot).
    pub shed: AtomicU64,
    /// Transfers bots asked for to names `[transfer.to]` does not list.
    pub refused_transfers: AtomicU64,
    /// New callers who waited for a briefly slow Asterisk.
    pub waited: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{} calls, {} not taken (overload), {} taken after waiting, {} adopted, {} handed over, {} without a free port, {} bot transfers refused, {} orphan channels hung up, {} events skipped, {} reconnects, {} internal errors",
            g(&self.calls),
            g(&self.shed),
            g(&self.waited),
            g(&self.adopted),
            g(&self.handed_over),
            g(&self.pool_exhausted),
            g(&self.refused_transfers),
            g(&self.orphans_hung_up),
            g(&self.events_skipped),
            g(&self.reconnects),
            g(&self.panics)
        )
    }
}

/// Requests of one call that end something, sent in order by one teardown thread.
#[derive(Debug)]
pub struct Teardown {
    pub call: CallId,
    pub steps: Vec<TeardownStep>,
}

#[derive(Debug)]
pub enum TeardownStep {
    Hangup {
        channel: String,
        reason: HangupReason,
    },
    DestroyBridge,
}

/// How many teardown threads run: the hang-ups Asterisk may hold at once before a call's end
/// waits for a free thread (a worker never does).
pub const TEARDOWN_THREADS: usize = 24;

/// A teardown thread: performs each [`Teardown`]'s steps in order until `stop` disconnects, then
/// what is still queued, and returns.
pub fn run_teardown(shared: &Shared, queue: &Receiver<Teardown>, stop: &Receiver<()>) {
    loop {
        let job = crossbeam_channel::select! {
            recv(queue) -> job => match job { Ok(job) => job, Err(_) => return },
            recv(stop) -> _ => break,
        };
        shared.tear_down(job);
    }
    while let Ok(job) = queue.try_recv() {
        shared.tear_down(job);
    }
}

/// A new caller waiting for a briefly slow Asterisk to answer normally again.
pub struct Waiter {
    pub call: CallId,
    pub caller: Box<NewCaller>,
    pub since: Instant,
    /// Why it waits (when it started to).
    pub why: Overload,
}

/// How a hang-up came out.
#[derive(Debug)]
pub enum HangUp {
    Done,
    /// 404: the channel had gone already.
    Gone,
    /// No answer, or an error status: remembered for the janitor, which retries it until
    /// Asterisk confirms the channel is gone.
    Failed(AriError),
}

impl Shared {
    /// Hangs `channel` up; a failure is remembered for the janitor (see [`HangUp::Failed`]).
    pub fn hang_up(&self, channel: &str, reason: HangupReason) -> HangUp {
        match self.ari.hangup(channel, reason) {
            Ok(()) => HangUp::Done,
            Err(e) if e.is_not_found() => HangUp::Gone,
            Err(e) => {
                self.unconfirmed.lock().insert(channel.to_string());
                HangUp::Failed(e)
            }
        }
    }

    /// Destroys `call`'s bridge; 404 means it is gone already. A failure is logged (the janitor
    /// removes a bridge whose call is over).
    fn tear_down(&self, job: Teardown) {
        let call = &job.call;
        for step in job.steps {
            match step {
                TeardownStep::Hangup { channel, reason } => match self.hang_up(&channel, reason) {
                    HangUp::Done => debug!("call {call}: hung up {channel}"),
                    HangUp::Gone => debug!("call {call}: {channel} already gone"),
                    HangUp::Failed(e) => warn!("call {call}: {e}; the janitor retries"),
                },
                TeardownStep::DestroyBridge => self.destroy_bridge(call),
            }
        }
    }

    pub fn destroy_bridge(&self, call: &CallId) {
        let bridge = self.ids.bridge(call);
        match self.ari.destroy_bridge(&bridge) {
            Ok(()) => debug!("call {call}: bridge {bridge} destroyed"),
            Err(e) if e.is_not_found() => debug!("call {call}: bridge {bridge} already gone"),
            Err(e) => warn!("call {call}: {e}"),
        }
    }

    /// What a scrape of `/metrics` or `/health` reads of the running service.
    pub fn live(&self) -> Live {
        let mut active = [0u64; CallPhase::ALL.len()];
        for phase in self.registry.lock().values() {
            let label = match phase {
                Phase::Setup => CallPhase::Setup,
                Phase::Media => CallPhase::Media,
                Phase::Transfer => CallPhase::Transfer,
                Phase::Connected => CallPhase::Connected,
                Phase::Ended => continue,
            };
            active[label as usize] += 1;
        }
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Live {
            active,
            pool_free: self.pool.free(),
            pool_total: self.pool.total(),
            stopping: self.draining.load(Ordering::Relaxed),
            ceiling: self.admission.ceiling(),
            admission: self.admission.health().level(),
            waiting: self.waiting.lock().len(),
            pace: self.admission.pace(),
            door_share: match self.admission.door(active.iter().sum::<u64>() as usize) {
                DoorState::Open => 100,
                DoorState::Share(p) => p,
            },
            started: get(&c.calls),
            adopted: get(&c.adopted),
            handed_over: get(&c.handed_over),
            pool_exhausted: get(&c.pool_exhausted),
            orphans_hung_up: get(&c.orphans_hung_up),
            events_skipped: get(&c.events_skipped),
            reconnects: get(&c.reconnects),
        }
    }

    pub fn active_calls(&self) -> usize {
        self.registry.lock().len()
    }

    /// Calls not yet connected to their destination. A drain waits for these: a destination
    /// that answers while no instance runs cannot enter the Stasis application and is lost.
    pub fn calls_not_connected(&self) -> usize {
        self.registry
            .lock()
            .values()
            .filter(|p| **p != Phase::Connected)
            .count()
    }

    /// Calls whose phase (after their last turn) is one `which` picks.
    pub fn calls_where(&self, which: impl Fn(&Phase) -> bool) -> usize {
        self.registry.lock().values().filter(|p| which(p)).count()
    }

    /// The state machine's settings, from the configuration.
    pub(crate) fn policy(&self) -> Policy {
        Policy {
            media_phase: self.config.media.phase,
            dial_timeout: self.config.transfer.dial_timeout,
            on_pool_exhausted: self.config.media.on_pool_exhausted,
            // Set-up is two round trips of POSTs, which are never retried (bridge and externalMedia
            // at once, then addChannel); a third request timeout covers the GET of the caller's RTP
            // address after the bridge on Asterisk before 18.21/20.6 (not its retry), plus slack.
            setup_timeout: self.config.ari.request_timeout * 3 + Duration::from_secs(5),
            bot: None,
        }
    }
}

/// Told of every REST request and its answer by the client: feeds admission's view of Asterisk
/// and the metrics.
pub struct RestObserver {
    pub admission: Arc<Admission>,
}

impl Observer for RestObserver {
    fn sent(&self, method: &str, path: &str) -> u64 {
        self.admission
            .rest_sent(Operation::of(method, path), Instant::now())
    }

    fn request(&self, token: u64, method: &str, path: &str, answer: Answer, took: Duration) {
        // A status, even an error, is an answer; a transport failure is not.
        let op = Operation::of(method, path);
        self.admission
            .rest_answered(token, op, took, answer.answered(), Instant::now());
        let class = match answer {
            Answer::Status(code) => Class::of_status(code),
            Answer::Timeout => Class::Timeout,
            Answer::Connect => Class::Connect,
            Answer::Other => Class::Other,
        };
        metrics::ari_request(method, path, class, took);
    }
}

/// The WebSocket bots of `[bots.*]`, each ready for a bridge to connect to: TLS settings and the
/// authorization header built once, its index in the metrics' bot labels.
#[derive(Debug, Default)]
pub struct BotDirectory {
    specs: HashMap<String, Arc<BotSpec>>,
}

impl BotDirectory {
    /// Builds every bot's bridge settings and registers the bots' names with the metrics.
    pub fn new(config: &BotsConfig) -> BotDirectory {
        let mut specs = HashMap::new();
        for (i, (name, b)) in config.bots.iter().enumerate() {
            let tls = if b.url.starts_with("wss://") {
                // `--check` read the CA file fine; if it became unusable since, the public roots
                // only (a private certificate then fails each handshake, which is logged).
                tls::client_config(b.ca_file.as_deref())
                    .or_else(|e| {
                        error!("bots.{name}.ca_file: {e}; trusting the public roots only");
                        tls::client_config(None)
                    })
                    .ok()
            } else {
                None
            };
            let spec = BotSpec {
                name: name.clone(),
                url: b.url.clone(),
                dialect: b.dialect,
                format: b.format,
                json_control: b.json_control,
                authorization: b.token.as_ref().map(|t| format!("Bearer {}", t.expose())),
                tls,
                connect_timeout: b.connect_timeout,
                ping_interval: b.ping_interval,
                pong_timeout: b.pong_timeout,
                max_queue_frames: (b.max_queue.as_millis() / 20).max(1) as usize,
                metrics: i,
            };
            specs.insert(name.clone(), Arc::new(spec));
        }
        metrics::METRICS.register_bots(config.bots.keys().cloned().collect(), &Bad::KINDS);
        BotDirectory { specs }
    }

    pub fn spec(&self, name: &str) -> Option<Arc<BotSpec>> {
        self.specs.get(name).cloned()
    }
}
