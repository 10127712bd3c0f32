//! Test support for the fake-ARI tests (`tests/fake_ari/`; the memory bench includes it too).
//!
//! `fake_ari` is a scripted fake of the Asterisk ARI, used only for what a real
//! Asterisk cannot be made to do on demand (events before REST responses,
//! REST 5xx / slow answers, dropped or malformed WebSocket frames, 401s).
//! `voicebot` runs the voicebot1 binary against it, as a `process` (the helper the
//! sandbox tests share). The helpers below express the call flow of the voicebot1
//! contract in terms of fake ARI requests.
#![allow(dead_code)]

pub mod fake_ari;
pub mod process;
pub mod voicebot;

use std::time::Duration;

#[allow(unused_imports)]
pub use fake_ari::{Action, Destination, FakeAri, MediaStart, Recorded, Rule};
#[allow(unused_imports)]
pub use voicebot::{Config, Voicebot};

/// Generous bound for one step of a call flow on a slow, noisy machine.
pub const STEP: Duration = Duration::from_secs(10);
/// Bound for the final clean-up of a call.
pub const CLEANUP: Duration = Duration::from_secs(15);

/// The resource ids voicebot1 derives from a call id (the caller channel id).
#[derive(Clone, Debug)]
pub struct CallIds {
    pub call: String,
    pub bridge: String,
    pub media: String,
    pub dest: String,
}

impl CallIds {
    pub fn new(call: &str) -> CallIds {
        CallIds {
            call: call.to_string(),
            bridge: format!("voicebot1-{call}-bridge"),
            media: format!("voicebot1-{call}-media"),
            dest: format!("voicebot1-{call}-dest"),
        }
    }
}

// ---- request predicates ------------------------------------------------------

pub fn is_bridge_create(r: &Recorded, bridge: &str) -> bool {
    r.method == "POST"
        && (r.path == format!("/ari/bridges/{bridge}")
            || (r.path == "/ari/bridges" && r.q("bridgeId") == Some(bridge)))
}

pub fn is_add_channel(r: &Recorded, bridge: &str, chan: &str) -> bool {
    r.method == "POST"
        && r.path == format!("/ari/bridges/{bridge}/addChannel")
        && r.q("channel")
            .map(|c| c.split(',').any(|x| x == chan))
            .unwrap_or(false)
}

pub fn is_external_media(r: &Recorded, media: &str) -> bool {
    r.method == "POST" && r.path == "/ari/channels/externalMedia" && r.q("channelId") == Some(media)
}

pub fn is_originate(r: &Recorded, dest: &str) -> bool {
    r.method == "POST"
        && (r.path == format!("/ari/channels/{dest}")
            || (r.path == "/ari/channels" && r.q("channelId") == Some(dest)))
}

pub fn is_any_originate(r: &Recorded) -> bool {
    r.method == "POST" && fake_ari::is_originate_path(&r.path)
}

pub fn is_delete_channel(r: &Recorded, chan: &str) -> bool {
    r.method == "DELETE" && r.path == format!("/ari/channels/{chan}")
}

pub fn is_delete_bridge(r: &Recorded, bridge: &str) -> bool {
    r.method == "DELETE" && r.path == format!("/ari/bridges/{bridge}")
}

/// Ringback for the caller: a `tone:ring` playback started on the caller (POST) or stopped
/// (DELETE of the playback).
pub fn is_ring(r: &Recorded, method: &str, chan: &str) -> bool {
    let playback = format!("voicebot1-{chan}-ring");
    match method {
        "POST" => {
            r.method == "POST"
                && r.path == format!("/ari/channels/{chan}/play/{playback}")
                && r.q("media") == Some("tone:ring")
        }
        _ => r.method == method && r.path == format!("/ari/playbacks/{playback}"),
    }
}

// ---- flow steps ----------------------------------------------------------------

/// Starts voicebot1 against `fake` and waits until its event WebSocket is up.
pub fn launch(name: &str, fake: &FakeAri, config: Config) -> Voicebot {
    let mut vb = Voicebot::start(name, fake, config);
    let deadline = std::time::Instant::now() + STEP;
    while !fake.wait_ws_connections(1, Duration::from_millis(200)) {
        assert!(
            vb.is_running(),
            "voicebot1 exited before connecting the event WebSocket"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "voicebot1 never connected the event WebSocket"
        );
    }
    vb
}

/// A default fake plus voicebot1 connected to it.
pub fn start_pair(name: &str, config: Config) -> (FakeAri, Voicebot) {
    let fake = FakeAri::start();
    let vb = launch(name, &fake, config);
    (fake, vb)
}

/// Waits for a request, panicking with `what` if it does not come.
pub fn expect_request(fake: &FakeAri, what: &str, pred: impl Fn(&Recorded) -> bool) -> Recorded {
    match fake.wait_for_request(STEP, pred) {
        Some(r) => r,
        None => panic!("timed out waiting for voicebot1 to send: {what}"),
    }
}

/// Asserts the media port voicebot1 asked for is 127.0.0.1:<port in pool>.
pub fn assert_media_host_in_pool(r: &Recorded, config: &Config) {
    let host = r.q("external_host").unwrap_or("");
    let (ip, port) = host.rsplit_once(':').unwrap_or(("", ""));
    let port: u16 = port.parse().unwrap_or(0);
    assert_eq!(
        ip, "127.0.0.1",
        "external_host {host:?} is not on 127.0.0.1"
    );
    assert!(
        (config.port_min..=config.port_max).contains(&port),
        "external_host port {port} not in pool {}..={}",
        config.port_min,
        config.port_max
    );
}

