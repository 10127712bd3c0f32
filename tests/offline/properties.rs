//! Property tests: untrusted input never panics the decoders, and no interleaving of events and
//! REST outcomes makes a call leak what it created. Plus the decoders on every frame of a call
//! captured from the oldest Asterisk the bench runs (16.28).

use std::time::Duration;

use proptest::prelude::*;
use voicebot1::ari::events::decode;
use voicebot1::call::{Action, BotRules, BotSays, Call, Failure, Input, Policy, Step, Timer};
use voicebot1::config::{AfterBot, PoolExhausted};
use voicebot1::dispatch::{route, CallEvent};
use voicebot1::ids::{CallId, Ids, Role};
use voicebot1::media::looks_like_rtp;

proptest! {
    #[test]
    fn decoder_never_panics_on_arbitrary_text(s in ".{0,400}") {
        let _ = decode(&s);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn decoder_never_panics_on_event_shaped_json(
        ty in prop_oneof![
            Just("StasisStart".to_string()),
            Just("StasisEnd".to_string()),
            Just("ChannelDestroyed".to_string()),
            Just("Dial".to_string()),
            ".{0,12}",
        ],
        id in proptest::option::of(".{0,20}"),
        args in proptest::collection::vec(".{0,8}", 0..3),
        cause in proptest::option::of(any::<i64>()),
    ) {
        let mut v = serde_json::json!({"type": ty, "args": args});
        if let Some(id) = id {
            v["channel"] = serde_json::json!({"id": id});
            v["peer"] = serde_json::json!({"id": "p"});
        }
        if let Some(c) = cause {
            v["cause"] = serde_json::json!(c);
        }
        let _ = decode(&v.to_string());
    }

    #[test]
    fn rtp_check_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = looks_like_rtp(&bytes);
    }

    #[test]
    fn every_well_formed_rtp_packet_is_accepted(
        pt in 0u8..128, seq in any::<u16>(), ts in any::<u32>(), ssrc in any::<u32>(),
        csrc in proptest::collection::vec(any::<u32>(), 0..16),
        ext in proptest::option::of(proptest::collection::vec(any::<u32>(), 0..4)),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut p = vec![0x80 | csrc.len() as u8 | if ext.is_some() { 0x10 } else { 0 }, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        for c in &csrc {
            p.extend_from_slice(&c.to_be_bytes());
        }
        if let Some(words) = &ext {
            p.extend_from_slice(&[0xbe, 0xde]);
            p.extend_from_slice(&(words.len() as u16).to_be_bytes());
            for w in words {
                p.extend_from_slice(&w.to_be_bytes());
            }
        }
        p.extend_from_slice(&payload);
        prop_assert!(looks_like_rtp(&p));
        // Cut anywhere inside the announced header, it is refused.
        let header = 12 + 4 * csrc.len() + ext.as_ref().map_or(0, |w| 4 + 4 * w.len());
        prop_assert!(!looks_like_rtp(&p[..header - 1]));
    }

    #[test]
    fn any_call_id_routes_back_from_every_derived_id(call in "[0-9A-Za-z.:_-]{1,40}") {
        let ids = Ids::new("voicebot1");
        let call = CallId(call);
        for role in [Role::Media, Role::Dest] {
            prop_assert_eq!(ids.classify_channel(&ids.channel(&call, role)), (call.clone(), role));
        }
        prop_assert_eq!(ids.classify_bridge(&ids.bridge(&call)), Some(call));
    }

    /// Drives a call as a worker does: each input's actions are performed in order, each outcome
    /// fed back at once, and the next external event comes only when that batch is done (a
    /// worker handles one message at a time); actions left after `Finish` are dropped (the
    /// worker has forgotten the call). REST outcomes and external events are chosen at random.
    /// Whatever happened, everything the call asked for must be released when it finishes.
    #[test]
    fn no_interleaving_leaks_a_socket_a_bridge_or_a_channel(
        events in proptest::collection::vec(0u8..16, 0..40),
        failures in proptest::collection::vec(any::<bool>(), 64),
        exhausted in any::<bool>(),
        hangup_policy in any::<bool>(),
        bot in proptest::option::of((any::<bool>(), any::<bool>())),
    ) {
        let after = |hangup: bool| if hangup { AfterBot::Hangup } else { AfterBot::Transfer };
        let policy = Policy {
            media_phase: Duration::from_secs(7),
            dial_timeout: Duration::from_secs(30),
            on_pool_exhausted: if hangup_policy { PoolExhausted::Hangup } else { PoolExhausted::Transfer },
            setup_timeout: Duration::from_secs(15),
            bot: bot.map(|(done, failure)| BotRules { when_done: after(done), on_failure: after(failure) }),
        };
        let (mut call, first) = Call::start(policy);
        let mut ledger = Ledger { exhausted, failures: failures.into_iter().cycle().take(1000).collect(), ..Ledger::default() };
        ledger.run(&mut call, first);
        for event in events.into_iter().map(external).chain([Input::Shutdown]) {
            if ledger.finished {
                break;
            }
            if let Input::Left(role, _) = &event {
                ledger.left(*role);
            }
            let actions = call.on(event);
            ledger.run(&mut call, actions);
        }
        prop_assert!(ledger.finished, "the call never finished");
        prop_assert!(!ledger.socket, "socket leased and never released");
        prop_assert!(!ledger.bridge, "bridge requested and never destroyed");
        prop_assert!(!ledger.media, "externalMedia requested and never hung up");
        prop_assert!(!ledger.dest, "destination originated and never hung up");
        prop_assert_eq!(ledger.finishes, 1, "Finish emitted more than once");
    }
}

/// What the call holds outside itself, as the actions it emitted say.
#[derive(Default, Debug)]
struct Ledger {
    exhausted: bool,
    /// Whether each successive REST step fails.
    failures: std::collections::VecDeque<bool>,
    socket: bool,
    bridge: bool,
    media: bool,
    dest: bool,
    finished: bool,
    finishes: usize,
}

impl Ledger {
    /// Performs a batch as the worker does: outcomes go straight back into the call, their
    /// actions join the batch, and nothing runs after `Finish`.
    fn run(&mut self, call: &mut Call, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            if self.finished {
                return;
            }
            if let Some(outcome) = self.perform(action) {
                queue.extend(call.on(outcome));
            }
        }
    }

    /// Performs one action; REST steps fail as `failures` says.
    fn perform(&mut self, action: Action) -> Option<Input> {
        let fail = self.failures.pop_front().unwrap_or(false);
        let outcome = |step| {
            Some(Input::Done(
                step,
                if fail {
                    Err(Failure::Other("HTTP 500".into()))
                } else {
                    Ok(())
                },
            ))
        };
        match action {
            Action::LeaseSocket => {
                self.socket = !self.exhausted;
                Some(Input::Leased(!self.exhausted))
            }
            Action::ReleaseSocket => {
                self.socket = false;
                None
            }
            Action::CreateBridge => {
                self.bridge = true;
                outcome(Step::CreateBridge)
            }
            Action::CreateBridgeAndMedia => {
                // Both requests go out: each may have created its resource, whatever the outcome.
                self.bridge = true;
                self.media = true;
                outcome(Step::CreateBridgeAndMedia)
            }
            Action::AddToBridge(Role::Caller) | Action::AddToBridge(Role::Media) => {
                outcome(Step::AddCaller)
            }
            Action::AddCallerAndMedia => outcome(Step::AddCallerAndMedia),
            Action::AddToBridge(Role::Dest) => outcome(Step::AddDest),
            Action::Originate => {
                self.dest = true;
                outcome(Step::Originate)
            }
            Action::Hangup(Role::Media, _) => {
                self.media = false;
                None
            }
            Action::Hangup(Role::Dest, _) => {
                self.dest = false;
                None
            }
            Action::Hangup(Role::Caller, _) => None,
            Action::DestroyBridge => {
                self.bridge = false;
                None
            }
            Action::StartTimer(..) | Action::Ring | Action::StopRing | Action::LinkLegs => None,
            Action::Finish(_) => {
                self.finished = true;
                self.finishes += 1;
                None
            }
        }
    }

    /// A channel that left on its own needs no hang-up.
    fn left(&mut self, role: Role) {
        match role {
            Role::Media => self.media = false,
            Role::Dest => self.dest = false,
            Role::Caller => {}
        }
    }
}

