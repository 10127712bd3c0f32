//! The effect layer: what a worker does with a call's mail.
//!
//! Workers are interchangeable: `dispatch::Scheduler` hands any free worker a call with mail,
//! with the call's state ([`ActiveCall`]) for that turn only. The worker turns the mail into
//! inputs for the call's state machine and performs the resulting actions: REST requests
//! (blocking `ureq` calls on the worker's thread, holding up only this call), the socket lease and
//! echo, timers (sent to the timer thread, which posts them back to the call when due).
//!
//! A panic in a turn is caught by the scheduler; [`CallHandler::recover`] ends that call by its
//! ids, so a bug costs one call, logged, never a worker or the calls behind it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::Sender;
use log::{debug, error, info, warn};

use crate::ari::rest::Originate;
use crate::ari::{AriClient, AriError, Channel, ErrorKind};
use crate::call::{Action, Adopted, Call, End, Failure, HangupReason, Input, Phase, Step};
use crate::dispatch::{CallEvent, CallMsg, Handler};
use crate::ids::{CallId, Role};
use crate::media::{Echo, EchoCounts};
use crate::shared::{Counters, Shared};
use crate::timer::TimerRequest;

/// The dialplan context of the hang-up handlers that link a connected call's legs
/// (conf/asterisk/extensions.conf).
const HANDOVER_CONTEXT: &str = "voicebot1-handover";

/// Stack of the short-lived thread that sends a set-up request next to the worker's own.
const REQUEST_THREAD_STACK: usize = 256 * 1024;

/// What the caller hears while the destination rings.
const RINGBACK: &str = "tone:ring";

/// One active call as a worker holds it: the state machine plus what it owns outside Asterisk. Between
/// turns it waits in the call's mailbox (see `dispatch::Scheduler`).
pub struct ActiveCall {
    call: Call,
    started: Instant,
    caller_number: String,
    /// The legs' channel names, for the hang-up handlers that link them (`Action::LinkLegs`).
    caller_name: String,
    dest_name: Option<String>,
    echo: Option<Echo>,
    /// When the destination was asked to ring.
    dialing_since: Option<Instant>,
    /// Admission control let the call in without the bot (`on_overload = "transfer"`).
    without_bot: bool,
    /// When the caller entered the application, by Asterisk's clock (its StasisStart).
    entered: Option<SystemTime>,
    /// Asterisk's end of the caller's RTP, read during set-up on Asterisk before 18.21/20.6 only
    /// (to wake the caller's channel while its `addChannel` waits).
    caller_rtp: Option<SocketAddr>,
}

/// What every worker runs: turns a call's mail into state machine inputs and performs the
/// actions. Shared by all workers; a call's state is handed in for its turn only.
pub struct CallHandler {
    shared: Arc<Shared>,
    timers: Sender<TimerRequest>,
}

impl Handler<ActiveCall> for CallHandler {
    fn handle(&self, id: &CallId, state: &mut Option<ActiveCall>, msg: CallMsg) {
        self.handle_msg(id, state, msg);
        if let Some(live) = state.as_ref() {
            if let Some(phase) = self.shared.registry.lock().get_mut(id) {
                *phase = live.call.phase();
            }
        }
    }