/// A new inbound call, followed up to the media channel being in the bridge
/// with the caller (the media phase has begun).
pub fn call_to_media_phase(fake: &FakeAri, vb: &Voicebot, call: &str) -> CallIds {
    let ids = CallIds::new(call);
    fake.new_inbound_call(call);
    expect_request(fake, "create bridge", |r| is_bridge_create(r, &ids.bridge));
    expect_request(fake, "addChannel caller", |r| {
        is_add_channel(r, &ids.bridge, &ids.call)
    });
    let em = expect_request(fake, "externalMedia", |r| is_external_media(r, &ids.media));
    assert_media_host_in_pool(&em, &vb.config);
    wait_bridge_has(fake, &ids.bridge, &[&ids.call, &ids.media]);
    ids
}

/// Waits until `bridge` holds all of `members`.
pub fn wait_bridge_has(fake: &FakeAri, bridge: &str, members: &[&str]) {
    let ok = fake.wait_until(STEP, |m| {
        m.bridge_members(bridge)
            .map(|b| members.iter().all(|x| b.iter().any(|y| y == x)))
            .unwrap_or(false)
    });
    assert!(
        ok,
        "bridge {bridge} never held {members:?}; members now: {:?}",
        fake.bridge_members(bridge)
    );
}

/// Waits until the fake holds no channel or bridge whose id starts with `voicebot1-`.
pub fn wait_no_voicebot1_resources(fake: &FakeAri) {
    let ok = fake.wait_until(CLEANUP, |m| {
        !m.channel_ids().iter().any(|c| c.starts_with("voicebot1-"))
            && !m.bridge_ids().iter().any(|b| b.starts_with("voicebot1-"))
    });
    assert!(
        ok,
        "voicebot1 left resources behind: channels {:?} bridges {:?}",
        fake.channel_ids(),
        fake.bridge_ids()
    );
}

/// Waits until channel `id` is gone from the fake.
pub fn wait_channel_gone(fake: &FakeAri, id: &str, why: &str) {
    assert!(
        fake.wait_until(CLEANUP, |m| !m.has_channel(id)),
        "channel {id} still exists: {why}"
    );
}

/// The common end of every test: nothing with prefix `voicebot1-` is left,
/// then SIGTERM gives exit 0 with `shutdown complete` and `pool N/N free`.
pub fn finish(fake: &FakeAri, vb: &mut Voicebot) {
    wait_no_voicebot1_resources(fake);
    vb.stop_and_assert_clean();
    assert!(
        !fake
            .channel_ids()
            .iter()
            .any(|c| c.starts_with("voicebot1-"))
            && !fake
                .bridge_ids()
                .iter()
                .any(|b| b.starts_with("voicebot1-")),
        "resources appeared during shutdown: channels {:?} bridges {:?}",
        fake.channel_ids(),
        fake.bridge_ids()
    );
}

/// From the media phase on: media channel hung up after phase_ms, ring on the
/// caller, originate of the destination, ring off and destination bridged.
pub fn transfer_to_destination(fake: &FakeAri, vb: &Voicebot, ids: &CallIds) {
    expect_request(fake, "DELETE media channel after phase_ms", |r| {
        is_delete_channel(r, &ids.media)
    });
    expect_request(fake, "POST ring on caller", |r| {
        is_ring(r, "POST", &ids.call)
    });
    let orig = expect_request(fake, "originate destination", |r| {
        is_originate(r, &ids.dest)
    });
    assert_eq!(orig.q("app"), Some("voicebot1"), "originate app: {orig}");
    assert_eq!(
        orig.q("appArgs"),
        Some(format!("transfer,{}", ids.call).as_str()),
        "originate appArgs: {orig}"
    );
    assert_eq!(
        orig.q("endpoint"),
        Some(vb.config.endpoint.as_str()),
        "originate endpoint: {orig}"
    );
    expect_request(fake, "DELETE ring on caller", |r| {
        is_ring(r, "DELETE", &ids.call)
    });
    wait_bridge_has(fake, &ids.bridge, &[&ids.call, &ids.dest]);
}

/// The caller of a bridged call hangs up: the destination and the bridge are
/// deleted and nothing with prefix `voicebot1-` is left.
pub fn caller_hangs_up_after_transfer(fake: &FakeAri, ids: &CallIds) {
    assert!(
        fake.caller_hangs_up(&ids.call),
        "caller {} was already gone",
        ids.call
    );
    expect_request(fake, "DELETE destination after caller hangup", |r| {
        is_delete_channel(r, &ids.dest)
    });
    expect_request(fake, "DELETE bridge after caller hangup", |r| {
        is_delete_bridge(r, &ids.bridge)
    });
    wait_no_voicebot1_resources(fake);
}

/// A full healthy call: media phase, transfer, caller hangs up, clean-up.
pub fn full_call(fake: &FakeAri, vb: &Voicebot, call: &str) {
    let ids = call_to_media_phase(fake, vb, call);
    transfer_to_destination(fake, vb, &ids);
    caller_hangs_up_after_transfer(fake, &ids);
}
