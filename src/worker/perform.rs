//! How a worker performs each [`Action`] of a call's state machine: one function per kind of
//! action, [`CallHandler::perform`] only dispatches. A function returns the [`Input`] the call
//! waits for (a REST step's outcome, the lease), or nothing when the call waits for none.
//!
//! A set-up step's failure is not judged here: it goes back to the state machine as
//! `Input::Done(step, Err(…))`. The other requests (ringback, hang-up handlers, clean-up) only log
//! theirs; a failed hang-up is left to the janitor (see `Shared::hang_up`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};

use super::{ActiveCall, CallHandler};
use crate::ari::rest::Originate;
use crate::ari::{AriClient, AriError, Channel, ErrorKind};
use crate::backoff::Backoff;
use crate::call::{Action, Failure, Input, Step, Timer};
use crate::dispatch::CallMsg;
use crate::ids::{CallId, Role};
use crate::media::{BotBridge, BotEvent, Echo, Session, SocketLease};
use crate::shared::Counters;

/// The dialplan context of the hang-up handlers that link a connected call's legs
/// (conf/asterisk/extensions.conf).
const HANDOVER_CONTEXT: &str = "voicebot1-handover";

/// Stack of the short-lived thread that sends a set-up request next to the worker's own.
const REQUEST_THREAD_STACK: usize = 256 * 1024;

/// What the caller hears while the destination rings.
const RINGBACK: &str = "tone:ring";

/// How long `ring` waits at most for Asterisk to start the ringback, and how it polls.
const RING_START_WAIT: Duration = Duration::from_millis(500);
const RING_POLL_FIRST: Duration = Duration::from_micros(500);
const RING_POLL_MAX: Duration = Duration::from_millis(50);

impl CallHandler {
    /// Performs one action (anything but `Finish`); the outcome, if the call waits for one.
    pub(super) fn perform(
        &self,
        id: &CallId,
        live: &mut ActiveCall,
        action: Action,
    ) -> Option<Input> {
        match action {
            Action::LeaseSocket => Some(self.lease_socket(id, live)),
            Action::ReleaseSocket => {
                release_socket(id, live);
                None
            }
            Action::AddToBridge(role) => Some(self.add_to_bridge(id, role)),
            Action::AddCallerAndMedia => Some(self.add_caller_and_media(id, live)),
            Action::CreateBridge => Some(self.create_bridge(id)),
            Action::CreateBridgeAndMedia => Some(self.create_bridge_and_media(id, live)),
            Action::StartTimer(timer, after) => {
                self.start_timer(id, timer, after);
                None
            }
            Action::Ring => {
                self.ring(id);
                None
            }
            Action::StopRing => {
                self.stop_ring(id);
                None
            }
            Action::Originate => Some(self.originate(id, live)),
            // `perform_all` sends these to a teardown thread.
            Action::Hangup(..) | Action::DestroyBridge => None,
            Action::LinkLegs => {
                self.link_legs(id, live);
                // The timeline says "bridged" only now: from here on the call ends properly
                // with or without a voicebot1. A call adopted connected never rang here.
                match live.dialing_since {
                    Some(since) => info!(
                        "call {id}: destination answered after {} ms ringing; caller and destination bridged",
                        since.elapsed().as_millis()
                    ),
                    None => debug!("call {id}: legs linked again"),
                }
                None
            }
            // `perform_all` finishes the call itself.
            Action::Finish(_) => None,
        }
    }

    /// A socket from the pool and the media session on it (the call's WebSocket bot, which
    /// starts connecting now, or the echo); none while stopping or for a call admission control
    /// let in without the bot.
    fn lease_socket(&self, id: &CallId, live: &mut ActiveCall) -> Input {
        let shared = &*self.shared;
        let cfg = &shared.config;
        if shared.draining.load(Ordering::SeqCst) {
            debug!("call {id}: no bot session while voicebot1 is stopping");
            return Input::Leased(false);
        }
        if live.without_bot {
            return Input::Leased(false);
        }
        let echo = match shared.pool.lease() {
            None => {
                let times = Counters::bump(&shared.counters.pool_exhausted);
                let then = match cfg.media.on_pool_exhausted {
                    crate::config::PoolExhausted::Transfer => "skipping the bot, transferring",
                    crate::config::PoolExhausted::Hangup => "hanging up",
                };
                warn!(
                    "call {id}: no free port in the pool (0/{} free, {times} times so far); {then}",
                    shared.pool.total()
                );
                None
            }
            Some(lease) => match self.start_session(id, live, lease) {
                Ok(session) => {
                    debug!("call {id}: leased port {}", session.port());
                    Some(session)
                }
                Err(e) => {
                    warn!("call {id}: cannot start the media session's thread ({e}); treated as no free port");
                    None
                }
            },
        };
        let leased = echo.is_some();
        live.media = echo;
        Input::Leased(leased)
    }

