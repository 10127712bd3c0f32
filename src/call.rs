//! The life of one call as a pure state machine: `Call::on(input) -> Vec<Action>`.
//!
//! No I/O happens here. The worker performs each [`Action`] (a REST request, a socket lease, a
//! timer) and feeds its outcome back as an [`Input`]; events from Asterisk come in as inputs too.
//! Every interleaving of hang-ups, answers and failures is therefore a plain unit test.
//!
//! Invariants:
//! - At most one set-up step is outstanding at a time: each forward step is emitted only when
//!   the previous one succeeded. A failed step, or a party leaving, ends the call. With the bot,
//!   set-up is two steps, two round trips: the bridge and the externalMedia channel at once (their
//!   ids are voicebot1's own, nothing waits for the other), then one `addChannel` with the caller
//!   and the media channel once the latter is in Stasis.
//! - Ending is one path, [`Call::end`], run at most once: it hangs up every channel the call may
//!   have created (a request that timed out may still have created it), destroys the bridge,
//!   releases the socket and finishes. Inputs after the end produce nothing.
//! - Anything requested is cleaned up: a leg is tracked from the moment its request is sent, not
//!   from its success.

use std::fmt;
use std::time::Duration;

use crate::ari::HangupReason;
use crate::config::{AfterBot, PoolExhausted};
use crate::ids::Role;
use crate::metrics::Outcome;

/// What the worker tells the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The pool answered the lease request: `true` if a socket was leased.
    Leased(bool),
    /// A REST step finished.
    Done(Step, Result<(), Failure>),
    /// The externalMedia channel entered Stasis.
    MediaUp,
    /// The destination answered (its channel entered Stasis).
    DestUp,
    /// A party's channel left Stasis or was destroyed, with the hang-up cause when known.
    Left(Role, Option<i64>),
    /// A timer the call asked for fired.
    Timer(Timer),
    /// voicebot1 is stopping.
    Shutdown,
    /// voicebot1 is stopping and handing its calls over to the next instance: no more bot for
    /// this call; a caller with the bot is transferred now, one in set-up right after it.
    Drain,
    /// voicebot1 is stopping while Asterisk is slow and hands its calls over as they are: a
    /// caller with the bot stays with it (the next instance transfers it). No transfer starts
    /// from now on for the bot phase's end or the bot's request: a destination called now could
    /// answer while no instance runs, and Asterisk would hang it up (no application to enter).
    Hold,
    /// The bot (a WebSocket bot, not the echo) asked for something or went away; posted by its
    /// session through the call's mailbox, so an event that came first (a hang-up) still wins.
    Bot(BotSays),
}

/// What a WebSocket bot's session tells its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BotSays {
    /// Transfer the caller: to this endpoint (a name of `[transfer.to]`, already resolved and
    /// checked by the worker), or to `[transfer] endpoint` when `None`.
    Transfer(Option<String>),
    /// Hang the caller up (the bot's explicit request).
    Hangup,
    /// The bot ended its session normally (closed the socket, or chan_websocket's `HANGUP`):
    /// the bot's `when_done`.
    Done,
    /// The bot could not be reached, refused, was lost, fell silent or misbehaved beyond
    /// recovery: the bot's `on_failure`.
    Failed,
}

/// A REST step whose outcome the call waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The bridge alone (a call without the bot).
    CreateBridge,
    /// The caller alone (a call without the bot).
    AddCaller,
    /// The bridge and the externalMedia channel, requested at the same time.
    CreateBridgeAndMedia,
    /// The caller and the media channel, in one `addChannel`.
    AddCallerAndMedia,
    Originate,
    AddDest,
}

/// How a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 404: the thing it needed is gone (e.g. the caller hung up meanwhile).
    NotFound,
    /// Anything else (5xx, timeout, refused …), as text for the log.
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The caller has talked to the bot long enough: transfer.
    MediaPhaseOver,
    /// The destination had the dial timeout and a margin to answer; Asterisk should have given up
    /// already, this guards against a lost event.
    DialGuard,
    /// Set-up had the time of its requests and a margin; guards against a lost StasisStart of
    /// the externalMedia channel (e.g. while the WebSocket was reconnecting).
    SetupGuard,
}

/// What the worker must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take a socket from the pool; answer with `Input::Leased`.
    LeaseSocket,
    /// Stop the echo and return the socket.
    ReleaseSocket,
    /// Create the bridge (a call without the bot).
    CreateBridge,
    /// Create the bridge and the externalMedia channel towards the leased socket, at once.
    CreateBridgeAndMedia,
    /// Add one party: the caller of a call without the bot, or the destination.
    AddToBridge(Role),
    /// Add the caller and the bot's media channel, in one request.
    AddCallerAndMedia,
    StartTimer(Timer, Duration),
    /// Indicate ringing to the caller while the destination rings (cosmetic: failure is logged).
    /// Asterisk plays it through the caller's bridge channel; a caller who leaves the bridge
    /// before that channel picked the tone up is frozen in Asterisk for 10 minutes (neither
    /// hang-up nor BYE ends it), so the worker returns only once the tone plays, and the state
    /// machine asks for it only once the destination is really being called.
    Ring,
    StopRing,
    Originate,
    Hangup(Role, HangupReason),
    /// Caller and destination are connected: make each leg's hang-up end the other in Asterisk
    /// itself (hang-up handlers), so the call ends properly even with no voicebot1 running.
    LinkLegs,
    DestroyBridge,
    /// The call is over; the worker forgets it.
    Finish(End),
}

/// How the call ended, for the last log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    CallerHungUp,
    DestinationHungUp,
    /// The destination did not answer: cause from Asterisk (17 busy, 19 no answer, …).
    DestinationFailed(Option<i64>),
    BotLostDuringSetup,
    SetupFailed(Step, Failure),
    /// Set-up did not complete within the set-up timeout.
    SetupTimedOut,
    NoSocket,
    Shutdown,
    /// Handling the call panicked (a bug); the worker ended it by its ids.
    InternalError,
    /// The bot asked for the caller to be hung up, or ended with `when_done = "hangup"`.
    BotHungUp,
    /// The bot failed (unreachable, refused, lost, silent) with `on_failure = "hangup"`.
    BotFailed,
}

