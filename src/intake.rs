//! Where a new caller comes in: admission's verdict applied — the call posted to its mailbox, the
//! caller kept waiting while Asterisk is briefly slow, a transfer without the bot, or a rejection
//! — and the threads that carry it out: the admission thread (every [`TICK`]: Asterisk's health,
//! the waiting callers, the door) and the shedders that hang up the callers not taken. The policy
//! itself is `admission`'s; this is its effect, run on the event reader (and by `leftovers` for a
//! caller found waiting in the application).
//!
//! A rejection is one request on a shedder thread, never queued behind the workers, whose calls
//! may be the ones waiting on Asterisk. REST requests in flight are bounded by construction: one
//! per worker, one per shedder thread, the admission thread's and the janitor's.
//!
//! The door: while admission is full (Asterisk overloaded, or the ceiling of calls at once
//! reached), voicebot1 keeps the Asterisk global variable `[admission] full_variable` set to a
//! Unix time two seconds ahead, refreshed every second; the sample dialplan answers callers with
//! congestion before `Answer()` while `${EPOCH}` is below it. A refusal at the door costs Asterisk
//! a SIP transaction, where a caller taken then rejected costs it an answer, a Stasis entry and a
//! REST hang-up. If voicebot1 stops or dies, the door opens by itself within two seconds.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};

use crate::admission::{Admission, Change, DoorState, Overload, Rejection, Verdict};
use crate::ari::HangupReason;
use crate::call::Phase;
use crate::config::OnOverload;
use crate::dispatch::{CallEvent, CallMsg, NewCaller, Scheduler};
use crate::ids::CallId;
use crate::metrics;
use crate::shared::{Counters, HangUp, Shared, Waiter};

/// Threads that hang up rejected callers. A waiting caller is rejected at its own deadline, so
/// rejections come at about the rate callers arrive rather than in one burst.
pub const SHEDDERS: usize = 24;

/// How often the admission thread reads Asterisk's health and looks at the waiting callers.
pub const TICK: Duration = Duration::from_millis(100);

/// Callers waiting at most at once; beyond, a new one is rejected at once.
const MAX_WAITING: usize = 300;

/// How far ahead the door is kept shut, and how often that is renewed while full.
const DOOR_AHEAD_S: u64 = 2;
const DOOR_RENEW: Duration = Duration::from_secs(1);
/// The door stays shut at least this long (so a ceiling reached call by call does not make it
/// open and shut every tick).
const DOOR_AT_LEAST: Duration = Duration::from_secs(1);

/// A new caller in the application (a StasisStart with the inbound argument, or a caller found
/// waiting there): a call, a wait, a rejection, a transfer without the bot, or — while a stop is
/// handing calls over — nothing: the caller waits in the application for the next instance.
pub fn offer<S: Send>(shared: &Shared, calls: &Scheduler<S>, call: CallId, caller: Box<NewCaller>) {
    if shared.draining.load(Ordering::SeqCst) {
        info!(
            "call {call}: inbound from {} while voicebot1 is stopping; left waiting for the next voicebot1",
            caller.channel.name
        );
        return;
    }
    let verdict = {
        let registry = shared.registry.lock();
        if registry.contains_key(&call)
            || shared.admission.is_pending(&call)
            || shared.waiting.lock().iter().any(|w| w.call == call)
        {
            // A duplicate (the start-up listing and the StasisStart both found the caller, the
            // janitor found it while its turn was queued): once is enough. Posting it would start
            // the call again if the first ended before the duplicate's turn.
            debug!("call {call}: {} already has its call", caller.channel.name);
            return;
        }
        let (active, setting_up) = load(shared, &registry);
        let now = Instant::now();
        shared.admission.offered(now);
        // Health as of now, not of the last tick: callers come faster than ticks.
        if let Some(change) = shared.admission.tick(active, now) {
            log_change(&change, active);
        }
        match shared.admission.check(active, setting_up, now) {
            // First come, first served: behind those already waiting, for what they wait for.
            Verdict::Take => match shared.waiting.lock().front() {
                Some(first) => Verdict::Wait(first.why.clone()),
                None => Verdict::Take,
            },
            v => v,
        }
    };
    match verdict {
        Verdict::Take => take(shared, calls, call, caller),
        Verdict::Wait(why) => {
            let mut waiting = shared.waiting.lock();
            if waiting.len() >= MAX_WAITING {
                drop(waiting);
                let why = Admission::waited_too_long(Duration::ZERO, &why);
                return not_taken(shared, calls, call, caller, why);
            }
            let queued = waiting
                .iter()
                .filter(|w| matches!(w.why, Overload::Paced { .. }))
                .count();
            if let Some(full) = shared.admission.pace_queue_full(&why, queued) {
                drop(waiting);
                return not_taken(shared, calls, call, caller, full);
            }
            if waiting.is_empty() {
                info!(
                    "call {call}: {} waits ({why}; at most {} ms)",
                    caller.channel.name,
                    shared.config.admission.max_wait.as_millis()
                );
            } else {
                debug!(
                    "call {call}: {} waits behind {} others ({why})",
                    caller.channel.name,
                    waiting.len()
                );
            }
            Counters::bump(&shared.counters.waited);
            waiting.push_back(Waiter {
                call,
                caller,
                since: Instant::now(),
                why,
            });
        }
        Verdict::Reject(why) => not_taken(shared, calls, call, caller, why),
    }
}

