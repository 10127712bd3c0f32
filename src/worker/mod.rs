//! The effect layer: what a worker does with a call's mail.
//!
//! Workers are interchangeable: `dispatch::Scheduler` hands any free worker a call with mail,
//! with the call's state ([`ActiveCall`]) for that turn only. The worker turns the mail into
//! inputs for the call's state machine and performs the resulting actions: REST requests
//! (blocking `ureq` calls on the worker's thread, holding up only this call), the socket lease and
//! echo, timers (sent to the timer thread, which posts them back to the call when due).
//!
//! How each action is performed is in `perform`, one function per kind of action.
//!
//! A panic in a turn is caught by the scheduler; [`CallHandler::recover`] ends that call by its
//! ids, so a bug costs one call, logged, never a worker or the calls behind it.

mod perform;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use crossbeam_channel::Sender;
use log::{debug, error, info, warn};

use crate::ari::HangupReason;
use crate::audio::Format;
use crate::bot::{self, Opening, StreamIds};
use crate::call::{Action, Adopted, BotRules, BotSays, Call, End, Input, Phase};
use crate::config::{AfterBot, BotConfig, Named};
use crate::dispatch::{CallEvent, CallMsg, Handler, NewCaller, Scheduler};
use crate::ids::{CallId, Role};
use crate::media::{BotEvent, BotSpec, Session};
use crate::metrics::{self, BotRequest};
use crate::shared::{Counters, HangUp, Shared, Teardown, TeardownStep};
use crate::timer::TimerRequest;
use perform::pin_peer;

/// One active call as a worker holds it: the state machine plus what it owns outside Asterisk.
/// Between turns it waits in the call's mailbox (see `dispatch::Scheduler`).
pub struct ActiveCall {
    call: Call,
    started: Instant,
    caller_number: String,
    /// The legs' channel names, for the hang-up handlers that link them (`Action::LinkLegs`).
    caller_name: String,
    dest_name: Option<String>,
    /// What sits behind the call's UDP port while the caller is with the bot.
    media: Option<Box<dyn Session>>,
    /// When the destination was asked to ring.
    dialing_since: Option<Instant>,
    /// Admission control let the call in without the bot (`on_overload = "transfer"`).
    without_bot: bool,
    /// When the caller entered the application, by Asterisk's clock (its StasisStart).
    entered: Option<SystemTime>,
    /// Asterisk's end of the caller's RTP, read during set-up on Asterisk before 18.21/20.6 only
    /// (to wake the caller's channel while its `addChannel` waits).
    caller_rtp: Option<SocketAddr>,
    /// The WebSocket bot this caller talks to (`None`: the echo), and what its session opens
    /// with (taken when the session starts).
    bot: Option<Arc<BotSpec>>,
    opening: Option<Opening>,
    /// What the bot's end means (its `when_done` and `on_failure`).
    rules: Option<BotRules>,
}

impl ActiveCall {
    /// A call with nothing of its own outside Asterisk yet.
    fn new(call: Call, caller_number: String, caller_name: String) -> ActiveCall {
        ActiveCall {
            call,
            started: Instant::now(),
            caller_number,
            caller_name,
            dest_name: None,
            media: None,
            dialing_since: None,
            without_bot: false,
            entered: None,
            caller_rtp: None,
            bot: None,
            opening: None,
            rules: None,
        }
    }

    /// The format of the call's externalMedia channel: the bot's, or the echo's `[media] format`.
    fn media_format(&self, echo: Format) -> Format {
        self.bot.as_ref().map_or(echo, |b| b.format)
    }
}

/// What every worker runs: turns a call's mail into state machine inputs and performs the
/// actions. Shared by all workers; a call's state is handed in for its turn only.
pub struct CallHandler {
    shared: Arc<Shared>,
    timers: Sender<TimerRequest>,
    /// The calls' mailboxes, where a bot session posts what its bot says (weak: the mailboxes
    /// hold the sessions).
    calls: Weak<Scheduler<ActiveCall>>,
}

impl Handler<ActiveCall> for CallHandler {
    fn handle(&self, id: &CallId, state: &mut Option<ActiveCall>, msg: CallMsg) {
        self.handle_msg(id, state, msg);
        if let Some(live) = state.as_ref() {
            self.publish_phase(id, live.call.phase());
        }
    }

