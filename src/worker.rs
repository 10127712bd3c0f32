//! A worker: owns the calls routed to it and performs what their state machines decide.
//!
//! Each worker thread owns its calls outright (a `HashMap`, no lock), its timers (a heap whose
//! entries for ended calls simply find no call when they fire: ending a call cancels its timers),
//! and each call's echo. REST requests are blocking `ureq` calls on this thread; while one runs,
//! the call's later events wait in the channel, in order.
//!
//! The worker ends when its channel disconnects (the dispatcher was dropped at shutdown): it ends
//! every call it holds, through the same path a hang-up takes, then returns.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, info, warn};
use parking_lot::Mutex;

use crate::ari::rest::Originate;
use crate::ari::{AriClient, AriError, Channel, HangupReason};
use crate::call::{Action, Call, End, Failure, Input, Policy, Reason, Step, Timer};
use crate::config::Config;
use crate::dispatch::{CallEvent, WorkerMsg};
use crate::ids::{CallId, Ids, Role};
use crate::media::{Echo, EchoCounts, SocketPool};

/// What the caller hears while the destination rings.
const RINGBACK: &str = "tone:ring";

/// What every worker shares (read-only, or atomics).
pub struct Shared {
    pub ari: AriClient,
    pub ids: Ids,
    pub config: Arc<Config>,
    pub pool: SocketPool,
    /// The calls alive on all workers. A call is in it before it creates anything in Asterisk
    /// and leaves it only after its cleanup, so the janitor may treat any resource with our
    /// prefix whose call is not here as an orphan.
    pub registry: Mutex<HashSet<CallId>>,
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
}

impl Counters {
    pub fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{} calls, {} without a free port, {} orphan channels hung up, {} frames skipped, {} reconnects",
            g(&self.calls),
            g(&self.pool_exhausted),
            g(&self.orphans_hung_up),
            g(&self.frames_skipped),
            g(&self.reconnects)
        )
    }
}

impl Shared {
    pub fn active_calls(&self) -> usize {
        self.registry.lock().len()
    }

    fn policy(&self) -> Policy {
        Policy {
            media_phase: self.config.media.phase,
            dial_timeout: self.config.transfer.dial_timeout,
            on_pool_exhausted: self.config.media.on_pool_exhausted,
            // Three requests (bridge, add, externalMedia), each with one retry at most, and slack.
            setup_timeout: self.config.ari.request_timeout * 3 + Duration::from_secs(5),
        }
    }
}

/// One call as the worker holds it: the state machine plus what it owns outside Asterisk.
struct Live {
    call: Call,
    started: Instant,
    caller_number: String,
    echo: Option<Echo>,
    /// When the destination was asked to ring.
    dialing_since: Option<Instant>,
}

pub struct Worker {
    index: usize,
    shared: Arc<Shared>,
    calls: HashMap<CallId, Live>,
    timers: BinaryHeap<Reverse<(Instant, CallId, Timer)>>,
}

impl Worker {
    pub fn new(index: usize, shared: Arc<Shared>) -> Worker {
        Worker { index, shared, calls: HashMap::new(), timers: BinaryHeap::new() }
    }

    /// Runs until `rx` disconnects, then ends every call and returns.
    pub fn run(mut self, rx: Receiver<WorkerMsg>) {
        loop {
            let next = match self.timers.peek() {
                Some(Reverse((at, _, _))) => rx.recv_deadline(*at),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.fire_due_timers();
        }
        let ids: Vec<CallId> = self.calls.keys().cloned().collect();
        for id in ids {
            Counters::bump(&self.shared.counters.ended_by_shutdown);
            self.drive(&id, Input::Shutdown);
        }
        debug!("worker {} stopped", self.index);
    }

    fn handle(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Call(id, event) => self.on_event(id, event),
            WorkerMsg::Reconcile(alive) => {
                let mut lost = Vec::new();
                for (id, live) in &self.calls {
                    for role in [Role::Caller, Role::Media, Role::Dest] {
                        if live.call.expects(role) && !alive.contains(&self.shared.ids.channel(id, role)) {
                            lost.push((id.clone(), role));
                        }
                    }
                }
                for (id, role) in lost {
                    info!("call {id}: {} channel vanished while disconnected from ARI", role.as_str());
                    self.drive(&id, Input::Left(role, None));
                }
            }
        }
    }

    fn on_event(&mut self, id: CallId, event: CallEvent) {
        let known = self.calls.contains_key(&id);
        match event {
            CallEvent::Inbound(channel) if !known => self.start_call(id, *channel),
            CallEvent::Inbound(_) => debug!("call {id}: duplicate StasisStart ignored"),
            CallEvent::Started(role, channel) if known => {
                if let (Role::Media, Some(live)) = (role, self.calls.get(&id)) {
                    pin_peer(&id, live, &channel);
                }
                self.drive(&id, if role == Role::Media { Input::MediaUp } else { Input::DestUp });
            }
            CallEvent::Started(role, channel) => {
                // Ours by its id, but its call is over (it answered or was created after the call
                // ended, e.g. after a timed-out request): it must not live on.
                info!("call {id}: {} channel {} has no call any more; hanging it up", role.as_str(), channel.id);
                Counters::bump(&self.shared.counters.orphans_hung_up);
                self.hangup_channel(&id, &channel.id, Reason::Normal);
            }
            CallEvent::Left(role, cause) if known => self.drive(&id, Input::Left(role, cause)),
            CallEvent::Left(..) => {}
            // The answer gets its own line once the destination is bridged.
            CallEvent::Dial(status) if known && status != "ANSWER" => info!("call {id}: destination {}", describe_dialstatus(&status)),
            CallEvent::Dial(_) => {}
        }
    }