    /// The call's bot bridge, or the echo, on `lease`'s socket.
    fn start_session(
        &self,
        id: &CallId,
        live: &mut ActiveCall,
        lease: SocketLease,
    ) -> std::io::Result<Box<dyn Session>> {
        let asterisk_host = self.shared.config.media.asterisk_host;
        let (Some(spec), Some(opening)) = (live.bot.clone(), live.opening.take()) else {
            return Ok(Box::new(Echo::start(lease, asterisk_host, &id.0)?));
        };
        // What the bot says goes into the call's mailbox, behind what came before it.
        let (calls, call) = (self.calls.clone(), id.clone());
        let notify = Box::new(move |event: BotEvent| {
            if let Some(calls) = calls.upgrade() {
                calls.post(call.clone(), CallMsg::Bot(event));
            }
        });
        Ok(Box::new(BotBridge::start(
            lease,
            asterisk_host,
            spec,
            opening,
            notify,
        )?))
    }

    /// Adds one party: the caller of a call without the bot, or the destination.
    fn add_to_bridge(&self, id: &CallId, role: Role) -> Input {
        let shared = &*self.shared;
        let bridge = shared.ids.bridge(id);
        let channel = shared.ids.channel(id, role);
        let step = if role == Role::Dest {
            Step::AddDest
        } else {
            Step::AddCaller
        };
        // Before Asterisk 18.21/20.6 the add waits for the channel to wake; its own RTP may be
        // 20 ms or more away: poke its RTP socket, as for the caller (`add_caller_and_media`).
        let late = shared.late_commands.load(Ordering::Relaxed);
        let rtp = late
            .then(|| rtp_address(&shared.ari, id, &channel, shared.config.media.asterisk_host))
            .flatten();
        let result = shared
            .pool
            .waking(rtp, || shared.ari.add_channels(&bridge, &[&channel]));
        // The destination's line comes once the legs are linked too (`Action::LinkLegs`).
        if result.is_ok() && role != Role::Dest {
            debug!("call {id}: caller in bridge {bridge}");
        }
        done(step, result)
    }

    fn add_caller_and_media(&self, id: &CallId, live: &ActiveCall) -> Input {
        let shared = &*self.shared;
        let ids = &shared.ids;
        let bridge = ids.bridge(id);
        // Asterisk before 18.21/20.6 runs the add when each channel wakes: the media
        // channel on a frame from it, which the echo sends (see `media::Echo::wake_asterisk`).
        // The caller's channel on a frame on its RTP socket, which a keepalive datagram to
        // it gives at once (its own next frame may be 20 ms away).
        let late = shared.late_commands.load(Ordering::Relaxed);
        let _waking = live
            .media
            .as_ref()
            .filter(|_| late)
            .map(|e| e.wake_asterisk(live.media_format(shared.config.media.format)));
        let add = || {
            shared
                .ari
                .add_channels(&bridge, &[&id.0, &ids.channel(id, Role::Media)])
        };
        let result = shared.pool.waking(live.caller_rtp.filter(|_| late), add);
        if result.is_ok() {
            // From Asterisk's StasisStart when it said when: what the caller lives through.
            let took = live
                .entered
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_else(|| live.started.elapsed());
            crate::metrics::call_set_up(took);
            if let Some(session) = live.media.as_ref() {
                session.caller_bridged();
            }
            info!(
                "call {id}: caller and media bridged in {} ms",
                took.as_millis()
            );
        }
        done(Step::AddCallerAndMedia, result)
    }

    /// The bridge alone (a call without the bot).
    fn create_bridge(&self, id: &CallId) -> Input {
        done(
            Step::CreateBridge,
            self.shared
                .ari
                .create_bridge(&self.shared.ids.bridge(id), &format!("voicebot1 call {id}")),
        )
    }