    /// A bug, not an input, made the call's turn panic: its state cannot be trusted, so every
    /// leg it may have is hung up by id, its bridge destroyed and what it owns released. The
    /// call ends with a line saying so instead of vanishing.
    fn recover(&self, id: &CallId, state: Option<ActiveCall>, panic: String) {
        Counters::bump(&self.shared.counters.panics);
        let Some(live) = state else {
            error!(
                "call {id}: internal error while handling an event for no active call ({panic})"
            );
            return;
        };
        error!("call {id}: internal error ({panic}); ending the call");
        let ids = &self.shared.ids;
        self.hangup_channel(id, &ids.channel(id, Role::Caller), HangupReason::Congestion);
        for role in [Role::Media, Role::Dest] {
            self.hangup_channel(id, &ids.channel(id, role), HangupReason::Normal);
        }
        self.shared.destroy_bridge(id);
        self.finish(id, live, &End::InternalError);
    }
}

impl CallHandler {
    fn handle_msg(&self, id: &CallId, state: &mut Option<ActiveCall>, msg: CallMsg) {
        match msg {
            CallMsg::Event(event) => self.on_event(id, state, event),
            CallMsg::Timer(timer) => self.drive(id, state, Input::Timer(timer)),
            CallMsg::Reconcile(alive) => {
                let Some(live) = state.as_ref() else { return };
                let lost: Vec<Role> = [Role::Caller, Role::Media, Role::Dest]
                    .into_iter()
                    .filter(|role| {
                        live.call.expects(*role)
                            && !alive.contains(&self.shared.ids.channel(id, *role))
                    })
                    .collect();
                let media_up = live.call.awaits_media_start()
                    && alive.contains(&self.shared.ids.channel(id, Role::Media));
                for role in lost {
                    info!(
                        "call {id}: {} channel vanished while disconnected from ARI",
                        role.as_str()
                    );
                    self.drive(id, state, Input::Left(role, None));
                }
                if media_up {
                    info!("call {id}: media channel entered the application while disconnected from ARI");
                    self.drive(id, state, Input::MediaUp);
                }
            }
            CallMsg::Adopt {
                how,
                caller,
                media,
                dest_name,
            } => {
                if state.is_some() {
                    debug!("call {id}: already running; not adopted twice");
                    return;
                }
                let (call, actions) = Call::adopt(self.shared.policy(), how, media);
                let what = match how {
                    Adopted::Connected => "caller and destination connected; left as they are",
                    Adopted::DestAnswered => "destination answered; bridging it",
                    Adopted::DestRinging => "destination ringing; waiting for its answer",
                    Adopted::WithBot => "caller was with the bot; transferring now",
                };
                info!(
                    "call {id}: adopted from an earlier voicebot1 ({} on {}): {what}",
                    caller.caller.number, caller.name
                );
                Counters::bump(&self.shared.counters.adopted);
                self.shared
                    .registry
                    .lock()
                    .insert(id.clone(), Phase::Transfer);
                let mut live = ActiveCall::new(call, caller.caller.number, caller.name);
                live.dest_name = dest_name;
                live.dialing_since = (how == Adopted::DestRinging).then(Instant::now);
                *state = Some(live);
                self.perform_all(id, state, actions);
            }
            CallMsg::Shutdown => {
                if state.is_some() {
                    Counters::bump(&self.shared.counters.ended_by_shutdown);
                    self.drive(id, state, Input::Shutdown);
                }
            }
            CallMsg::Drain => self.drive(id, state, Input::Drain),
            CallMsg::Hold => self.drive(id, state, Input::Hold),
            CallMsg::Bot(event) => self.on_bot(id, state, event),
            CallMsg::Handover => match state.take() {
                Some(live) if live.call.can_hand_over() => {
                    let phase = live.call.phase();
                    self.shared.registry.lock().remove(id);
                    Counters::bump(&self.shared.counters.handed_over);
                    let what = match phase {
                        Phase::Connected => "caller and destination connected",
                        Phase::Media => "caller with the bot; the next voicebot1 transfers it",
                        _ => "destination called",
                    };
                    info!(
                        "call {id}: handed over to the next voicebot1 ({what}) after {:.1} s",
                        live.started.elapsed().as_secs_f64()
                    );
                }
                Some(live) => {
                    *state = Some(live);
                    Counters::bump(&self.shared.counters.ended_by_shutdown);
                    self.drive(id, state, Input::Shutdown);
                }
                None => {}
            },
        }
    }