    /// A bug, not an input, made the call's turn panic: its state cannot be trusted, so every
    /// leg it may have is hung up by id, its bridge destroyed and what it owns released. The
    /// call ends with a line saying so instead of vanishing.
    fn recover(&self, id: &CallId, state: Option<ActiveCall>, panic: String) {
        Counters::bump(&self.shared.counters.panics);
        let Some(live) = state else {
            error!("call {id}: internal error while handling an event for no active call ({panic})");
            return;
        };
        error!("call {id}: internal error ({panic}); ending the call");
        let ids = &self.shared.ids;
        self.hangup_channel(id, &ids.channel(id, Role::Caller), HangupReason::Congestion);
        for role in [Role::Media, Role::Dest] {
            self.hangup_channel(id, &ids.channel(id, role), HangupReason::Normal);
        }
        if let Err(e) = self.shared.ari.destroy_bridge(&ids.bridge(id)) {
            if !e.is_not_found() {
                warn!("call {id}: {e}");
            }
        }
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
                    .filter(|role| live.call.expects(*role) && !alive.contains(&self.shared.ids.channel(id, *role)))
                    .collect();
                let media_up = live.call.awaits_media_start() && alive.contains(&self.shared.ids.channel(id, Role::Media));
                for role in lost {
                    info!("call {id}: {} channel vanished while disconnected from ARI", role.as_str());
                    self.drive(id, state, Input::Left(role, None));
                }
                if media_up {
                    info!("call {id}: media channel entered the application while disconnected from ARI");
                    self.drive(id, state, Input::MediaUp);
                }
            }
            CallMsg::Adopt { how, caller, media, dest_name } => {
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
                info!("call {id}: adopted from an earlier voicebot1 ({} on {}): {what}", caller.caller.number, caller.name);
                Counters::bump(&self.shared.counters.adopted);
                self.shared.registry.lock().insert(id.clone(), Phase::Transfer);
                let dialing_since = (how == Adopted::DestRinging).then(Instant::now);
                *state = Some(ActiveCall {
                    call,
                    started: Instant::now(),
                    caller_number: caller.caller.number,
                    caller_name: caller.name,
                    dest_name,
                    echo: None,
                    dialing_since,
                    without_bot: false,
                    entered: None,
                    caller_rtp: None,
                });
                self.perform_all(id, state, actions);
            }
            CallMsg::Shutdown => {
                if state.is_some() {
                    Counters::bump(&self.shared.counters.ended_by_shutdown);
                    self.drive(id, state, Input::Shutdown);
                }
            }
            CallMsg::Drain => self.drive(id, state, Input::Drain),
            CallMsg::Handover => match state.take() {
                Some(live) if live.call.can_hand_over() => {
                    let phase = live.call.phase();
                    self.shared.registry.lock().remove(id);
                    Counters::bump(&self.shared.counters.handed_over);
                    let what = if phase == Phase::Connected { "caller and destination connected" } else { "destination called" };
                    info!("call {id}: handed over to the next voicebot1 ({what}) after {:.1} s", live.started.elapsed().as_secs_f64());
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


    pub fn new(shared: Arc<Shared>, timers: Sender<TimerRequest>) -> CallHandler {
        CallHandler { shared, timers }
    }

    fn on_event(&self, id: &CallId, state: &mut Option<ActiveCall>, event: CallEvent) {
        let known = state.is_some();
        match event {
            // A stop is handing calls over: a call started now could be caught half-way (its
            // destination answering while no instance runs cannot enter the application). The
            // caller waits in the application; the next instance starts it (`leftovers::plan`).
            CallEvent::Inbound(channel, _) | CallEvent::Overflow(channel, _) if !known && self.shared.draining.load(Ordering::SeqCst) => {
                self.shared.admission.taken(id);
                info!("call {id}: inbound from {} while voicebot1 is stopping; left waiting for the next voicebot1", channel.name)
            }
            CallEvent::Inbound(channel, entered) if !known => {
                self.shared.admission.taken(id);
                self.start_call(id, state, *channel, entered, true)
            }
            CallEvent::Overflow(channel, entered) if !known => {
                self.shared.admission.taken(id);
                self.start_call(id, state, *channel, entered, false)
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
                self.drive(id, state, if role == Role::Media { Input::MediaUp } else { Input::DestUp });
            }
            CallEvent::Started(role, channel) => {
                // Ours by its id, but its call is over (it answered or was created after the call
                // ended, e.g. after a timed-out request): it must not live on.
                info!("call {id}: {} channel {} has no call any more; hanging it up", role.as_str(), channel.id);
                Counters::bump(&self.shared.counters.orphans_hung_up);
                self.hangup_channel(id, &channel.id, HangupReason::Normal);
            }
            CallEvent::Left(role, cause) if known => self.drive(id, state, Input::Left(role, cause)),
            CallEvent::Left(..) => {}
            // The answer gets its own line once the destination is bridged.
            CallEvent::Dial(status) if known && status != "ANSWER" => info!("call {id}: destination {}", describe_dialstatus(&status)),
            CallEvent::Dial(_) => {}
        }
    }

    /// A new call; `bot`: false when admission control let it in to be transferred at once.
    fn start_call(&self, id: &CallId, state: &mut Option<ActiveCall>, channel: Channel, entered: Option<SystemTime>, bot: bool) {
        let mut policy = self.shared.policy();
        if !bot {
            policy.on_pool_exhausted = crate::config::PoolExhausted::Transfer;
        }
        let (mut call, mut actions) = Call::start(policy);
        if self.shared.draining.load(Ordering::SeqCst) {
            actions.extend(call.on(Input::Drain));
        }
        let from = if channel.caller.number.is_empty() { "unknown".to_string() } else { channel.caller.number.clone() };
        info!("call {id}: inbound from {from} on {}", channel.name);
        Counters::bump(&self.shared.counters.calls);
        self.shared.registry.lock().insert(id.clone(), Phase::Setup);
        *state = Some(ActiveCall {
            call,
            started: Instant::now(),
            caller_number: channel.caller.number,
            caller_name: channel.name,
            dest_name: None,
            echo: None,
            dialing_since: None,
            without_bot: !bot,
            entered,
            caller_rtp: None,
        });
        self.perform_all(id, state, actions);
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
        while let Some(action) = queue.pop_front() {
            if let Action::Finish(end) = action {
                if let Some(live) = state.take() {
                    self.finish(id, live, &end);
                }
                return;
            }
            let Some(live) = state.as_mut() else { return };
            if let Some(outcome) = self.perform(id, live, action) {
                queue.extend(live.call.on(outcome));
            }
        }
    }

    /// The call is over: release what it still owns and forget it.
    fn finish(&self, id: &CallId, live: ActiveCall, end: &End) {
        let shared = &self.shared;
        // The state machine released the socket already; dropping the echo here is the backstop
        // that makes a leak impossible.
        drop(live.echo);
        let active = {
            let mut registry = shared.registry.lock();
            registry.remove(id);
            registry.len()
        };
        let (free, total) = (shared.pool.free(), shared.pool.total());
        crate::metrics::call_ended(end);
        info!(
            "call {id}: ended ({}) after {:.1} s; {active} calls active, pool {free}/{total} free",
            describe_end(end),
            live.started.elapsed().as_secs_f64()
        );
        if active == 0 && free == total {
            info!("idle: no active calls, pool {free}/{total} free");
        }
    }

    /// Performs one action (anything but `Finish`); the outcome, if the call waits for one.
    fn perform(&self, id: &CallId, live: &mut ActiveCall, action: Action) -> Option<Input> {
        let shared = &*self.shared;
        let cfg = &shared.config;
        let ari = &shared.ari;
        let ids = &shared.ids;
        let bridge = ids.bridge(id);
        let started = live.started;
        match action {
            Action::LeaseSocket if shared.draining.load(Ordering::SeqCst) => {
                debug!("call {id}: no bot session while voicebot1 is stopping");
                Some(Input::Leased(false))
            }
            Action::LeaseSocket if live.without_bot => Some(Input::Leased(false)),
            Action::LeaseSocket => {
                let echo = match shared.pool.lease() {
                    None => {
                        let times = Counters::bump(&shared.counters.pool_exhausted);
                        let then = match cfg.media.on_pool_exhausted {
                            crate::config::PoolExhausted::Transfer => "skipping the bot, transferring",
                            crate::config::PoolExhausted::Hangup => "hanging up",
                        };
                        warn!("call {id}: no free port in the pool (0/{} free, {times} times so far); {then}", shared.pool.total());
                        None
                    }
                    Some(lease) => match Echo::start(lease, cfg.media.asterisk_host, &id.0) {
                        Ok(echo) => {
                            debug!("call {id}: leased port {}", echo.port());
                            Some(echo)
                        }
                        Err(e) => {
                            warn!("call {id}: cannot start the echo thread ({e}); treated as no free port");
                            None
                        }
                    },
                };
                let leased = echo.is_some();
                live.echo = echo;
                Some(Input::Leased(leased))
            }
            Action::ReleaseSocket => {
                if let Some(echo) = live.echo.take() {
                    let port = echo.port();
                    let counts = echo.counts();
                    drop(echo);
                    crate::metrics::bot_session_ended(&counts);
                    info!("call {id}: bot media ended on port {port}: {}", describe_counts(&counts));
                }
                None
            }
            Action::AddToBridge(role) => {
                let step = if role == Role::Dest { Step::AddDest } else { Step::AddCaller };
                let result = ari.add_channels(&bridge, &[&ids.channel(id, role)]);
                if result.is_ok() {
                    match role {
                        Role::Dest => info!(
                            "call {id}: destination answered after {} ms ringing; caller and destination bridged",
                            live.dialing_since.map_or(0, |t| t.elapsed().as_millis())
                        ),
                        _ => debug!("call {id}: caller in bridge {bridge}"),
                    }
                }
                Some(done(step, result))
            }
            Action::AddCallerAndMedia => {
                // Asterisk before 18.21/20.6 runs the add when each channel wakes: the media
                // channel on a frame from it, which the echo sends (see `media::Echo::wake_asterisk`).
                // The caller's channel on a frame on its RTP socket, which a keepalive datagram to
                // it gives at once (its own next frame may be 20 ms away).
                let late = shared.late_commands.load(Ordering::Relaxed);
                let _waking = live.echo.as_ref().filter(|_| late).map(|e| e.wake_asterisk(cfg.media.format.silence()));
                let add = || ari.add_channels(&bridge, &[&id.0, &ids.channel(id, Role::Media)]);
                let result = match live.caller_rtp.filter(|_| late) {
                    Some(caller_rtp) => shared.pool.waking(caller_rtp, add),
                    None => add(),
                };
                if result.is_ok() {
                    // From Asterisk's StasisStart when it said when: what the caller lives through.
                    let took = live.entered.and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_else(|| started.elapsed());
                    crate::metrics::call_set_up(took);
                    info!("call {id}: caller and media bridged in {} ms", took.as_millis());
                }
                Some(done(Step::AddCallerAndMedia, result))
            }
            Action::CreateBridge => Some(done(Step::CreateBridge, ari.create_bridge(&bridge, &format!("voicebot1 call {id}")))),
            Action::CreateBridgeAndMedia => {
                let Some(port) = live.echo.as_ref().map(Echo::port) else {
                    return Some(Input::Done(Step::CreateBridgeAndMedia, Err(Failure::Other("no socket leased".into()))));
                };
                let host = host_port(&cfg.media.advertise_host, port);
                let media = ids.channel(id, Role::Media);
                let name = format!("voicebot1 call {id}");
                // On Asterisk before 18.21/20.6, also where the caller's RTP arrives, to wake the
                // caller's channel during the next step (see `Action::AddCallerAndMedia`).
                let late = shared.late_commands.load(Ordering::Relaxed);
                let bridge_side = || {
                    let made = ari.create_bridge(&bridge, &name);
                    (made, late.then(|| caller_rtp_address(ari, id, cfg.media.asterisk_host)).flatten())
                };
                // Two requests at once, one round trip: neither needs the other (the ids are ours).
                let ((made_bridge, caller_rtp), made_media) = std::thread::scope(|scope| {
                    let bridge_request = std::thread::Builder::new()
                        .name("bridge-request".into())
                        .stack_size(REQUEST_THREAD_STACK)
                        .spawn_scoped(scope, bridge_side);
                    let made_media = ari.external_media(&media, &cfg.ari.app, &host, cfg.media.format.as_ari());
                    let bridge_side = match bridge_request {
                        Ok(handle) => handle.join().unwrap_or_else(|_| {
                            let panicked = ErrorKind::Transport("its request thread panicked".into());
                            (Err(AriError { doing: format!("creating bridge {bridge}"), kind: panicked }), None)
                        }),
                        // No thread to be had: one after the other.
                        Err(_) => bridge_side(),
                    };
                    (bridge_side, made_media)
                });
                live.caller_rtp = caller_rtp;
                if let Ok(channel) = &made_media {
                    debug!("call {id}: externalMedia {} sends RTP to {host}", channel.name);
                    pin_peer(id, live, channel);
                }
                Some(done(Step::CreateBridgeAndMedia, made_bridge.and(made_media.map(drop))))
            }
            Action::StartTimer(timer, after) => {
                // The timer thread outlives every worker: sending cannot fail while calls run.
                let _ = self.timers.send((Instant::now() + after, id.clone(), timer));
                None
            }
            // Ringback is a tone played to the caller: the caller is answered and in the bridge,
            // where a ringing indication would not be heard.
            Action::Ring => {
                if let Err(e) = ari.play(&id.0, &ids.ringback(id), RINGBACK) {
                    warn!("call {id}: no ringback for the caller: {e}");
                }
                None
            }
            Action::StopRing => {
                match ari.stop_playback(&ids.ringback(id)) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => debug!("call {id}: {e}"),
                }
                None
            }
            Action::Originate => {
                let in_call = live.started.elapsed();
                let caller_id = if cfg.transfer.caller_id.is_empty() { live.caller_number.clone() } else { cfg.transfer.caller_id.clone() };
                let dest = ids.channel(id, Role::Dest);
                let app_args = format!("transfer,{id}");
                info!("call {id}: transferring to {} after {:.1} s", cfg.transfer.endpoint, in_call.as_secs_f64());
                live.dialing_since = Some(Instant::now());
                let result = ari.originate(&Originate {
                    channel_id: &dest,
                    endpoint: &cfg.transfer.endpoint,
                    app: &cfg.ari.app,
                    app_args: &app_args,
                    caller_id: &caller_id,
                    timeout: cfg.transfer.dial_timeout,
                });
                Some(done(Step::Originate, result.map(drop)))
            }
            Action::Hangup(role, reason) => {
                let channel = ids.channel(id, role);
                self.hangup_channel(id, &channel, reason);
                None
            }
            Action::LinkLegs => {
                let Some(dest_name) = live.dest_name.as_deref() else {
                    warn!("call {id}: destination's channel name unknown; its hang-up will not end the caller without voicebot1");
                    return None;
                };
                let dest = ids.channel(id, Role::Dest);
                for (channel, peer) in [(id.0.as_str(), dest_name), (dest.as_str(), live.caller_name.as_str())] {
                    let handler = format!("{HANDOVER_CONTEXT},peer,1({peer})");
                    if let Err(e) = ari.set_variable(channel, "CHANNEL(hangup_handler_push)", &handler) {
                        warn!("call {id}: {e} (without it the call needs a running voicebot1 to end both legs)");
                    }
                }
                None
            }
            Action::DestroyBridge => {
                match ari.destroy_bridge(&bridge) {
                    Ok(()) => debug!("call {id}: bridge {bridge} destroyed"),
                    Err(e) if e.is_not_found() => debug!("call {id}: bridge {bridge} already gone"),
                    Err(e) => warn!("call {id}: {e}"),
                }
                None
            }
            // `perform_all` finishes the call itself.
            Action::Finish(_) => None,
        }
    }

    fn hangup_channel(&self, id: &CallId, channel: &str, reason: HangupReason) {
        match self.shared.ari.hangup(channel, reason) {
            Ok(()) => debug!("call {id}: hung up {channel}"),
            Err(e) if e.is_not_found() => debug!("call {id}: {channel} already gone"),
            Err(e) => {
                warn!("call {id}: {e}; the janitor retries");
                self.shared.unconfirmed.lock().insert(channel.to_string());
            }
        }
    }
}

/// Points the call's echo at the RTP address Asterisk reports for its externalMedia channel.
fn pin_peer(id: &CallId, live: &ActiveCall, channel: &Channel) {
    if let (Some(peer), Some(echo)) = (unicast_rtp_peer(channel), live.echo.as_ref()) {
        debug!("call {id}: media peer is {peer}");
        echo.set_peer(peer);
    }
}

/// Asterisk's end of the caller's RTP (`CHANNEL(rtp,src)`, PJSIP only), with `asterisk_host`
/// for an unspecified address; `None` when Asterisk does not say.
fn caller_rtp_address(ari: &AriClient, id: &CallId, asterisk_host: IpAddr) -> Option<SocketAddr> {
    let value = match ari.channel_variable(&id.0, "CHANNEL(rtp,src)") {
        Ok(v) => v,
        Err(e) => {
            debug!("call {id}: no RTP address for the caller: {e}");
            return None;
        }
    };
    match value.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => Some(SocketAddr::new(asterisk_host, a.port())),
        Ok(a) => Some(a),
        Err(_) => {
            debug!("call {id}: the caller's RTP address {value:?} is not IP:PORT");
            None
        }
    }
}