/// Calls at once (admitted ones included) and calls being set up.
fn load(shared: &Shared, registry: &std::collections::HashMap<CallId, Phase>) -> (usize, usize) {
    let pending = shared.admission.pending();
    let setting_up = registry.values().filter(|p| **p == Phase::Setup).count() + pending;
    (registry.len() + pending, setting_up)
}

fn take<S: Send>(shared: &Shared, calls: &Scheduler<S>, call: CallId, caller: Box<NewCaller>) {
    shared.admission.admitted(&call, Instant::now());
    calls.post(call, CallMsg::Event(CallEvent::Inbound(caller)));
}

/// A caller admission does not take: rejected by a shedder, or sent on without the bot.
fn not_taken<S: Send>(
    shared: &Shared,
    calls: &Scheduler<S>,
    call: CallId,
    caller: Box<NewCaller>,
    why: crate::admission::Overload,
) {
    let n = Counters::bump(&shared.counters.shed);
    metrics::call_not_taken(why.reason());
    match shared.config.admission.on_overload {
        OnOverload::Reject => {
            let rejection = Rejection {
                call,
                caller: caller.channel.name,
                why,
                at: Instant::now(),
            };
            // The shedders run as long as `shared` does.
            let _ = shared.shed.send(rejection);
        }
        OnOverload::Transfer => {
            info!("call {call}: not taken ({why}; {n} so far): transferring without the bot");
            shared.admission.admitted(&call, Instant::now());
            calls.post(call, CallMsg::Event(CallEvent::Overflow(caller)));
        }
    }
}

/// A waiting caller hung up: forgotten.
pub fn caller_left(shared: &Shared, call: &CallId) {
    let mut waiting = shared.waiting.lock();
    if let Some(i) = waiting.iter().position(|w| &w.call == call) {
        waiting.remove(i);
        debug!("call {call}: the caller hung up while waiting");
    }
}

/// The admission thread: every [`TICK`], Asterisk's health (logged when it changes) and the
/// waiting callers (taken once Asterisk answers normally, rejected after `max_wait`); until `stop`
/// disconnects. It makes no request to Asterisk.
pub fn run_admission<S: Send>(shared: &Shared, calls: &Scheduler<S>, stop: &Receiver<()>) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(TICK) {
        let now = Instant::now();
        let (active, _) = load(shared, &shared.registry.lock());
        if let Some(change) = shared.admission.tick(active, now) {
            log_change(&change, active);
        }
        release_waiting(shared, calls, now);
    }
}

/// The door thread: every [`TICK`], shuts Asterisk's door while voicebot1 is full and opens it
/// once it is not, until `stop` disconnects; then opens it. Its own thread because setting the
/// variable is a request to Asterisk, which may be the one stalled: the admission thread never
/// waits on Asterisk.
pub fn run_door(shared: &Shared, stop: &Receiver<()>) {
    let mut door = Door::default();
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(TICK) {
        let (active, _) = load(shared, &shared.registry.lock());
        door.update(shared, shared.admission.door(active), Instant::now());
    }
    // On the way out the door opens whatever held it shut: no voicebot1 renews it from now on,
    // and a door shut a moment ago would refuse the next instance's first callers.
    door.stop(shared);
}