    pub fn new(
        shared: Arc<Shared>,
        timers: Sender<TimerRequest>,
        calls: Weak<Scheduler<ActiveCall>>,
    ) -> CallHandler {
        CallHandler {
            shared,
            timers,
            calls,
        }
    }

    fn on_event(&self, id: &CallId, state: &mut Option<ActiveCall>, event: CallEvent) {
        let known = state.is_some();
        match event {
            // A stop is handing calls over: a call started now could be caught half-way (its
            // destination answering while no instance runs cannot enter the application). The
            // caller waits in the application; the next instance starts it (`leftovers::plan`).
            CallEvent::Inbound(caller) | CallEvent::Overflow(caller)
                if !known && self.shared.draining.load(Ordering::SeqCst) =>
            {
                self.shared.admission.taken(id);
                info!("call {id}: inbound from {} while voicebot1 is stopping; left waiting for the next voicebot1", caller.channel.name)
            }
            CallEvent::Inbound(caller) if !known => {
                self.shared.admission.taken(id);
                self.start_call(id, state, *caller, true)
            }
            CallEvent::Overflow(caller) if !known => {
                self.shared.admission.taken(id);
                self.start_call(id, state, *caller, false)
            }
            CallEvent::Inbound(..) | CallEvent::Overflow(..) => {
                self.shared.admission.taken(id);
                debug!("call {id}: duplicate StasisStart ignored")
            }
            CallEvent::Started(role, channel) if known => {
                if let Some(live) = state.as_mut() {
                    match role {
                        Role::Media => pin_peer(id, live, &channel),
                        Role::Dest => live.dest_name = Some(channel.name.clone()),
                        Role::Caller => {}
                    }
                }
                self.drive(
                    id,
                    state,
                    if role == Role::Media {
                        Input::MediaUp
                    } else {
                        Input::DestUp
                    },
                );
            }
            CallEvent::Started(role, channel) => {
                // Ours by its id, but its call is over (it answered or was created after the call
                // ended, e.g. after a timed-out request): it must not live on.
                info!(
                    "call {id}: {} channel {} has no call any more; hanging it up",
                    role.as_str(),
                    channel.id
                );
                Counters::bump(&self.shared.counters.orphans_hung_up);
                self.hangup_channel(id, &channel.id, HangupReason::Normal);
            }
            CallEvent::Left(role, cause) if known => {
                self.drive(id, state, Input::Left(role, cause))
            }
            CallEvent::Left(..) => {}
            // The answer gets its own line once the destination is bridged.
            CallEvent::Dial(status) if known && status != "ANSWER" => {
                info!("call {id}: destination {}", describe_dialstatus(&status))
            }
            CallEvent::Dial(_) => {}
            CallEvent::Dtmf(digit) => {
                if let Some(media) = state.as_ref().and_then(|live| live.media.as_ref()) {
                    media.dtmf(digit);
                }
            }
        }
    }

    /// A new call; `bot`: false when admission control let it in to be transferred at once.
    fn start_call(
        &self,
        id: &CallId,
        state: &mut Option<ActiveCall>,
        caller: NewCaller,
        bot: bool,
    ) {
        let NewCaller {
            channel,
            entered,
            args,
        } = caller;
        let mut policy = self.shared.policy();
        let (ws_bot, params) = self.choose_bot(id, &args);
        let ws_bot = ws_bot.filter(|_| bot);
        if !bot {
            policy.on_pool_exhausted = crate::config::PoolExhausted::Transfer;
        }
        let rules = ws_bot.as_ref().map(|b| BotRules {
            when_done: b.when_done,
            on_failure: b.on_failure,
        });
        if let Some(b) = &ws_bot {
            policy.media_phase = b.max;
            policy.bot = rules;
        }
        let (mut call, mut actions) = Call::start(policy);
        if self.shared.draining.load(Ordering::SeqCst) {
            actions.extend(call.on(Input::Drain));
        }
        let from = if channel.caller.number.is_empty() {
            "unknown"
        } else {
            channel.caller.number.as_str()
        };
        let with = ws_bot
            .as_ref()
            .map_or(String::new(), |b| format!(" for bot {}", b.name));
        info!("call {id}: inbound from {from} on {}{with}", channel.name);
        Counters::bump(&self.shared.counters.calls);
        self.shared.registry.lock().insert(id.clone(), Phase::Setup);
        let exten = channel
            .dialplan
            .as_ref()
            .map(|d| d.exten.clone())
            .unwrap_or_default();
        let mut live = ActiveCall::new(call, channel.caller.number.clone(), channel.name.clone());
        live.without_bot = !bot;
        live.entered = entered;
        if let Some(b) = ws_bot {
            live.bot = self.shared.bots.spec(&b.name);
            live.rules = rules;
            live.opening = Some(Opening {
                call_id: id.0.clone(),
                bot: b.name.clone(),
                channel_name: channel.name,
                caller_number: channel.caller.number,
                caller_name: channel.caller.name,
                exten,
                params,
                ids: StreamIds::from_seed(random_seed(&id.0)),
            });
        }
        *state = Some(live);
        self.perform_all(id, state, actions);
    }