impl End {
    /// The one reading of how a call ended, for the state machine (how the caller is hung up),
    /// the log and the metrics.
    pub fn outcome(&self) -> Outcome {
        match self {
            End::CallerHungUp => Outcome::CallerHungUp,
            End::DestinationHungUp => Outcome::DestinationHungUp,
            End::DestinationFailed(cause) => match cause {
                Some(17) => Outcome::DestinationBusy,
                // Cause 0 ("unknown") is how Asterisk before 20.18 / 22.8 reports a dial timeout
                // (asterisk/asterisk #1660): the caller hears "no answer" on every version. 18 no
                // user responding, 19 no answer, 20 subscriber absent; none: the dial guard fired.
                None | Some(0 | 18..=20) => Outcome::DestinationNoAnswer,
                Some(_) => Outcome::DestinationFailed,
            },
            End::BotLostDuringSetup => Outcome::MediaLost,
            End::SetupFailed(..) => Outcome::SetupFailed,
            End::SetupTimedOut => Outcome::SetupTimedOut,
            End::NoSocket => Outcome::NoPort,
            End::Shutdown => Outcome::Shutdown,
            End::InternalError => Outcome::InternalError,
            End::BotHungUp => Outcome::BotHangup,
            End::BotFailed => Outcome::BotFailed,
        }
    }

    /// How the caller is hung up (if still there): the cause the caller's side sees.
    fn caller_reason(&self) -> HangupReason {
        match self.outcome() {
            Outcome::CallerHungUp
            | Outcome::DestinationHungUp
            | Outcome::Shutdown
            | Outcome::BotHangup => HangupReason::Normal,
            Outcome::DestinationBusy => HangupReason::Busy,
            Outcome::DestinationNoAnswer => HangupReason::NoAnswer,
            Outcome::DestinationFailed
            | Outcome::MediaLost
            | Outcome::SetupFailed
            | Outcome::SetupTimedOut
            | Outcome::NoPort
            | Outcome::InternalError
            | Outcome::BotFailed => HangupReason::Congestion,
        }
    }
}

/// The log's words for how a call ended (`ended (…)`).
impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::CallerHungUp => f.write_str("caller hung up"),
            End::DestinationHungUp => f.write_str("destination hung up"),
            End::DestinationFailed(Some(cause)) => write!(
                f,
                "destination did not answer: cause {cause} {}",
                cause_text(*cause)
            ),
            End::DestinationFailed(None) => f.write_str("destination did not answer in time"),
            End::BotLostDuringSetup => f.write_str("media channel lost during set-up"),
            End::SetupFailed(step, Failure::NotFound) => write!(f, "{step:?} failed: not found"),
            End::SetupFailed(step, Failure::Other(m)) => write!(f, "{step:?} failed: {m}"),
            End::SetupTimedOut => f.write_str("set-up timed out"),
            End::NoSocket => f.write_str("no free media port"),
            End::Shutdown => f.write_str("voicebot1 shutting down"),
            End::InternalError => f.write_str("internal error"),
            End::BotHungUp => f.write_str("the bot hung up"),
            End::BotFailed => f.write_str("the bot failed"),
        }
    }
}

/// Q.850 causes an operator meets here.
fn cause_text(cause: i64) -> &'static str {
    match cause {
        0 => "(unknown: how Asterisk before 20.18/22.8 reports a dial timeout)",
        1 => "(unallocated number)",
        3 => "(no route to destination)",
        16 => "(normal clearing)",
        17 => "(user busy)",
        18 => "(no user responding)",
        19 => "(no answer)",
        20 => "(subscriber absent)",
        21 => "(call rejected)",
        27 => "(destination out of order)",
        34 => "(no circuit available)",
        38 => "(network out of order)",
        41 => "(temporary failure)",
        _ => "",
    }
}

/// What a party's channel is, from voicebot1's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    /// Never requested: nothing to clean up.
    None,
    /// Requested (maybe created, maybe not yet in Stasis).
    Requested,
    /// In Stasis (entered the application).
    Up,
    /// In the bridge.
    Bridged,
    /// voicebot1 hung it up; its StasisEnd is expected.
    HungUp,
    /// It left on its own.
    Gone,
}

impl Leg {
    /// Whether the channel may exist and must be hung up at the end.
    fn may_exist(self) -> bool {
        matches!(self, Leg::Requested | Leg::Up | Leg::Bridged)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Socket, bridge, externalMedia being set up.
    Setup,
    /// Caller and bot bridged; the media timer runs.
    Media,
    /// The destination is being called.
    Transfer,
    /// Caller and destination bridged.
    Connected,
    Ended,
}

/// The phase of a call an earlier voicebot1 left in Asterisk, read from what exists (see
/// `leftovers::plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Caller and destination in the bridge.
    Connected,
    /// The destination answered but is not in the bridge yet.
    DestAnswered,
    /// The destination is being called.
    DestRinging,
    /// The caller is with the bot (whose echo died with the earlier instance).
    WithBot,
}

/// The settings that change what the call does.
#[derive(Debug, Clone)]
pub struct Policy {
    pub media_phase: Duration,
    pub dial_timeout: Duration,
    pub on_pool_exhausted: PoolExhausted,
    /// How long set-up (bridge, externalMedia, its StasisStart) may take before the call is
    /// given up.
    pub setup_timeout: Duration,
    /// What a WebSocket bot's own end means; `None` for the echo, which has no say (the call
    /// leaves it after `media_phase`).
    pub bot: Option<BotRules>,
}

/// What a WebSocket bot's end means for the caller (`[bots.NAME]` `when_done`, `on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotRules {
    pub when_done: AfterBot,
    pub on_failure: AfterBot,
}

/// Margin past the dial timeout before voicebot1 stops waiting for Asterisk to report it.
const DIAL_GUARD_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Call {
    policy: Policy,
    phase: Phase,
    caller_gone: bool,
    bridge: bool,
    socket: bool,
    media: Leg,
    /// `CreateBridgeAndMedia` succeeded (the channel's StasisStart may come before or after).
    media_created: bool,
    dest: Leg,
    /// Draining: the bot phase ends as soon as it would begin.
    draining: bool,
    /// Held for a handover as it is (`Input::Hold`): the bot phase does not end here.
    holding: bool,
    /// The bot asked to leave before the caller was bridged with it: the transfer it asked for
    /// (`Some(None)`: the default destination) starts as soon as set-up completes.
    leave: Option<Option<String>>,
    /// Where the transfer goes: a `[transfer.to]` endpoint the bot named, or `None` for
    /// `[transfer] endpoint`.
    destination: Option<String>,
}