fn log_change(change: &Change, active: usize) {
    match change {
        Change::Slowed { why } => info!("admission: Asterisk is slow ({why}) with {active} calls active: new callers wait"),
        Change::Overloaded { why, active, ceiling, pace } => warn!(
            "admission: Asterisk is overloaded ({why}) with {active} calls active: door shut, new callers wait, then taking at most {ceiling} calls at once and {pace:.1} a second"
        ),
        Change::CutAgain { why, active, ceiling, pace } => {
            warn!("admission: Asterisk is still overloaded ({why}) with {active} calls active: taking at most {ceiling} calls at once and {pace:.1} a second")
        }
        Change::Recovered { after, ceiling, pace } => info!(
            "admission: Asterisk answers normally again after {:.1} s: taking calls ({}, {})",
            after.as_secs_f64(),
            ceiling.map_or("no ceiling".to_string(), |n| format!("at most {n} at once")),
            pace.map_or("no rate limit".to_string(), |r| format!("at most {r:.1} a second"))
        ),
    }
}

/// Takes the waiting callers Asterisk can take now, first come first served; rejects those that
/// waited `max_wait` (an overload declared meanwhile does not cut their wait short).
fn release_waiting<S: Send>(shared: &Shared, calls: &Scheduler<S>, now: Instant) {
    loop {
        let (waiter, verdict) = {
            let registry = shared.registry.lock();
            let mut waiting = shared.waiting.lock();
            let Some(first) = waiting.front() else { return };
            let waited = now.saturating_duration_since(first.since);
            let (active, setting_up) = load(shared, &registry);
            let verdict = match shared
                .admission
                .check_waiting(active, setting_up, waited, now)
            {
                Verdict::Wait(_) => return,
                v => v,
            };
            let Some(waiter) = waiting.pop_front() else {
                return;
            };
            (waiter, verdict)
        };
        let waited = now.saturating_duration_since(waiter.since);
        match verdict {
            Verdict::Take => {
                info!(
                    "call {}: taken after waiting {} ms ({})",
                    waiter.call,
                    waited.as_millis(),
                    waiter.why
                );
                take(shared, calls, waiter.call, waiter.caller);
            }
            Verdict::Reject(why) => not_taken(shared, calls, waiter.call, waiter.caller, why),
            Verdict::Wait(_) => {}
        }
    }
}

/// The door as voicebot1 last set it.
#[derive(Debug, Default)]
struct Door {
    /// Shut until then (Unix seconds): the dialplan refuses callers, but the share.
    shut_until: Option<u64>,
    /// The share of callers let in, as last set (percent).
    share: Option<u8>,
    renewed: Option<Instant>,
    /// When it was last shut for every caller (it stays so at least `DOOR_AT_LEAST`).
    shut_at: Option<Instant>,
    /// The last failed attempt (retried once a [`DOOR_RENEW`] later), and whether that was
    /// logged already (one warning per run of failures).
    failed_at: Option<Instant>,
    warned: bool,
}

impl Door {
    fn update(&mut self, shared: &Shared, want: DoorState, now: Instant) {
        let limits = &shared.config.admission;
        let Some(variable) = limits.door.as_deref() else {
            return;
        };
        if self
            .failed_at
            .is_some_and(|t| now.saturating_duration_since(t) < DOOR_RENEW)
        {
            return;
        }
        let held = self
            .shut_at
            .is_some_and(|t| now.saturating_duration_since(t) < DOOR_AT_LEAST);
        let want = match want {
            _ if held => DoorState::Share(0),
            // An all-or-nothing door lets everyone in but while voicebot1 takes no one.
            DoorState::Share(p) if p > 0 && limits.door_share.is_none() => DoorState::Open,
            w => w,
        };
        let result = match want {
            DoorState::Open if self.shut_until.is_none() => return,
            DoorState::Open => shared.ari.set_global(variable, "0").map(|()| {
                info!("admission: Asterisk takes every new caller at its door again");
                *self = Door::default();
            }),
            DoorState::Share(p) => self.shut(shared, variable, p, now),
        };
        match result {
            Ok(()) => {
                self.failed_at = None;
                self.warned = false;
            }
            // Tried again a moment later; a door left shut opens by itself.
            Err(e) => {
                self.failed_at = Some(now);
                if std::mem::replace(&mut self.warned, true) {
                    debug!("admission: {e}");
                } else {
                    warn!("admission: cannot set the door variables (admission.full_variable, share_variable): {e}; Asterisk answers every caller meanwhile");
                }
            }
        }
    }