    /// The bot the dialplan asked for (`bot=NAME` among the Stasis arguments; else `[bot]
    /// default`), and the other `key=value` arguments, for the bot. `None`: the echo.
    fn choose_bot(
        &self,
        id: &CallId,
        args: &[String],
    ) -> (Option<Arc<BotConfig>>, Vec<(String, String)>) {
        let bots = &self.shared.config.bots;
        let mut chosen = bots.default.clone();
        let mut params = Vec::new();
        for arg in args.iter().take(MAX_PARAMS) {
            let Some((key, value)) = arg.split_once('=') else {
                debug!("call {id}: Stasis argument {arg:?} is not key=value; ignored");
                continue;
            };
            if key == "bot" {
                match bots.named(value) {
                    Named::Echo => chosen = None,
                    Named::Bot(bot) => chosen = Some(Arc::clone(bot)),
                    Named::Unknown => {
                        warn!(
                            "call {id}: the dialplan asks for bot {}, which is not configured; {}",
                            bot::Snippet::of(value),
                            bots.default.as_ref().map_or(
                                "the echo instead".to_string(),
                                |b| format!("bot {} instead", b.name)
                            )
                        )
                    }
                }
            } else if !key.is_empty()
                && key.len() <= MAX_PARAM_BYTES
                && value.len() <= MAX_PARAM_BYTES
            {
                params.push((key.to_string(), value.to_string()));
            }
        }
        if args.len() > MAX_PARAMS {
            warn!(
                "call {id}: {} Stasis arguments; only the first {MAX_PARAMS} are read",
                args.len()
            );
        }
        (chosen, params)
    }

    /// What the call's bot said or how its session ended: a log line, a count, and an input for
    /// the state machine (a transfer only to a destination `[transfer.to]` lists).
    fn on_bot(&self, id: &CallId, state: &mut Option<ActiveCall>, event: BotEvent) {
        let Some(live) = state.as_ref() else { return };
        let (Some(bot), Some(rules)) = (live.bot.clone(), live.rules) else {
            return;
        };
        let (name, idx) = (bot.name.as_str(), bot.metrics);
        let with_bot = matches!(live.call.phase(), Phase::Setup | Phase::Media);
        let said = match event {
            BotEvent::Connected(took) => {
                info!("call {id}: bot {name} connected in {} ms", took.as_millis());
                return;
            }
            BotEvent::Transfer(None) => {
                metrics::bot_request(idx, BotRequest::Transfer);
                info!("call {id}: bot {name} asked for the transfer");
                BotSays::Transfer(None)
            }
            BotEvent::Transfer(Some(to)) => match self.shared.config.transfer.to.get(&to) {
                Some(endpoint) => {
                    metrics::bot_request(idx, BotRequest::Transfer);
                    info!("call {id}: bot {name} asked for transfer to {to}");
                    BotSays::Transfer(Some(endpoint.clone()))
                }
                None => {
                    metrics::bot_request(idx, BotRequest::RefusedTransfer);
                    Counters::bump(&self.shared.counters.refused_transfers);
                    warn!(
                        "call {id}: bot {name} asked for transfer to {}, which [transfer.to] does not list: refused, the caller stays with the bot",
                        bot::Snippet::of(&to)
                    );
                    return;
                }
            },
            BotEvent::Hangup => {
                metrics::bot_request(idx, BotRequest::Hangup);
                info!("call {id}: bot {name} asked to hang up");
                BotSays::Hangup
            }
            BotEvent::Done => {
                if with_bot {
                    info!("call {id}: bot {name} closed: {}", after(rules.when_done));
                }
                BotSays::Done
            }
            BotEvent::Failed(why) => {
                if with_bot {
                    warn!("call {id}: bot {name} {why}: {}", after(rules.on_failure));
                }
                BotSays::Failed
            }
        };
        self.drive(id, state, Input::Bot(said));
    }

