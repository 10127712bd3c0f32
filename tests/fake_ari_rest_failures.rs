//! voicebot1 against REST failures of the scripted fake ARI
//! (tests/support/fake_ari.rs): a real Asterisk cannot be made on demand to
//! answer 500 or to answer slowly, so these use the fake.

mod support;

use std::time::Duration;

use support::fake_ari::internal_error;
use support::*;

#[test]
fn fake_ari_bridge_create_500_hangs_up_caller_and_leaks_nothing() {
    let (fake, mut vb) = start_pair("bridge-500", Config::new());
    fake.set_rule(Rule::create_bridge(internal_error()));
    let ids = CallIds::new("1764000011.1");
    fake.new_inbound_call(&ids.call);
    let r = fake.wait_for_answered(STEP, |r| is_bridge_create(r, &ids.bridge)).expect("create bridge");
    assert_eq!(r.status, Some(500), "{r}");
    expect_request(&fake, "DELETE caller after bridge 500", |r| is_delete_channel(r, &ids.call));
    wait_channel_gone(&fake, &ids.call, "caller must be hung up after the bridge could not be created");
    finish(&fake, &mut vb);
    assert!(!fake.has_bridge(&ids.bridge));
}

#[test]
fn fake_ari_external_media_500_destroys_bridge_and_hangs_up_caller() {
    let (fake, mut vb) = start_pair("external-media-500", Config::new());
    fake.set_rule(Rule::external_media(internal_error()));
    let ids = CallIds::new("1764000012.1");
    fake.new_inbound_call(&ids.call);
    expect_request(&fake, "create bridge", |r| is_bridge_create(r, &ids.bridge));
    expect_request(&fake, "externalMedia", |r| is_external_media(r, &ids.media));
    expect_request(&fake, "DELETE bridge after externalMedia 500", |r| is_delete_bridge(r, &ids.bridge));
    expect_request(&fake, "DELETE caller after externalMedia 500", |r| is_delete_channel(r, &ids.call));
    wait_channel_gone(&fake, &ids.call, "caller must be hung up after externalMedia failed");
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_slow_external_media_and_caller_hangup_leaves_nothing() {
    let (fake, mut vb) = start_pair("slow-external-media", Config::new());
    // 1.5 s: slower than usual but within request_timeout_ms (2 s); the fake
    // creates the media channel only after the delay, as a slow Asterisk would.
    fake.set_rule(Rule::external_media(Action::Delay(Duration::from_millis(1500))));
    let ids = CallIds::new("1764000013.1");
    fake.new_inbound_call(&ids.call);
    expect_request(&fake, "externalMedia", |r| is_external_media(r, &ids.media));
    assert!(!fake.has_channel(&ids.media), "media channel exists before the slow answer");
    assert!(fake.caller_hangs_up(&ids.call));
    // The answer (and the media channel) arrives after the caller left.
    fake.wait_for_answered(STEP, |r| is_external_media(r, &ids.media)).expect("externalMedia answered");
    expect_request(&fake, "DELETE of the media channel created after the hangup (204)", |r| {
        is_delete_channel(r, &ids.media) && r.status == Some(204)
    });
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_external_media_timeout_destroys_bridge_and_hangs_up_caller() {
    let config = Config { request_timeout_ms: 1000, ..Config::new() };
    let (fake, mut vb) = start_pair("external-media-timeout", config);
    // Longer than request_timeout_ms: voicebot1 gives up on the request; the
    // fake still creates the channel afterwards, which must not leak either.
    fake.set_rule(Rule::external_media(Action::Delay(Duration::from_millis(1800))).times(1));
    let ids = CallIds::new("1764000014.1");
    fake.new_inbound_call(&ids.call);
    expect_request(&fake, "externalMedia", |r| is_external_media(r, &ids.media));
    expect_request(&fake, "DELETE caller after externalMedia timeout", |r| is_delete_channel(r, &ids.call));
    wait_channel_gone(&fake, &ids.call, "caller must be hung up after externalMedia timed out");
    fake.wait_for_answered(STEP, |r| is_external_media(r, &ids.media));
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_originate_500_hangs_up_caller_and_leaks_nothing() {
    let (fake, mut vb) = start_pair("originate-500", Config::new());
    fake.set_rule(Rule::originate(internal_error()));
    let ids = call_to_media_phase(&fake, &vb, "1764000015.1");
    let r = fake.wait_for_answered(STEP, |r| is_originate(r, &ids.dest)).expect("originate");
    assert_eq!(r.status, Some(500), "{r}");
    expect_request(&fake, "DELETE caller after originate 500", |r| is_delete_channel(r, &ids.call));
    wait_channel_gone(&fake, &ids.call, "caller must be hung up after the originate failed");
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_add_destination_to_bridge_500_hangs_up_everything() {
    let (fake, mut vb) = start_pair("add-dest-500", Config::new());
    let ids = CallIds::new("1764000016.1");
    // Caller and media get into the bridge; only then does addChannel fail.
    call_to_media_phase(&fake, &vb, &ids.call);
    fake.set_rule(Rule::prefix("POST", &format!("/ari/bridges/{}/addChannel", ids.bridge), internal_error()));
    expect_request(&fake, "originate destination", |r| is_originate(r, &ids.dest));
    let r = fake
        .wait_for_answered(STEP, |r| is_add_channel(r, &ids.bridge, &ids.dest))
        .expect("addChannel destination");
    assert_eq!(r.status, Some(500), "{r}");
    expect_request(&fake, "DELETE destination after addChannel 500", |r| is_delete_channel(r, &ids.dest));
    expect_request(&fake, "DELETE caller after addChannel 500", |r| is_delete_channel(r, &ids.call));
    wait_channel_gone(&fake, &ids.call, "caller must be hung up after the destination could not be bridged");
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_connection_dropped_on_add_channel_hangs_up_caller_and_leaks_nothing() {
    // The HTTP connection closes without an answer (Asterisk crashed or a proxy cut it): a
    // transport error, not a status. The caller gets the set-up failure outcome.
    let (fake, mut vb) = start_pair("add-channel-dropped", Config::new());
    fake.set_rule(Rule::prefix("POST", "/ari/bridges/voicebot1-1764000017.1-bridge/addChannel", Action::Drop).times(1));
    let ids = CallIds::new("1764000017.1");
    fake.new_inbound_call(&ids.call);
    expect_request(&fake, "addChannel", |r| is_add_channel(r, &ids.bridge, &ids.call));
    expect_request(&fake, "DELETE bridge after the dropped connection", |r| is_delete_bridge(r, &ids.bridge));
    wait_channel_gone(&fake, &ids.call, "caller must be hung up after addChannel failed");
    assert!(vb.wait_log("AddCaller failed", STEP).is_some(), "the failure is not in the log");
    finish(&fake, &mut vb);
}

/// The set-up time voicebot1 logged for `call` ("caller and media bridged in N ms").
fn setup_ms(vb: &Voicebot, call: &str) -> u64 {
    let line = vb.wait_log(&format!("call {call}: caller and media bridged in"), STEP).expect("set-up line");
    line.rsplit_once(" in ").and_then(|(_, ms)| ms.trim_end_matches(" ms").trim().parse().ok()).unwrap_or(u64::MAX)
}

#[test]
fn fake_ari_a_3s_delete_on_one_call_leaves_other_calls_setup_unaffected() {
    // A slow Asterisk answer to one request is something the fake does on demand.
    let first = support::voicebot::free_port_range(8);
    let config = Config { workers: 2, phase_ms: 20_000, port_min: first, port_max: first + 7, ..Config::new() };
    let (fake, mut vb) = start_pair("slow-delete-other-calls", config);
    let slow = call_to_media_phase(&fake, &vb, "1764000101.1");
    let media = slow.media.clone();
    fake.set_rule(Rule::when("DELETE", "the slow call's media", move |p| p == format!("/ari/channels/{media}"), Action::Delay(Duration::from_secs(3))));
    assert!(fake.caller_hangs_up(&slow.call));
    expect_request(&fake, "the slow DELETE", |r| is_delete_channel(r, &slow.media));
    let others = ["1764000101.2", "1764000101.3", "1764000101.4", "1764000101.5", "1764000101.6", "1764000101.7"];
    // Measured from the caller's StasisStart, as the caller lives it (voicebot1's own "bridged
    // in" figure starts when a worker takes the call, so it would hide queueing).
    let mut bridged = Vec::new();
    for call in others {
        let t0 = std::time::Instant::now();
        call_to_media_phase(&fake, &vb, call);
        bridged.push(t0.elapsed().as_millis() as u64);
        assert!(setup_ms(&vb, call) < 1000);
    }
    let pending = fake.requests_matching(|r| is_delete_channel(r, &slow.media) && r.status.is_none());
    assert_eq!(pending.len(), 1, "the slow DELETE should still be pending while the others were set up");
    assert!(bridged.iter().all(|ms| *ms < 1000), "set-up of other calls took {bridged:?} ms behind one slow DELETE");
    for call in others {
        assert!(fake.caller_hangs_up(call));
    }
    fake.clear_rules();
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_caller_hangup_queued_behind_a_slow_request_wins_over_the_media_timer() {
    // One worker: a slow request of another call holds it while this call's hang-up arrives
    // and its media timer falls due. The hang-up came first, so there must be no transfer.
    let config = Config { workers: 1, phase_ms: 1000, ..Config::new() };
    let (fake, mut vb) = start_pair("hangup-before-timer", config);
    let call = call_to_media_phase(&fake, &vb, "1764000102.1");
    let blocker = CallIds::new("1764000102.2");
    let bridge = blocker.bridge.clone();
    fake.set_rule(Rule::when("POST", "the blocker's bridge", move |p| p == format!("/ari/bridges/{bridge}"), Action::Delay(Duration::from_millis(1800))));
    fake.new_inbound_call(&blocker.call);
    expect_request(&fake, "the slow bridge creation", |r| is_bridge_create(r, &blocker.bridge));
    assert!(fake.caller_hangs_up(&call.call));
    // Past the media timer and the slow request, with margin.
    std::thread::sleep(Duration::from_millis(2500));
    expect_request(&fake, "DELETE bridge after the hang-up", |r| is_delete_bridge(r, &call.bridge));
    let originates = fake.requests_matching(|r| is_originate(r, &call.dest));
    assert!(originates.is_empty(), "transferred a caller who had hung up: {originates:?}");
    assert!(vb.log_text().contains(&format!("call {}: ended (caller hung up)", call.call)), "{}", vb.log_text());
    fake.clear_rules();
    assert!(fake.caller_hangs_up(&blocker.call));
    finish(&fake, &mut vb);
}
