//! Where a new caller comes in: admission's verdict applied (the call posted to its mailbox, a
//! transfer without the bot, or a rejection), and the shedder threads that hang up the callers
//! not taken. The policy itself is `admission`'s; this is its effect, run on the event reader
//! (and by `leftovers` for a caller found waiting in the application).
//!
//! A rejection is one request on a shedder thread, never queued behind the workers, whose calls
//! may be the ones waiting on Asterisk. REST requests in flight are bounded by construction: one
//! per worker, one per shedder thread, and the janitor's.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};

use crate::admission::Rejection;
use crate::ari::HangupReason;
use crate::config::OnOverload;
use crate::dispatch::{CallEvent, CallMsg, NewCaller, Scheduler};
use crate::ids::CallId;
use crate::metrics;
use crate::shared::{Counters, HangUp, Shared};

/// Threads that hang up rejected callers.
pub const SHEDDERS: usize = 32;

/// A new caller in the application (a StasisStart with the inbound argument, or a caller found
/// waiting there): a call, a rejection, a transfer without the bot, or — while a stop is handing
/// calls over — nothing: the caller waits in the application for the next instance.
pub fn offer<S: Send>(shared: &Shared, calls: &Scheduler<S>, call: CallId, caller: Box<NewCaller>) {
    if shared.draining.load(Ordering::SeqCst) {
        info!("call {call}: inbound from {} while voicebot1 is stopping; left waiting for the next voicebot1", caller.channel.name);
        return;
    }
    let verdict = {
        let registry = shared.registry.lock();
        if registry.contains_key(&call) || shared.admission.is_pending(&call) {
            // A duplicate (the start-up listing and the StasisStart both found the caller, the
            // janitor found it while its turn was queued): once is enough. Posting it would start
            // the call again if the first ended before the duplicate's turn.
            debug!("call {call}: {} already has its call", caller.channel.name);
            return;
        }
        shared
            .admission
            .check(&registry, &shared.responsiveness, Instant::now())
    };
    match verdict {
        Ok(()) => {
            shared.admission.admitted(&call);
            calls.post(call, CallMsg::Event(CallEvent::Inbound(caller)));
        }
        Err(why) => {
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
                    info!(
                        "call {call}: not taken ({why}; {n} so far): transferring without the bot"
                    );
                    shared.admission.admitted(&call);
                    calls.post(call, CallMsg::Event(CallEvent::Overflow(caller)));
                }
            }
        }
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