fn done(step: Step, result: Result<(), AriError>) -> Input {
    Input::Done(
        step,
        result.map_err(|e| if e.is_not_found() { Failure::NotFound } else { Failure::Other(e.to_string()) }),
    )
}

/// `host:port`, with brackets for an IPv6 host.
fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => SocketAddr::new(IpAddr::V6(v6), port).to_string(),
        _ => format!("{host}:{port}"),
    }
}

/// Asterisk's end of an externalMedia channel's RTP, from the `UNICASTRTP_LOCAL_ADDRESS` and
/// `UNICASTRTP_LOCAL_PORT` channel variables when the channel JSON carries them.
pub fn unicast_rtp_peer(channel: &Channel) -> Option<SocketAddr> {
    let vars = channel.channelvars.as_ref()?;
    let ip: IpAddr = vars.get("UNICASTRTP_LOCAL_ADDRESS")?.as_str()?.parse().ok()?;
    let port: u16 = vars.get("UNICASTRTP_LOCAL_PORT")?.as_str()?.parse().ok()?;
    (port != 0).then_some(SocketAddr::new(ip, port))
}

fn describe_counts(c: &EchoCounts) -> String {
    let mut s = format!("rx {} pkts/{} B, tx {} pkts/{} B", c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes);
    if c.dropped_foreign + c.dropped_garbage > 0 {
        s.push_str(&format!(", dropped {} from other addresses, {} not RTP", c.dropped_foreign, c.dropped_garbage));
    }
    s
}