    /// Feeds one input to a call and performs the resulting actions.
    fn drive(&self, id: &CallId, state: &mut Option<ActiveCall>, input: Input) {
        let Some(live) = state.as_mut() else { return };
        let actions = live.call.on(input);
        self.perform_all(id, state, actions);
    }

    /// Performs actions in order; each outcome goes back into the state machine, whose new
    /// actions join the queue. `Finish` takes the call out of `state`.
    fn perform_all(&self, id: &CallId, state: &mut Option<ActiveCall>, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        // Hang-ups and the bridge destroy go to a teardown thread, in order, before the next
        // other action: nothing waits for their answers, so the worker does not either.
        let mut teardown = Vec::new();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Hangup(role, reason) => {
                    let channel = self.shared.ids.channel(id, role);
                    teardown.push(TeardownStep::Hangup { channel, reason });
                    continue;
                }
                Action::DestroyBridge => {
                    teardown.push(TeardownStep::DestroyBridge);
                    continue;
                }
                _ => self.send_teardown(id, &mut teardown),
            }
            if let Action::Finish(end) = action {
                if let Some(live) = state.take() {
                    self.finish(id, live, &end);
                }
                return;
            }
            let Some(live) = state.as_mut() else { return };
            // The phase the machine is in before a request that may take long: a stop's drain
            // counts the calls half-way (a destination being called) from the registry, and a
            // call whose originate is on its way is one.
            self.publish_phase(id, live.call.phase());
            if let Some(outcome) = self.perform(id, live, action) {
                queue.extend(live.call.on(outcome));
            }
        }
        self.send_teardown(id, &mut teardown);
    }

    /// The call's phase as the registry shows it (to the drain, `/metrics`, admission's count).
    fn publish_phase(&self, id: &CallId, now: Phase) {
        if let Some(phase) = self.shared.registry.lock().get_mut(id) {
            *phase = now;
        }
    }

    fn hangup_channel(&self, id: &CallId, channel: &str, reason: HangupReason) {
        match self.shared.hang_up(channel, reason) {
            HangUp::Done => debug!("call {id}: hung up {channel}"),
            HangUp::Gone => debug!("call {id}: {channel} already gone"),
            HangUp::Failed(e) => warn!("call {id}: {e}; the janitor retries"),
        }
    }

    fn send_teardown(&self, id: &CallId, steps: &mut Vec<TeardownStep>) {
        if steps.is_empty() {
            return;
        }
        let job = Teardown {
            call: id.clone(),
            steps: std::mem::take(steps),
        };
        // The teardown threads outlive the workers (`app::run` stops them last).
        let _ = self.shared.teardown.send(job);
    }

    /// The call is over: release what it still owns and forget it.
    fn finish(&self, id: &CallId, live: ActiveCall, end: &End) {
        let shared = &self.shared;
        // The state machine released the socket already; dropping the session here is the
        // backstop that makes a leak impossible.
        drop(live.media);
        let active = {
            let mut registry = shared.registry.lock();
            registry.remove(id);
            registry.len()
        };
        let (free, total) = (shared.pool.free(), shared.pool.total());
        crate::metrics::call_ended(end.outcome());
        info!(
            "call {id}: ended ({}) after {:.1} s; {active} calls active, pool {free}/{total} free",
            end,
            live.started.elapsed().as_secs_f64()
        );
        if active == 0 && free == total {
            info!("idle: no active calls, pool {free}/{total} free");
        }
    }
}

fn describe_dialstatus(status: &str) -> String {
    match status {
        "NOANSWER" => "did not answer".into(),
        "CHANUNAVAIL" => "unavailable".into(),
        other => other.to_lowercase(),
    }
}

/// Stasis arguments read per call, and the longest key or value passed to a bot.
const MAX_PARAMS: usize = 32;
const MAX_PARAM_BYTES: usize = 256;

/// What the caller gets after the bot, in the log's words.
fn after(next: AfterBot) -> &'static str {
    match next {
        AfterBot::Transfer => "transferring",
        AfterBot::Hangup => "hanging up",
    }
}

/// A seed for a call's stream ids (Twilio's SIDs must differ between calls; they need no
/// cryptographic strength): the call id and the clock through the standard library's randomly
/// keyed hasher.
fn random_seed(call: &str) -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let half = |salt: u64| {
        let mut h = state.build_hasher();
        h.write(call.as_bytes());
        h.write_u64(salt);
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}