    fn create_bridge_and_media(&self, id: &CallId, live: &mut ActiveCall) -> Input {
        let shared = &*self.shared;
        let cfg = &shared.config;
        let ari = &shared.ari;
        let ids = &shared.ids;
        let bridge = ids.bridge(id);
        let Some(port) = live.media.as_ref().map(|m| m.port()) else {
            return Input::Done(
                Step::CreateBridgeAndMedia,
                Err(Failure::Other("no socket leased".into())),
            );
        };
        let host = host_port(&cfg.media.advertise_host, port);
        let format = live.media_format(cfg.media.format);
        let media = ids.channel(id, Role::Media);
        let name = format!("voicebot1 call {id}");
        // On Asterisk before 18.21/20.6, also where the caller's RTP arrives, to wake the
        // caller's channel during the next step (see `add_caller_and_media`).
        let late = shared.late_commands.load(Ordering::Relaxed);
        let bridge_side = || {
            let made = ari.create_bridge(&bridge, &name);
            (
                made,
                late.then(|| rtp_address(ari, id, &id.0, cfg.media.asterisk_host))
                    .flatten(),
            )
        };
        // Two requests at once, one round trip: neither needs the other (the ids are ours).
        let ((made_bridge, caller_rtp), made_media) = std::thread::scope(|scope| {
            let bridge_request = std::thread::Builder::new()
                .name("bridge-request".into())
                .stack_size(REQUEST_THREAD_STACK)
                .spawn_scoped(scope, bridge_side);
            let made_media = ari.external_media(&media, &cfg.ari.app, &host, format.name());
            let bridge_side = match bridge_request {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    let panicked = ErrorKind::Transport("its request thread panicked".into());
                    (
                        Err(AriError {
                            doing: format!("creating bridge {bridge}"),
                            kind: panicked,
                        }),
                        None,
                    )
                }),
                // No thread to be had: one after the other.
                Err(_) => bridge_side(),
            };
            (bridge_side, made_media)
        });
        live.caller_rtp = caller_rtp;
        if let Ok(channel) = &made_media {
            debug!(
                "call {id}: externalMedia {} sends RTP to {host}",
                channel.name
            );
            pin_peer(id, live, channel);
        }
        done(
            Step::CreateBridgeAndMedia,
            made_bridge.and(made_media.map(drop)),
        )
    }

    fn start_timer(&self, id: &CallId, timer: Timer, after: Duration) {
        // The timer thread outlives every worker: sending cannot fail while calls run.
        let _ = self
            .timers
            .send((Instant::now() + after, id.clone(), timer));
    }

    /// Ringback is a tone played to the caller: the caller is answered and in the bridge,
    /// where a ringing indication would not be heard.
    ///
    /// Returns once the tone plays. Asterisk starts a bridged channel's playback by queuing it
    /// to the channel's bridge thread and waiting, in the channel's own Stasis thread, until it
    /// has played (res_stasis_playback.c `play_uri`). A caller that leaves the bridge before
    /// the queued playback is picked up (hung up, or the bridge destroyed, within about a
    /// millisecond) leaves that wait stuck for its 10-minute failsafe: the channel stays up,
    /// deaf to hang-ups. Every later action of this call (the end of a destination that failed
    /// at once, too) comes after this on the same worker, so it cannot race the pick-up.
    fn ring(&self, id: &CallId) {
        let ari = &self.shared.ari;
        let playback = self.shared.ids.ringback(id);
        if let Err(e) = ari.play(&id.0, &playback, RINGBACK) {
            warn!("call {id}: no ringback for the caller: {e}");
            return;
        }
        let since = Instant::now();
        let mut naps = Backoff::new(RING_POLL_FIRST, RING_POLL_MAX);
        loop {
            match ari.playback_state(&playback) {
                Ok(state) if state != "queued" => {
                    debug!(
                        "call {id}: ringback {state} after {} µs",
                        since.elapsed().as_micros()
                    );
                    return;
                }
                Ok(_) => {}
                // Gone: it has played (or failed) already.
                Err(e) if e.is_not_found() => return,
                Err(e) => {
                    debug!("call {id}: {e}");
                    return;
                }
            }
            if since.elapsed() >= RING_START_WAIT {
                warn!(
                    "call {id}: ringback still queued after {} ms; going on",
                    since.elapsed().as_millis()
                );
                return;
            }
            std::thread::sleep(naps.next_delay());
        }
    }

    fn stop_ring(&self, id: &CallId) {
        match self.shared.ari.stop_playback(&self.shared.ids.ringback(id)) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => debug!("call {id}: {e}"),
        }
    }

    fn originate(&self, id: &CallId, live: &mut ActiveCall) -> Input {
        let cfg = &self.shared.config;
        let in_call = live.started.elapsed();
        let caller_id = if cfg.transfer.caller_id.is_empty() {
            live.caller_number.clone()
        } else {
            cfg.transfer.caller_id.clone()
        };
        let dest = self.shared.ids.channel(id, Role::Dest);
        let app_args = format!("transfer,{id}");
        let endpoint = live
            .call
            .destination()
            .unwrap_or(&cfg.transfer.endpoint)
            .to_string();
        info!(
            "call {id}: transferring to {endpoint} after {:.1} s",
            in_call.as_secs_f64()
        );
        live.dialing_since = Some(Instant::now());
        let result = self.shared.ari.originate(&Originate {
            channel_id: &dest,
            endpoint: &endpoint,
            app: &cfg.ari.app,
            app_args: &app_args,
            caller_id: &caller_id,
            timeout: cfg.transfer.dial_timeout,
        });
        done(Step::Originate, result.map(drop))
    }

    /// Pushes a hang-up handler on each leg that hangs the other up, in Asterisk itself.
    fn link_legs(&self, id: &CallId, live: &ActiveCall) {
        let Some(dest_name) = live.dest_name.as_deref() else {
            warn!("call {id}: destination's channel name unknown; its hang-up will not end the caller without voicebot1");
            return;
        };
        let dest = self.shared.ids.channel(id, Role::Dest);
        for (channel, peer) in [
            (id.0.as_str(), dest_name),
            (dest.as_str(), live.caller_name.as_str()),
        ] {
            let handler = format!("{HANDOVER_CONTEXT},peer,1({peer})");
            if let Err(e) =
                self.shared
                    .ari
                    .set_variable(channel, "CHANNEL(hangup_handler_push)", &handler)
            {
                warn!("call {id}: {e} (without it the call needs a running voicebot1 to end both legs)");
            }
        }
    }
}