fn external(event: u8) -> Input {
    match event {
        0 => Input::MediaUp,
        1 => Input::DestUp,
        2 => Input::Left(Role::Caller, Some(16)),
        3 => Input::Left(Role::Media, Some(16)),
        4 => Input::Left(Role::Dest, Some(17)),
        5 => Input::Left(Role::Dest, Some(16)),
        6 => Input::Timer(Timer::MediaPhaseOver),
        7 => Input::Timer(Timer::DialGuard),
        8 => Input::Timer(Timer::SetupGuard),
        9 => Input::Shutdown,
        10 => Input::Drain,
        11 => Input::Bot(BotSays::Transfer(Some(
            "PJSIP/4438100@AVAYA-endpoint".into(),
        ))),
        12 => Input::Bot(BotSays::Hangup),
        13 => Input::Bot(BotSays::Done),
        14 => Input::Bot(BotSays::Failed),
        _ => Input::Timer(Timer::MediaPhaseOver),
    }
}

/// Every frame Asterisk 16.28 sent for one call that was transferred and then hung up by the
/// caller (tests/fixtures/events/asterisk16/): each decodes, and the ones a call needs route to
/// that one call with the roles voicebot1 acts on.
#[test]
fn asterisk16_captured_transferred_call_decodes_and_routes_to_one_call() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/asterisk16"
    );
    let text =
        std::fs::read_to_string(format!("{dir}/call_transferred_then_caller_hangs_up.jsonl"))
            .unwrap();
    let ids = Ids::new("voicebot1");
    let mut routed = Vec::new();
    for line in text.lines() {
        let event = decode(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        routed.extend(route(&ids, "inbound", event));
    }
    let call = &routed[0].0;
    assert!(routed.iter().all(|(c, _)| c == call), "{routed:?}");
    assert!(matches!(routed[0].1, CallEvent::Inbound(..)));
    assert!(routed
        .iter()
        .any(|(_, e)| matches!(e, CallEvent::Started(Role::Media, _))));
    assert!(routed
        .iter()
        .any(|(_, e)| matches!(e, CallEvent::Started(Role::Dest, _))));
    assert!(routed
        .iter()
        .any(|(_, e)| *e == CallEvent::Dial("ANSWER".into())));
    assert!(routed
        .iter()
        .any(|(_, e)| *e == CallEvent::Left(Role::Caller, None)));
    assert!(routed
        .iter()
        .any(|(_, e)| *e == CallEvent::Left(Role::Dest, Some(16))));
    // The single-frame fixtures are frames of the same call.
    for name in [
        "stasis_start_inbound",
        "stasis_start_external_media",
        "stasis_start_transfer",
        "stasis_end_caller",
        "channel_destroyed_media",
        "channel_destroyed_dest",
    ] {
        let frame = std::fs::read_to_string(format!("{dir}/{name}.json")).unwrap();
        assert!(
            text.lines().any(|l| l == frame.trim_end()),
            "{name}.json is not a frame of the captured call"
        );
        let (c, _) = route(&ids, "inbound", decode(&frame).unwrap())
            .unwrap_or_else(|| panic!("{name} routes nowhere"));
        assert_eq!(&c, call, "{name}");
    }
}