    fn start_call(&mut self, id: CallId, channel: Channel) {
        let (call, actions) = Call::start(self.shared.policy());
        let from = if channel.caller.number.is_empty() { "unknown".to_string() } else { channel.caller.number.clone() };
        info!("call {id}: inbound from {from} on {}", channel.name);
        Counters::bump(&self.shared.counters.calls);
        self.shared.registry.lock().insert(id.clone());
        self.calls.insert(
            id.clone(),
            Live { call, started: Instant::now(), caller_number: channel.caller.number, echo: None, dialing_since: None },
        );
        self.perform_all(&id, actions);
    }

    /// Feeds one input to a call and performs the resulting actions.
    fn drive(&mut self, id: &CallId, input: Input) {
        let Some(live) = self.calls.get_mut(id) else { return };
        let actions = live.call.on(input);
        self.perform_all(id, actions);
    }

    /// Performs actions in order; each outcome goes back into the state machine, whose new
    /// actions join the queue.
    fn perform_all(&mut self, id: &CallId, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            if let Some(outcome) = self.perform(id, action) {
                let Some(live) = self.calls.get_mut(id) else { return };
                queue.extend(live.call.on(outcome));
            }
        }
    }

    fn perform(&mut self, id: &CallId, action: Action) -> Option<Input> {
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        let ari = &shared.ari;
        let ids = &shared.ids;
        let bridge = ids.bridge(id);
        let live = self.calls.get_mut(id)?;
        let started = live.started;
        match action {
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
                    info!("call {id}: bot media ended on port {port}: {}", describe_counts(&counts));
                }
                None
            }
            Action::CreateBridge => Some(done(Step::CreateBridge, ari.create_bridge(&bridge, &format!("voicebot1 call {id}")))),
            Action::AddToBridge(role) => {
                let step = match role {
                    Role::Caller => Step::AddCaller,
                    Role::Media => Step::AddMedia,
                    Role::Dest => Step::AddDest,
                };
                let result = ari.add_channel(&bridge, &ids.channel(id, role));
                if result.is_ok() {
                    let ms = started.elapsed().as_millis();
                    match role {
                        Role::Caller => debug!("call {id}: caller in bridge {bridge}"),
                        Role::Media => info!("call {id}: caller and media bridged in {ms} ms"),
                        Role::Dest => info!(
                            "call {id}: destination answered after {} ms ringing; caller and destination bridged",
                            live.dialing_since.map_or(0, |t| t.elapsed().as_millis())
                        ),
                    }
                }
                Some(done(step, result))
            }
            Action::CreateMedia => {
                let Some(port) = live.echo.as_ref().map(Echo::port) else {
                    return Some(Input::Done(Step::CreateMedia, Err(Failure::Other("no socket leased".into()))));
                };
                let host = host_port(&cfg.media.advertise_host, port);
                let result = ari.external_media(&ids.channel(id, Role::Media), &cfg.ari.app, &host, cfg.media.format.as_ari());
                if let Ok(channel) = &result {
                    debug!("call {id}: externalMedia {} sends RTP to {host}", channel.name);
                    pin_peer(id, live, channel);
                }
                Some(done(Step::CreateMedia, result.map(drop)))
            }
            Action::StartTimer(timer, after) => {
                self.timers.push(Reverse((Instant::now() + after, id.clone(), timer)));
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
            Action::DestroyBridge => {
                match ari.destroy_bridge(&bridge) {
                    Ok(()) => debug!("call {id}: bridge {bridge} destroyed"),
                    Err(e) if e.is_not_found() => debug!("call {id}: bridge {bridge} already gone"),
                    Err(e) => warn!("call {id}: {e}"),
                }
                None
            }
            Action::Finish(end) => {
                let live = self.calls.remove(id)?;
                // Whatever the call still owns goes now (the state machine released the socket
                // already; this is the backstop that makes a leak impossible).
                drop(live.echo);
                let active = {
                    let mut registry = shared.registry.lock();
                    registry.remove(id);
                    registry.len()
                };
                let (free, total) = (shared.pool.free(), shared.pool.total());
                info!(
                    "call {id}: ended ({}) after {:.1} s; {active} calls active, pool {free}/{total} free",
                    describe_end(&end),
                    live.started.elapsed().as_secs_f64()
                );
                if active == 0 && free == total {
                    info!("idle: no active calls, pool {free}/{total} free");
                }
                None
            }
        }
    }

    fn hangup_channel(&self, id: &CallId, channel: &str, reason: Reason) {
        let reason = match reason {
            Reason::Normal => HangupReason::Normal,
            Reason::Busy => HangupReason::Busy,
            Reason::NoAnswer => HangupReason::NoAnswer,
            Reason::Congestion => HangupReason::Congestion,
        };
        match self.shared.ari.hangup(channel, reason) {
            Ok(()) => debug!("call {id}: hung up {channel}"),
            Err(e) if e.is_not_found() => debug!("call {id}: {channel} already gone"),
            Err(e) => warn!("call {id}: {e}"),
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id, timer))) = self.timers.pop() else { break };
            if self.calls.contains_key(&id) {
                self.drive(&id, Input::Timer(timer));
            }
        }
    }
}

/// Points the call's echo at the RTP address Asterisk reports for its externalMedia channel.
fn pin_peer(id: &CallId, live: &Live, channel: &Channel) {
    if let (Some(peer), Some(echo)) = (unicast_rtp_peer(channel), live.echo.as_ref()) {
        debug!("call {id}: media peer is {peer}");
        echo.set_peer(peer);
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