/// Ends the media session and returns its socket, with the session's line.
fn release_socket(id: &CallId, live: &mut ActiveCall) {
    if let Some(media) = live.media.take() {
        let port = media.port();
        let line = media.finish();
        info!("call {id}: bot media ended on port {port}: {line}");
    }
}

/// Points the call's echo at the RTP address Asterisk reports for its externalMedia channel.
pub(super) fn pin_peer(id: &CallId, live: &ActiveCall, channel: &Channel) {
    if let (Some(peer), Some(echo)) = (unicast_rtp_peer(channel), live.media.as_ref()) {
        debug!("call {id}: media peer is {peer}");
        echo.set_peer(peer);
    }
}

/// Asterisk's end of `channel`'s RTP (`CHANNEL(rtp,src)`, PJSIP only), with `asterisk_host`
/// for an unspecified address; `None` when Asterisk does not say.
fn rtp_address(
    ari: &AriClient,
    id: &CallId,
    channel: &str,
    asterisk_host: IpAddr,
) -> Option<SocketAddr> {
    let value = match ari.channel_variable(channel, "CHANNEL(rtp,src)") {
        Ok(v) => v,
        Err(e) => {
            debug!("call {id}: no RTP address for {channel}: {e}");
            return None;
        }
    };
    match value.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => Some(SocketAddr::new(asterisk_host, a.port())),
        Ok(a) => Some(a),
        Err(_) => {
            debug!("call {id}: the RTP address of {channel}, {value:?}, is not IP:PORT");
            None
        }
    }
}

fn done(step: Step, result: Result<(), AriError>) -> Input {
    Input::Done(
        step,
        result.map_err(|e| {
            if e.is_not_found() {
                Failure::NotFound
            } else {
                Failure::Other(e.to_string())
            }
        }),
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
fn unicast_rtp_peer(channel: &Channel) -> Option<SocketAddr> {
    let vars = channel.channelvars.as_ref()?;
    let ip: IpAddr = vars
        .get("UNICASTRTP_LOCAL_ADDRESS")?
        .as_str()?
        .parse()
        .ok()?;
    let port: u16 = vars.get("UNICASTRTP_LOCAL_PORT")?.as_str()?.parse().ok()?;
    (port != 0).then_some(SocketAddr::new(ip, port))
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
        assert_eq!(
            unicast_rtp_peer(&ch),
            Some("127.0.0.1:12000".parse().unwrap())
        );
        let ch: Channel =
            serde_json::from_str(r#"{"id":"x","channelvars":{"UNICASTRTP_LOCAL_PORT":"bad"}}"#)
                .unwrap();
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