impl Call {
    /// A new inbound call; returns it with its first actions.
    pub fn start(policy: Policy) -> (Call, Vec<Action>) {
        let call = Call {
            policy,
            phase: Phase::Setup,
            caller_gone: false,
            bridge: false,
            socket: false,
            media: Leg::None,
            media_created: false,
            dest: Leg::None,
            draining: false,
            holding: false,
            leave: None,
            destination: None,
        };
        let guard = call.policy.setup_timeout;
        (
            call,
            vec![
                Action::StartTimer(Timer::SetupGuard, guard),
                Action::LeaseSocket,
            ],
        )
    }

    /// A call an earlier voicebot1 left, going on from where it was: a connected call is left
    /// alone, a transfer goes on, a caller with the bot is transferred now (the bot was in the
    /// earlier process). `media` says whether its externalMedia channel still exists.
    pub fn adopt(policy: Policy, how: Adopted, media: bool) -> (Call, Vec<Action>) {
        let mut call = Call {
            policy,
            phase: Phase::Transfer,
            caller_gone: false,
            bridge: true,
            socket: false,
            media: if media { Leg::Bridged } else { Leg::None },
            media_created: media,
            dest: Leg::None,
            draining: false,
            holding: false,
            leave: None,
            destination: None,
        };
        let mut actions = Vec::new();
        if how != Adopted::WithBot && call.media.may_exist() {
            call.media = Leg::HungUp;
            actions.push(Action::Hangup(Role::Media, HangupReason::Normal));
        }
        match how {
            Adopted::Connected => {
                call.phase = Phase::Connected;
                call.dest = Leg::Bridged;
                // The earlier instance may have died before linking them (a 2nd handler is harmless).
                actions.push(Action::LinkLegs);
            }
            Adopted::DestAnswered => {
                call.dest = Leg::Up;
                actions.extend([Action::StopRing, Action::AddToBridge(Role::Dest)]);
            }
            Adopted::DestRinging => {
                call.dest = Leg::Requested;
                actions.push(Action::StartTimer(
                    Timer::DialGuard,
                    call.policy.dial_timeout + DIAL_GUARD_MARGIN,
                ));
            }
            Adopted::WithBot => {
                call.phase = Phase::Media;
                actions.extend(call.transfer());
            }
        }
        (call, actions)
    }

