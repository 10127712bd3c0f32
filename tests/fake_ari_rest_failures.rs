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
    fake.set_rule(Rule::external_media(Action::Delay(Duration::from_millis(2500))).times(1));
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
