//! What every thread of the running service shares: the REST client, the ids, the configuration,
//! the port pool, the registry of active calls, admission control and the totals.
//!
//! [`Shared`] is built once in `app::run` and handed to every thread as an `Arc`: read-only apart
//! from its atomics and two locks (`registry`, `unconfirmed`). [`Counters`] are the totals the
//! operator reads in the log at shutdown and on `/metrics`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::admission::{Admission, Rejection};
use crate::ari::AriClient;
use crate::call::{Phase, Policy};
use crate::config::Config;
use crate::ids::{CallId, Ids};
use crate::media::SocketPool;

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
    /// (before 18.21 / 20.6): set at every connect from its version.
    pub late_commands: AtomicBool,
    pub admission: Admission,
    /// Callers not taken, for the shedder threads to hang up.
    pub shed: Sender<Rejection>,
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
    pub frames_skipped: AtomicU64,
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
}

impl Counters {
    pub fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{} calls, {} not taken (overload), {} adopted, {} handed over, {} without a free port, {} orphan channels hung up, {} frames skipped, {} reconnects, {} internal errors",
            g(&self.calls),
            g(&self.shed),
            g(&self.adopted),
            g(&self.handed_over),
            g(&self.pool_exhausted),
            g(&self.orphans_hung_up),
            g(&self.frames_skipped),
            g(&self.reconnects),
            g(&self.panics)
        )
    }
}

impl Shared {
    pub fn active_calls(&self) -> usize {
        self.registry.lock().len()
    }

    /// Calls not yet connected to their destination. A drain waits for these: a destination
    /// that answers while no instance runs cannot enter the Stasis application and is lost.
    pub fn calls_not_connected(&self) -> usize {
        self.registry.lock().values().filter(|p| **p != Phase::Connected).count()
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
        }
    }
}