    /// Whether the next voicebot1 can take this call over as it is (see `leftovers::plan`): the
    /// caller is with the bot (the next instance transfers it: a stop never does worse than a
    /// crash), transferred or connected; not a half-made set-up.
    pub fn can_hand_over(&self) -> bool {
        matches!(
            self.phase,
            Phase::Media | Phase::Transfer | Phase::Connected
        )
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Where `Action::Originate` calls: a `[transfer.to]` endpoint the bot asked for, or `None`
    /// for `[transfer] endpoint`.
    pub fn destination(&self) -> Option<&str> {
        self.destination.as_deref()
    }

    /// Whether the externalMedia channel was created and its StasisStart is still awaited (after a
    /// reconnect, a channel that exists answers it: its StasisStart was lost with the WebSocket).
    pub fn awaits_media_start(&self) -> bool {
        self.phase == Phase::Setup && self.media == Leg::Requested && self.media_created
    }

    /// Whether voicebot1 expects `role`'s channel to exist (for reconciling with Asterisk).
    pub fn expects(&self, role: Role) -> bool {
        match role {
            Role::Caller => !self.caller_gone,
            Role::Media => matches!(self.media, Leg::Up | Leg::Bridged),
            Role::Dest => matches!(self.dest, Leg::Up | Leg::Bridged),
        }
    }

    pub fn on(&mut self, input: Input) -> Vec<Action> {
        if self.phase == Phase::Ended {
            return Vec::new();
        }
        match input {
            Input::Leased(true) => {
                self.socket = true;
                self.bridge = true;
                self.media = Leg::Requested;
                vec![Action::CreateBridgeAndMedia]
            }
            // No bot while draining, whatever the pool policy says.
            Input::Leased(false) if self.draining => {
                self.bridge = true;
                vec![Action::CreateBridge]
            }
            Input::Leased(false) => match self.policy.on_pool_exhausted {
                PoolExhausted::Transfer => {
                    self.bridge = true;
                    vec![Action::CreateBridge]
                }
                PoolExhausted::Hangup => self.end(End::NoSocket),
            },
            Input::Done(step, Err(f)) => self.end(End::SetupFailed(step, f)),
            Input::Done(Step::CreateBridge, Ok(())) => vec![Action::AddToBridge(Role::Caller)],
            Input::Done(Step::AddCaller, Ok(())) => self.transfer(),
            Input::Done(Step::CreateBridgeAndMedia, Ok(())) => {
                self.media_created = true;
                if self.media == Leg::Up {
                    vec![Action::AddCallerAndMedia]
                } else {
                    Vec::new()
                }
            }
            Input::MediaUp => {
                if self.media != Leg::Requested {
                    // Not ours to expect (already hung up, or never requested): make sure it goes.
                    return vec![Action::Hangup(Role::Media, HangupReason::Normal)];
                }
                self.media = Leg::Up;
                if self.media_created {
                    vec![Action::AddCallerAndMedia]
                } else {
                    Vec::new()
                }
            }
            Input::Done(Step::AddCallerAndMedia, Ok(())) => {
                self.media = Leg::Bridged;
                self.phase = Phase::Media;
                if let Some(to) = self.leave.take() {
                    self.destination = to;
                    return self.transfer();
                }
                if self.draining {
                    return self.transfer();
                }
                vec![Action::StartTimer(
                    Timer::MediaPhaseOver,
                    self.policy.media_phase,
                )]
            }
            Input::Drain => {
                self.draining = true;
                if self.phase == Phase::Media {
                    self.transfer()
                } else {
                    Vec::new()
                }
            }
            Input::Hold => {
                self.holding = true;
                Vec::new()
            }
            Input::Timer(Timer::MediaPhaseOver) if self.phase == Phase::Media && !self.holding => {
                self.transfer()
            }
            Input::Done(Step::Originate, Ok(())) => vec![Action::Ring],
            // Already answered: a StasisStart read after the call was adopted with its
            // destination up.
            Input::DestUp
                if matches!(self.dest, Leg::Up | Leg::Bridged) && self.phase != Phase::Ended =>
            {
                Vec::new()
            }
            Input::DestUp => {
                if self.phase != Phase::Transfer || self.dest != Leg::Requested {
                    return vec![Action::Hangup(Role::Dest, HangupReason::Normal)];
                }
                self.dest = Leg::Up;
                vec![Action::StopRing, Action::AddToBridge(Role::Dest)]
            }
            Input::Done(Step::AddDest, Ok(())) => {
                self.dest = Leg::Bridged;
                self.phase = Phase::Connected;
                vec![Action::LinkLegs]
            }
            Input::Timer(Timer::DialGuard)
                if self.phase == Phase::Transfer && self.dest == Leg::Requested =>
            {
                self.end(End::DestinationFailed(None))
            }
            Input::Timer(Timer::SetupGuard) if self.phase == Phase::Setup => {
                self.end(End::SetupTimedOut)
            }
            Input::Timer(_) => Vec::new(),
            Input::Left(Role::Caller, _) => {
                self.caller_gone = true;
                self.end(End::CallerHungUp)
            }
            Input::Left(Role::Media, _) => match self.media {
                Leg::HungUp | Leg::Gone | Leg::None => {
                    self.media = if self.media == Leg::None {
                        Leg::None
                    } else {
                        Leg::Gone
                    };
                    Vec::new()
                }
                _ => {
                    self.media = Leg::Gone;
                    if self.phase == Phase::Media {
                        // The bot went away mid-conversation: the caller still gets the transfer.
                        self.transfer()
                    } else {
                        self.end(End::BotLostDuringSetup)
                    }
                }
            },
            Input::Left(Role::Dest, cause) => match self.dest {
                Leg::None | Leg::HungUp | Leg::Gone => Vec::new(),
                Leg::Requested => {
                    self.dest = Leg::Gone;
                    self.end(End::DestinationFailed(cause))
                }
                Leg::Up | Leg::Bridged => {
                    self.dest = Leg::Gone;
                    self.end(End::DestinationHungUp)
                }
            },
            Input::Shutdown => self.end(End::Shutdown),
            Input::Bot(says) => self.on_bot(says),
        }
    }

    /// The bot asked for something or went away. In the media phase the caller leaves the bot
    /// now; during set-up a hang-up ends the call at once and a transfer waits until the caller
    /// is bridged (there is no bridge to ring in before); once the caller has left the bot,
    /// whatever the bot says is too late.
    fn on_bot(&mut self, says: BotSays) -> Vec<Action> {
        let Some(rules) = self.policy.bot else {
            return Vec::new();
        };
        let after = |rule: AfterBot, end: End| match rule {
            AfterBot::Transfer => Ok(None),
            AfterBot::Hangup => Err(end),
        };
        let next = match says {
            BotSays::Transfer(to) => Ok(to),
            BotSays::Hangup => Err(End::BotHungUp),
            BotSays::Done => after(rules.when_done, End::BotHungUp),
            BotSays::Failed => after(rules.on_failure, End::BotFailed),
        };
        match (self.phase, next) {
            (Phase::Setup | Phase::Media, Err(end)) => self.end(end),
            // Held for a handover: the next instance transfers the caller.
            (Phase::Media, Ok(_)) if self.holding => Vec::new(),
            (Phase::Media, Ok(to)) => {
                self.destination = to;
                self.transfer()
            }
            (Phase::Setup, Ok(to)) => {
                self.leave.get_or_insert(to);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Leaves the bot and calls the destination. The destination is called first: a voicebot1
    /// killed at any point of this leaves the caller still with the bot or with a destination,
    /// both of which the next instance adopts (`leftovers::plan`), never alone in its bridge,
    /// which reads as a destination lost while no instance ran.
    fn transfer(&mut self) -> Vec<Action> {
        self.phase = Phase::Transfer;
        self.dest = Leg::Requested;
        let mut actions = vec![Action::Originate];
        if self.media.may_exist() {
            self.media = Leg::HungUp;
            actions.push(Action::Hangup(Role::Media, HangupReason::Normal));
        }
        if self.socket {
            self.socket = false;
            actions.push(Action::ReleaseSocket);
        }
        // Ringback only once Asterisk has accepted the origination (`Input::Done(Originate, Ok)`):
        // a ringback started and ended within a millisecond can freeze the caller (see `Action::Ring`).
        actions.push(Action::StartTimer(
            Timer::DialGuard,
            self.policy.dial_timeout + DIAL_GUARD_MARGIN,
        ));
        actions
    }

    /// The one way a call ends. Safe to reach from any phase, and only once.
    fn end(&mut self, how: End) -> Vec<Action> {
        if self.phase == Phase::Ended {
            return Vec::new();
        }
        self.phase = Phase::Ended;
        let caller_reason = how.caller_reason();
        let mut actions = Vec::new();
        if !self.caller_gone {
            self.caller_gone = true;
            actions.push(Action::Hangup(Role::Caller, caller_reason));
        }
        if self.media.may_exist() {
            self.media = Leg::HungUp;
            actions.push(Action::Hangup(Role::Media, HangupReason::Normal));
        }
        if self.dest.may_exist() {
            self.dest = Leg::HungUp;
            actions.push(Action::Hangup(Role::Dest, HangupReason::Normal));
        }
        if self.bridge {
            self.bridge = false;
            actions.push(Action::DestroyBridge);
        }
        if self.socket {
            self.socket = false;
            actions.push(Action::ReleaseSocket);
        }
        actions.push(Action::Finish(how));
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    fn policy() -> Policy {
        Policy {
            media_phase: Duration::from_secs(7),
            dial_timeout: Duration::from_secs(30),
            on_pool_exhausted: PoolExhausted::Transfer,
            setup_timeout: Duration::from_secs(15),
            bot: None,
        }
    }

    fn ok(step: Step) -> Input {
        Input::Done(step, Ok(()))
    }

    fn failed(step: Step) -> Input {
        Input::Done(step, Err(Failure::Other("HTTP 500".into())))
    }

    /// A call whose externalMedia request has just been sent.
    fn media_requested() -> Call {
        let (mut c, _) = Call::start(policy());
        assert_eq!(c.on(Input::Leased(true)), vec![CreateBridgeAndMedia]);
        c
    }

    /// A call driven to the media phase (caller and bot bridged).
    fn in_media_phase() -> Call {
        let (mut c, first) = Call::start(policy());
        assert_eq!(
            first,
            vec![
                StartTimer(Timer::SetupGuard, Duration::from_secs(15)),
                LeaseSocket
            ]
        );
        assert_eq!(c.on(Input::Leased(true)), vec![CreateBridgeAndMedia]);
        assert_eq!(c.on(ok(Step::CreateBridgeAndMedia)), vec![]);
        assert_eq!(c.on(Input::MediaUp), vec![AddCallerAndMedia]);
        assert_eq!(
            c.on(ok(Step::AddCallerAndMedia)),
            vec![StartTimer(Timer::MediaPhaseOver, Duration::from_secs(7))]
        );
        assert_eq!(c.phase(), Phase::Media);
        c
    }

    /// A call whose destination is ringing.
    fn in_transfer() -> Call {
        let mut c = in_media_phase();
        assert_eq!(
            c.on(Input::Timer(Timer::MediaPhaseOver)),
            vec![
                Originate,
                Hangup(Role::Media, HangupReason::Normal),
                ReleaseSocket,
                StartTimer(Timer::DialGuard, Duration::from_secs(35))
            ]
        );
        assert_eq!(c.on(ok(Step::Originate)), vec![Ring]);
        // The StasisEnd of the media channel we hung up is expected and changes nothing.
        assert_eq!(c.on(Input::Left(Role::Media, Some(16))), vec![]);
        assert_eq!(c.phase(), Phase::Transfer);
        c
    }

    fn connected() -> Call {
        let mut c = in_transfer();
        assert_eq!(c.on(Input::DestUp), vec![StopRing, AddToBridge(Role::Dest)]);
        assert_eq!(c.on(ok(Step::AddDest)), vec![LinkLegs]);
        assert_eq!(c.phase(), Phase::Connected);
        c
    }

    #[test]
    fn full_call_caller_hangs_up_after_transfer() {
        let mut c = connected();
        assert_eq!(
            c.on(Input::Left(Role::Caller, Some(16))),
            vec![
                Hangup(Role::Dest, HangupReason::Normal),
                DestroyBridge,
                Finish(End::CallerHungUp)
            ]
        );
        assert_eq!(c.phase(), Phase::Ended);
    }

    #[test]
    fn media_stasis_start_before_create_response_still_bridges() {
        let mut c = media_requested();
        assert_eq!(c.on(Input::MediaUp), vec![]);
        assert_eq!(
            c.on(ok(Step::CreateBridgeAndMedia)),
            vec![AddCallerAndMedia]
        );
    }

    #[test]
    fn hangup_during_setup_cleans_what_was_requested() {
        // Caller leaves while the externalMedia request is outstanding (or timed out).
        let mut c = media_requested();
        assert_eq!(
            c.on(Input::Left(Role::Caller, Some(16))),
            vec![
                Hangup(Role::Media, HangupReason::Normal),
                DestroyBridge,
                ReleaseSocket,
                Finish(End::CallerHungUp)
            ]
        );
        // Late results and events are ignored.
        assert_eq!(c.on(ok(Step::CreateBridgeAndMedia)), vec![]);
        assert_eq!(c.on(Input::MediaUp), vec![]);
    }

    #[test]
    fn hangup_while_bridge_and_media_are_requested_removes_both() {
        let mut c = media_requested();
        assert_eq!(
            c.on(Input::Left(Role::Caller, None)),
            vec![
                Hangup(Role::Media, HangupReason::Normal),
                DestroyBridge,
                ReleaseSocket,
                Finish(End::CallerHungUp)
            ]
        );
    }

    #[test]
    fn a_failed_bridge_or_media_request_removes_both_and_hangs_up_the_caller() {
        let mut c = media_requested();
        assert_eq!(
            c.on(failed(Step::CreateBridgeAndMedia)),
            vec![
                Hangup(Role::Caller, HangupReason::Congestion),
                Hangup(Role::Media, HangupReason::Normal),
                DestroyBridge,
                ReleaseSocket,
                Finish(End::SetupFailed(
                    Step::CreateBridgeAndMedia,
                    Failure::Other("HTTP 500".into())
                ))
            ]
        );
    }

    #[test]
    fn a_call_without_the_bot_adds_the_caller_alone_then_transfers() {
        let (mut c, _) = Call::start(policy());
        assert_eq!(c.on(Input::Leased(false)), vec![CreateBridge]);
        assert_eq!(
            c.on(ok(Step::CreateBridge)),
            vec![AddToBridge(Role::Caller)]
        );
        assert!(c.on(ok(Step::AddCaller)).contains(&Originate));
        // A media StasisStart can only be a stray: it is hung up.
        assert_eq!(
            c.on(Input::MediaUp),
            vec![Hangup(Role::Media, HangupReason::Normal)]
        );
    }

    #[test]
    fn caller_hangup_during_media_phase_cancels_origination() {
        let mut c = in_media_phase();
        assert_eq!(
            c.on(Input::Left(Role::Caller, Some(16))),
            vec![
                Hangup(Role::Media, HangupReason::Normal),
                DestroyBridge,
                ReleaseSocket,
                Finish(End::CallerHungUp)
            ]
        );
        // The media timer fires later: nothing happens, in particular no Originate.
        assert_eq!(c.on(Input::Timer(Timer::MediaPhaseOver)), vec![]);
    }

    #[test]
    fn caller_hangup_while_destination_rings_hangs_up_the_destination() {
        let mut c = in_transfer();
        assert_eq!(
            c.on(Input::Left(Role::Caller, Some(16))),
            vec![
                Hangup(Role::Dest, HangupReason::Normal),
                DestroyBridge,
                Finish(End::CallerHungUp)
            ]
        );
    }

    #[test]
    fn destination_answers_after_the_caller_left_is_hung_up() {
        let mut c = in_transfer();
        c.on(Input::Left(Role::Caller, Some(16)));
        // The call is over; the worker forgets it, and treats the late StasisStart as an orphan.
        assert_eq!(c.on(Input::DestUp), vec![]);
    }

    #[test]
    fn destination_busy_hangs_up_the_caller_with_busy() {
        let mut c = in_transfer();
        assert_eq!(
            c.on(Input::Left(Role::Dest, Some(17))),
            vec![
                Hangup(Role::Caller, HangupReason::Busy),
                DestroyBridge,
                Finish(End::DestinationFailed(Some(17)))
            ]
        );
    }

    #[test]
    fn destination_no_answer_hangs_up_the_caller() {
        let mut c = in_transfer();
        assert_eq!(
            c.on(Input::Left(Role::Dest, Some(19))),
            vec![
                Hangup(Role::Caller, HangupReason::NoAnswer),
                DestroyBridge,
                Finish(End::DestinationFailed(Some(19)))
            ]
        );
    }

    #[test]
    fn the_destination_is_called_before_the_bot_is_let_go() {
        // A voicebot1 killed between two of these requests leaves the caller with the bot or with
        // a destination, which the next instance adopts; a caller alone in its bridge it removes.
        for a in [
            in_media_phase().on(Input::Timer(Timer::MediaPhaseOver)),
            in_media_phase().on(Input::Drain),
        ] {
            let at = |x: &Action| a.iter().position(|y| y == x);
            assert!(
                at(&Originate) < at(&Hangup(Role::Media, HangupReason::Normal)),
                "{a:?}"
            );
        }
    }

    #[test]
    fn drain_transfers_a_caller_with_the_bot_now() {
        let mut c = in_media_phase();
        let a = c.on(Input::Drain);
        assert_eq!(
            a[..3],
            [
                Originate,
                Hangup(Role::Media, HangupReason::Normal),
                ReleaseSocket
            ]
        );
        assert!(c.can_hand_over());
    }

    #[test]
    fn drain_during_set_up_transfers_as_soon_as_the_bot_is_bridged() {
        let mut c = media_requested();
        assert_eq!(c.on(Input::Drain), vec![]);
        assert!(!c.can_hand_over());
        assert_eq!(c.on(ok(Step::CreateBridgeAndMedia)), vec![]);
        assert_eq!(c.on(Input::MediaUp), vec![AddCallerAndMedia]);
        let a = c.on(ok(Step::AddCallerAndMedia));
        assert!(
            a.contains(&Originate)
                && !a
                    .iter()
                    .any(|x| matches!(x, StartTimer(Timer::MediaPhaseOver, _))),
            "{a:?}"
        );
    }

    #[test]
    fn a_call_started_while_draining_skips_the_bot_even_when_the_pool_policy_says_hang_up() {
        let (mut c, _) = Call::start(Policy {
            on_pool_exhausted: PoolExhausted::Hangup,
            ..policy()
        });
        c.on(Input::Drain);
        assert_eq!(c.on(Input::Leased(false)), vec![CreateBridge]);
        assert_eq!(
            c.on(ok(Step::CreateBridge)),
            vec![AddToBridge(Role::Caller)]
        );
        assert!(c.on(ok(Step::AddCaller)).contains(&Originate));
    }

    #[test]
    fn adopted_calls_go_on_from_their_phase() {
        let (c, a) = Call::adopt(policy(), Adopted::Connected, false);
        assert_eq!((c.phase(), a), (Phase::Connected, vec![LinkLegs]));
        let (_, a) = Call::adopt(policy(), Adopted::Connected, true);
        assert_eq!(a, vec![Hangup(Role::Media, HangupReason::Normal), LinkLegs]);
        let (_, a) = Call::adopt(policy(), Adopted::DestAnswered, false);
        assert_eq!(a, vec![StopRing, AddToBridge(Role::Dest)]);
        let (mut c, a) = Call::adopt(policy(), Adopted::DestRinging, false);
        assert_eq!(
            a,
            vec![StartTimer(Timer::DialGuard, Duration::from_secs(35))]
        );
        // The answer that was still to come bridges the destination as usual.
        assert_eq!(c.on(Input::DestUp), vec![StopRing, AddToBridge(Role::Dest)]);
        let (c, a) = Call::adopt(policy(), Adopted::WithBot, true);
        assert_eq!(c.phase(), Phase::Transfer);
        assert_eq!(
            a[..2],
            [Originate, Hangup(Role::Media, HangupReason::Normal)]
        );
    }

    #[test]
    fn an_adopted_connected_call_ignores_a_late_stasis_start_and_ends_when_a_party_leaves() {
        let (mut c, _) = Call::adopt(policy(), Adopted::Connected, false);
        assert_eq!(c.on(Input::DestUp), vec![]);
        assert_eq!(
            c.on(Input::Left(Role::Dest, Some(16))),
            vec![
                Hangup(Role::Caller, HangupReason::Normal),
                DestroyBridge,
                Finish(End::DestinationHungUp)
            ]
        );
    }

    fn bot_policy(when_done: AfterBot, on_failure: AfterBot) -> Policy {
        Policy {
            bot: Some(BotRules {
                when_done,
                on_failure,
            }),
            ..policy()
        }
    }

    /// A call with a WebSocket bot, bridged with it.
    fn with_bot(when_done: AfterBot, on_failure: AfterBot) -> Call {
        let (mut c, _) = Call::start(bot_policy(when_done, on_failure));
        c.on(Input::Leased(true));
        c.on(ok(Step::CreateBridgeAndMedia));
        c.on(Input::MediaUp);
        c.on(ok(Step::AddCallerAndMedia));
        assert_eq!(c.phase(), Phase::Media);
        c
    }

    #[test]
    fn a_call_held_for_a_handover_stays_with_its_bot_and_a_hang_up_still_ends_it() {
        let mut c = with_bot(AfterBot::Transfer, AfterBot::Transfer);
        assert_eq!(c.on(Input::Hold), vec![]);
        // Neither the bot phase's end nor the bot's request starts a transfer now.
        assert_eq!(c.on(Input::Timer(Timer::MediaPhaseOver)), vec![]);
        assert_eq!(c.on(Input::Bot(BotSays::Transfer(None))), vec![]);
        assert_eq!(c.on(Input::Bot(BotSays::Done)), vec![]);
        assert_eq!(c.phase(), Phase::Media);
        // The caller hanging up still ends the call.
        let a = c.on(Input::Left(Role::Caller, Some(16)));
        assert_eq!(a.last(), Some(&Finish(End::CallerHungUp)));
    }

    #[test]
    fn a_bot_asking_for_a_named_transfer_sends_the_caller_there() {
        let mut c = with_bot(AfterBot::Transfer, AfterBot::Transfer);
        let to = "PJSIP/4438100@AVAYA-endpoint".to_string();
        let a = c.on(Input::Bot(BotSays::Transfer(Some(to.clone()))));
        assert_eq!(
            a[..3],
            [
                Originate,
                Hangup(Role::Media, HangupReason::Normal),
                ReleaseSocket
            ]
        );
        assert_eq!(c.destination(), Some(to.as_str()));
        // Whatever the bot says once the caller has left it is too late.
        assert_eq!(c.on(Input::Bot(BotSays::Hangup)), vec![]);
        assert_eq!(c.on(Input::Bot(BotSays::Failed)), vec![]);
    }

    #[test]
    fn a_bot_that_hangs_up_ends_the_call_with_normal_clearing() {
        let mut c = with_bot(AfterBot::Transfer, AfterBot::Transfer);
        assert_eq!(
            c.on(Input::Bot(BotSays::Hangup)),
            vec![
                Hangup(Role::Caller, HangupReason::Normal),
                Hangup(Role::Media, HangupReason::Normal),
                DestroyBridge,
                ReleaseSocket,
                Finish(End::BotHungUp)
            ]
        );
    }

    #[test]
    fn the_bots_end_and_failure_follow_when_done_and_on_failure() {
        let mut c = with_bot(AfterBot::Transfer, AfterBot::Hangup);
        let a = c.on(Input::Bot(BotSays::Done));
        assert_eq!(a[0], Originate);
        assert_eq!(c.destination(), None, "the default destination");
        let mut c = with_bot(AfterBot::Hangup, AfterBot::Transfer);
        assert_eq!(
            c.on(Input::Bot(BotSays::Done)).last(),
            Some(&Finish(End::BotHungUp))
        );
        let mut c = with_bot(AfterBot::Hangup, AfterBot::Transfer);
        assert_eq!(c.on(Input::Bot(BotSays::Failed))[0], Originate);
        let mut c = with_bot(AfterBot::Transfer, AfterBot::Hangup);
        let a = c.on(Input::Bot(BotSays::Failed));
        assert_eq!(a[0], Hangup(Role::Caller, HangupReason::Congestion));
        assert_eq!(a.last(), Some(&Finish(End::BotFailed)));
    }

    #[test]
    fn a_bot_failing_during_set_up_transfers_once_the_caller_is_bridged() {
        let (mut c, _) = Call::start(bot_policy(AfterBot::Transfer, AfterBot::Transfer));
        c.on(Input::Leased(true));
        assert_eq!(c.on(Input::Bot(BotSays::Failed)), vec![]);
        c.on(ok(Step::CreateBridgeAndMedia));
        c.on(Input::MediaUp);
        let a = c.on(ok(Step::AddCallerAndMedia));
        assert!(
            a.contains(&Originate)
                && !a
                    .iter()
                    .any(|x| matches!(x, StartTimer(Timer::MediaPhaseOver, _))),
            "{a:?}"
        );
    }

    #[test]
    fn a_bot_hanging_up_during_set_up_ends_the_call_at_once_and_cleans_what_was_requested() {
        let (mut c, _) = Call::start(bot_policy(AfterBot::Transfer, AfterBot::Hangup));
        c.on(Input::Leased(true));
        assert_eq!(
            c.on(Input::Bot(BotSays::Failed)),
            vec![
                Hangup(Role::Caller, HangupReason::Congestion),
                Hangup(Role::Media, HangupReason::Normal),
                DestroyBridge,
                ReleaseSocket,
                Finish(End::BotFailed)
            ]
        );
    }

    #[test]
    fn the_echo_has_no_say_and_a_hang_up_that_came_first_wins() {
        let mut c = in_media_phase();
        assert_eq!(c.on(Input::Bot(BotSays::Hangup)), vec![]);
        let mut c = with_bot(AfterBot::Transfer, AfterBot::Transfer);
        c.on(Input::Left(Role::Caller, Some(16)));
        assert_eq!(c.on(Input::Bot(BotSays::Transfer(None))), vec![]);
    }

    #[test]
    fn every_destination_cause_is_read_once_for_the_caller_the_log_and_the_metrics() {
        use crate::metrics::Outcome as O;
        for (cause, outcome, reason) in [
            (Some(17), O::DestinationBusy, HangupReason::Busy),
            (Some(0), O::DestinationNoAnswer, HangupReason::NoAnswer),
            (Some(18), O::DestinationNoAnswer, HangupReason::NoAnswer),
            (Some(19), O::DestinationNoAnswer, HangupReason::NoAnswer),
            (Some(20), O::DestinationNoAnswer, HangupReason::NoAnswer),
            (None, O::DestinationNoAnswer, HangupReason::NoAnswer),
            (Some(1), O::DestinationFailed, HangupReason::Congestion),
            (Some(21), O::DestinationFailed, HangupReason::Congestion),
            (Some(34), O::DestinationFailed, HangupReason::Congestion),
        ] {
            let end = End::DestinationFailed(cause);
            assert_eq!(end.outcome(), outcome, "cause {cause:?}");
            let mut c = in_transfer();
            let actions = c.on(Input::Left(Role::Dest, cause));
            assert_eq!(actions[0], Hangup(Role::Caller, reason), "cause {cause:?}");
            assert_eq!(actions.last(), Some(&Finish(end.clone())));
            let line = end.to_string();
            match cause {
                Some(n) => assert!(
                    line.starts_with(&format!("destination did not answer: cause {n} ")),
                    "{line}"
                ),
                None => assert_eq!(line, "destination did not answer in time"),
            }
        }
        assert_eq!(
            End::DestinationFailed(Some(20)).to_string(),
            "destination did not answer: cause 20 (subscriber absent)"
        );
        for (end, outcome) in [
            (End::CallerHungUp, O::CallerHungUp),
            (End::DestinationHungUp, O::DestinationHungUp),
            (End::BotLostDuringSetup, O::MediaLost),
            (
                End::SetupFailed(Step::CreateBridge, Failure::NotFound),
                O::SetupFailed,
            ),
            (End::SetupTimedOut, O::SetupTimedOut),
            (End::NoSocket, O::NoPort),
            (End::Shutdown, O::Shutdown),
            (End::InternalError, O::InternalError),
        ] {
            assert_eq!(end.outcome(), outcome, "{end:?}");
        }
    }

    #[test]
    fn destination_dial_timeout_reported_as_cause_0_by_asterisk_16_is_no_answer() {
        // Asterisk before 20.18 / 22.8 destroys an unanswered destination with cause 0.
        let mut c = in_transfer();
        assert_eq!(
            c.on(Input::Left(Role::Dest, Some(0))),
            vec![
                Hangup(Role::Caller, HangupReason::NoAnswer),
                DestroyBridge,
                Finish(End::DestinationFailed(Some(0)))
            ]
        );
    }
    #[test]
    fn setup_guard_ends_a_call_whose_media_channel_never_entered_stasis() {
        let mut c = media_requested();
        c.on(ok(Step::CreateBridgeAndMedia));
        assert_eq!(
            c.on(Input::Timer(Timer::SetupGuard)),
            vec![
                Hangup(Role::Caller, HangupReason::Congestion),
                Hangup(Role::Media, HangupReason::Normal),
                DestroyBridge,
                ReleaseSocket,
                Finish(End::SetupTimedOut)
            ]
        );
        // Once in the media phase, the guard means nothing.
        let mut c = in_media_phase();
        assert_eq!(c.on(Input::Timer(Timer::SetupGuard)), vec![]);
    }

    #[test]
    fn dial_guard_ends_a_call_whose_destination_never_reported() {
        let mut c = in_transfer();
        assert_eq!(
            c.on(Input::Timer(Timer::DialGuard)),
            vec![
                Hangup(Role::Caller, HangupReason::NoAnswer),
                Hangup(Role::Dest, HangupReason::Normal),
                DestroyBridge,
                Finish(End::DestinationFailed(None))
            ]
        );
        // Once answered, the guard means nothing.
        let mut c = connected();
        assert_eq!(c.on(Input::Timer(Timer::DialGuard)), vec![]);
    }

    #[test]
    fn destination_hangs_up_first_hangs_up_the_caller() {
        let mut c = connected();
        assert_eq!(
            c.on(Input::Left(Role::Dest, Some(16))),
            vec![
                Hangup(Role::Caller, HangupReason::Normal),
                DestroyBridge,
                Finish(End::DestinationHungUp)
            ]
        );
    }

    #[test]
    fn originate_refused_hangs_up_the_caller_and_the_requested_destination() {
        let mut c = in_media_phase();
        // No ringback for a destination Asterisk has not accepted to call.
        assert!(!c.on(Input::Timer(Timer::MediaPhaseOver)).contains(&Ring));
        assert_eq!(
            c.on(failed(Step::Originate)),
            vec![
                Hangup(Role::Caller, HangupReason::Congestion),
                Hangup(Role::Dest, HangupReason::Normal),
                DestroyBridge,
                Finish(End::SetupFailed(
                    Step::Originate,
                    Failure::Other("HTTP 500".into())
                ))
            ]
        );
    }

    #[test]
    fn every_setup_failure_releases_what_earlier_steps_took() {
        let (mut c, _) = Call::start(policy());
        c.on(Input::Leased(false));
        assert_eq!(
            c.on(failed(Step::CreateBridge)),
            vec![
                Hangup(Role::Caller, HangupReason::Congestion),
                DestroyBridge,
                Finish(End::SetupFailed(
                    Step::CreateBridge,
                    Failure::Other("HTTP 500".into())
                ))
            ]
        );

        let mut c = media_requested();
        let end = c.on(failed(Step::CreateBridgeAndMedia));
        assert_eq!(
            &end[..4],
            &[
                Hangup(Role::Caller, HangupReason::Congestion),
                Hangup(Role::Media, HangupReason::Normal),
                DestroyBridge,
                ReleaseSocket
            ]
        );
    }

    #[test]
    fn add_caller_not_found_means_the_caller_is_gone() {
        let mut c = media_requested();
        c.on(ok(Step::CreateBridgeAndMedia));
        c.on(Input::MediaUp);
        let end = c.on(Input::Done(Step::AddCallerAndMedia, Err(Failure::NotFound)));
        assert!(
            end.contains(&DestroyBridge)
                && end.contains(&ReleaseSocket)
                && end.contains(&Hangup(Role::Media, HangupReason::Normal)),
            "{end:?}"
        );
    }

    #[test]
    fn pool_exhausted_transfers_straight_to_the_destination() {
        let (mut c, _) = Call::start(policy());
        assert_eq!(c.on(Input::Leased(false)), vec![CreateBridge]);
        c.on(ok(Step::CreateBridge));
        assert_eq!(
            c.on(ok(Step::AddCaller)),
            vec![
                Originate,
                StartTimer(Timer::DialGuard, Duration::from_secs(35))
            ]
        );
    }

    #[test]
    fn pool_exhausted_with_hangup_policy_hangs_up_at_once() {
        let (mut c, _) = Call::start(Policy {
            on_pool_exhausted: PoolExhausted::Hangup,
            ..policy()
        });
        assert_eq!(
            c.on(Input::Leased(false)),
            vec![
                Hangup(Role::Caller, HangupReason::Congestion),
                Finish(End::NoSocket)
            ]
        );
    }

    #[test]
    fn bot_lost_mid_conversation_still_transfers() {
        let mut c = in_media_phase();
        assert_eq!(
            c.on(Input::Left(Role::Media, Some(16))),
            vec![
                Originate,
                ReleaseSocket,
                StartTimer(Timer::DialGuard, Duration::from_secs(35))
            ]
        );
    }

    #[test]
    fn bot_lost_during_setup_ends_the_call() {
        let mut c = media_requested();
        c.on(ok(Step::CreateBridgeAndMedia));
        c.on(Input::MediaUp);
        let end = c.on(Input::Left(Role::Media, Some(16)));
        assert_eq!(end.last(), Some(&Finish(End::BotLostDuringSetup)));
        assert!(
            !end.contains(&Hangup(Role::Media, HangupReason::Normal)),
            "{end:?}"
        );
    }

    #[test]
    fn shutdown_in_every_phase_releases_everything_once() {
        for mut c in [in_media_phase(), in_transfer(), connected()] {
            let end = c.on(Input::Shutdown);
            assert_eq!(end.last(), Some(&Finish(End::Shutdown)));
            assert!(end.contains(&Hangup(Role::Caller, HangupReason::Normal)));
            assert!(end.contains(&DestroyBridge));
            assert_eq!(c.on(Input::Shutdown), vec![]);
            assert_eq!(c.on(Input::Left(Role::Caller, None)), vec![]);
        }
    }

    #[test]
    fn unexpected_stasis_start_of_our_channels_is_hung_up() {
        let mut c = in_media_phase();
        assert_eq!(
            c.on(Input::DestUp),
            vec![Hangup(Role::Dest, HangupReason::Normal)]
        );
        let mut c = in_transfer();
        assert_eq!(
            c.on(Input::MediaUp),
            vec![Hangup(Role::Media, HangupReason::Normal)]
        );
    }

    #[test]
    fn expects_tracks_which_channels_should_exist() {
        let c = in_media_phase();
        assert!(c.expects(Role::Caller) && c.expects(Role::Media) && !c.expects(Role::Dest));
        let c = connected();
        assert!(c.expects(Role::Caller) && !c.expects(Role::Media) && c.expects(Role::Dest));
    }
}