    /// Opens the door for good (voicebot1 stops): at once, not held shut, not waiting for a
    /// retry after a failure.
    fn stop(&mut self, shared: &Shared) {
        self.shut_at = None;
        self.failed_at = None;
        self.update(shared, DoorState::Open, Instant::now());
    }

    /// Lets in `share` percent of new callers (0: none) until 2 s from now, renewed every second.
    fn shut(
        &mut self,
        shared: &Shared,
        variable: &str,
        share: u8,
        now: Instant,
    ) -> Result<(), crate::ari::AriError> {
        // The share first: a door shut with an old share lets in that old share a moment.
        if let Some(share_variable) = shared.config.admission.door_share.as_deref() {
            let moved = self
                .share
                .is_none_or(|old| old.abs_diff(share) >= 3 || (old == 0) != (share == 0));
            if moved {
                shared.ari.set_global(share_variable, &share.to_string())?;
                if share == 0 || self.share.is_none_or(|old| old == 0) || self.shut_until.is_none()
                {
                    if share == 0 {
                        info!("admission: Asterisk refuses every new caller at its door (congestion before Answer()) while voicebot1 is full");
                    } else {
                        info!("admission: Asterisk lets {share} % of new callers in at its door (the others get congestion before Answer()) while voicebot1 paces them");
                    }
                } else {
                    debug!("admission: Asterisk lets {share} % of new callers in at its door");
                }
                self.share = Some(share);
            }
        } else if self.shut_until.is_none() {
            info!("admission: Asterisk refuses every new caller at its door (congestion before Answer()) while voicebot1 is full");
        }
        if share == 0
            && self
                .shut_at
                .is_none_or(|t| now.saturating_duration_since(t) >= DOOR_AT_LEAST)
        {
            self.shut_at = Some(now);
        }
        if self
            .renewed
            .is_none_or(|t| now.saturating_duration_since(t) >= DOOR_RENEW)
            || self.shut_until.is_none()
        {
            let unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let until = unix + DOOR_AHEAD_S;
            shared.ari.set_global(variable, &until.to_string())?;
            self.shut_until = Some(until);
            self.renewed = Some(now);
        }
        Ok(())
    }
}

/// A shedder thread: hangs up rejected callers until `stop` disconnects. A hang-up that fails
/// is left to the janitor, which retries it until Asterisk confirms the caller is gone.
pub fn run_shedder(shared: &Shared, rejections: &Receiver<Rejection>, stop: &Receiver<()>) {
    loop {
        let r = crossbeam_channel::select! {
            recv(rejections) -> r => match r { Ok(r) => r, Err(_) => return },
            recv(stop) -> _ => return,
        };
        let sent = Instant::now();
        let result = shared.hang_up(&r.call.0, HangupReason::Congestion);
        let (ms, asterisk_ms) = (r.at.elapsed().as_millis(), sent.elapsed().as_millis());
        match result {
            HangUp::Done => info!(
                "call {}: rejected with congestion in {ms} ms ({asterisk_ms} ms of it Asterisk's answer), {} not taken ({})",
                r.call, r.caller, r.why
            ),
            HangUp::Gone => info!("call {}: not taken ({}); the caller had gone already", r.call, r.why),
            HangUp::Failed(e) => warn!("call {}: not taken ({}); {e}; the janitor retries", r.call, r.why),
        }
    }
}

/// The channel for [`Rejection`]s.
pub fn channel() -> (Sender<Rejection>, Receiver<Rejection>) {
    crossbeam_channel::unbounded()
}