fn describe_dialstatus(status: &str) -> String {
    match status {
        "NOANSWER" => "did not answer".into(),
        "CHANUNAVAIL" => "unavailable".into(),
        other => other.to_lowercase(),
    }
}

fn describe_end(end: &End) -> String {
    match end {
        End::CallerHungUp => "caller hung up".into(),
        End::DestinationHungUp => "destination hung up".into(),
        End::DestinationFailed(Some(cause)) => format!("destination did not answer: cause {cause} {}", cause_text(*cause)),
        End::DestinationFailed(None) => "destination did not answer in time".into(),
        End::BotLostDuringSetup => "media channel lost during set-up".into(),
        End::SetupFailed(step, Failure::NotFound) => format!("{step:?} failed: not found"),
        End::SetupFailed(step, Failure::Other(m)) => format!("{step:?} failed: {m}"),
        End::SetupTimedOut => "set-up timed out".into(),
        End::NoSocket => "no free media port".into(),
        End::Shutdown => "voicebot1 shutting down".into(),
        End::InternalError => "internal error".into(),
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
        21 => "(call rejected)",
        27 => "(destination out of order)",
        34 => "(no circuit available)",
        38 => "(network out of order)",
        41 => "(temporary failure)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_peer_comes_from_unicastrtp_variables() {
        let ch: Channel = serde_json::from_str(
            r#"{"id":"x","channelvars":{"UNICASTRTP_LOCAL_ADDRESS":"127.0.0.1","UNICASTRTP_LOCAL_PORT":"12000"}}"#,
        )
        .unwrap();
        assert_eq!(unicast_rtp_peer(&ch), Some("127.0.0.1:12000".parse().unwrap()));
        let ch: Channel = serde_json::from_str(r#"{"id":"x","channelvars":{"UNICASTRTP_LOCAL_PORT":"bad"}}"#).unwrap();
        assert_eq!(unicast_rtp_peer(&ch), None);
        let ch: Channel = serde_json::from_str(r#"{"id":"x"}"#).unwrap();
        assert_eq!(unicast_rtp_peer(&ch), None);
    }

    #[test]
    fn host_port_brackets_ipv6() {
        assert_eq!(host_port("127.0.0.1", 26500), "127.0.0.1:26500");
        assert_eq!(host_port("::1", 26500), "[::1]:26500");
        assert_eq!(host_port("media.example", 26500), "media.example:26500");
    }
}
