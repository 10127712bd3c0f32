//! voicebot1 against REST failures of the scripted fake ARI
//! (tests/support/fake_ari/): a real Asterisk cannot be made on demand to
//! answer 500 or to answer slowly, so these use the fake.

use std::time::Duration;

use crate::support::fake_ari::internal_error;
use crate::support::*;

#[test]
fn fake_ari_bridge_create_500_hangs_up_caller_and_leaks_nothing() {
    let (fake, mut vb) = start_pair("bridge-500", Config::new());
    fake.set_rule(Rule::create_bridge(internal_error()));
    let ids = CallIds::new("1764000011.1");
    fake.new_inbound_call(&ids.call);
    let r = fake
        .wait_for_answered(STEP, |r| is_bridge_create(r, &ids.bridge))
        .expect("create bridge");
    assert_eq!(r.status, Some(500), "{r}");
    expect_request(&fake, "DELETE caller after bridge 500", |r| {
        is_delete_channel(r, &ids.call)
    });
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up after the bridge could not be created",
    );
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
    expect_request(&fake, "DELETE bridge after externalMedia 500", |r| {
        is_delete_bridge(r, &ids.bridge)
    });
    expect_request(&fake, "DELETE caller after externalMedia 500", |r| {
        is_delete_channel(r, &ids.call)
    });
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up after externalMedia failed",
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_slow_external_media_and_caller_hangup_leaves_nothing() {
    let (fake, mut vb) = start_pair("slow-external-media", Config::new());
    // 1.5 s: slower than usual but within request_timeout_ms (2 s); the fake
    // creates the media channel only after the delay, as a slow Asterisk would.
    fake.set_rule(Rule::external_media(Action::Delay(Duration::from_millis(
        1500,
    ))));
    let ids = CallIds::new("1764000013.1");
    fake.new_inbound_call(&ids.call);
    expect_request(&fake, "externalMedia", |r| is_external_media(r, &ids.media));
    assert!(
        !fake.has_channel(&ids.media),
        "media channel exists before the slow answer"
    );
    assert!(fake.caller_hangs_up(&ids.call));
    // The answer (and the media channel) arrives after the caller left.
    fake.wait_for_answered(STEP, |r| is_external_media(r, &ids.media))
        .expect("externalMedia answered");
    expect_request(
        &fake,
        "DELETE of the media channel created after the hangup (204)",
        |r| is_delete_channel(r, &ids.media) && r.status == Some(204),
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_external_media_timeout_destroys_bridge_and_hangs_up_caller() {
    let config = Config {
        request_timeout_ms: 1000,
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("external-media-timeout", config);
    // Longer than request_timeout_ms: voicebot1 gives up on the request; the
    // fake still creates the channel afterwards, which must not leak either.
    fake.set_rule(Rule::external_media(Action::Delay(Duration::from_millis(1800))).times(1));
    let ids = CallIds::new("1764000014.1");
    fake.new_inbound_call(&ids.call);
    expect_request(&fake, "externalMedia", |r| is_external_media(r, &ids.media));
    expect_request(&fake, "DELETE caller after externalMedia timeout", |r| {
        is_delete_channel(r, &ids.call)
    });
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up after externalMedia timed out",
    );
    fake.wait_for_answered(STEP, |r| is_external_media(r, &ids.media));
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_originate_500_hangs_up_caller_and_leaks_nothing() {
    let (fake, mut vb) = start_pair("originate-500", Config::new());
    fake.set_rule(Rule::originate(internal_error()));
    let ids = call_to_media_phase(&fake, &vb, "1764000015.1");
    let r = fake
        .wait_for_answered(STEP, |r| is_originate(r, &ids.dest))
        .expect("originate");
    assert_eq!(r.status, Some(500), "{r}");
    expect_request(&fake, "DELETE caller after originate 500", |r| {
        is_delete_channel(r, &ids.call)
    });
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up after the originate failed",
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_add_destination_to_bridge_500_hangs_up_everything() {
    let (fake, mut vb) = start_pair("add-dest-500", Config::new());
    let ids = CallIds::new("1764000016.1");
    // Caller and media get into the bridge; only then does addChannel fail.
    call_to_media_phase(&fake, &vb, &ids.call);
    fake.set_rule(Rule::prefix(
        "POST",
        &format!("/ari/bridges/{}/addChannel", ids.bridge),
        internal_error(),
    ));
    expect_request(&fake, "originate destination", |r| {
        is_originate(r, &ids.dest)
    });
    let r = fake
        .wait_for_answered(STEP, |r| is_add_channel(r, &ids.bridge, &ids.dest))
        .expect("addChannel destination");
    assert_eq!(r.status, Some(500), "{r}");
    expect_request(&fake, "DELETE destination after addChannel 500", |r| {
        is_delete_channel(r, &ids.dest)
    });
    expect_request(&fake, "DELETE caller after addChannel 500", |r| {
        is_delete_channel(r, &ids.call)
    });
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up after the destination could not be bridged",
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_connection_dropped_on_add_channel_hangs_up_caller_and_leaks_nothing() {
    // The HTTP connection closes without an answer (Asterisk crashed or a proxy cut it): a
    // transport error, not a status. The caller gets the set-up failure outcome.
    let (fake, mut vb) = start_pair("add-channel-dropped", Config::new());
    fake.set_rule(
        Rule::prefix(
            "POST",
            "/ari/bridges/voicebot1-1764000017.1-bridge/addChannel",
            Action::Drop,
        )
        .times(1),
    );
    let ids = CallIds::new("1764000017.1");
    fake.new_inbound_call(&ids.call);
    expect_request(&fake, "addChannel", |r| {
        is_add_channel(r, &ids.bridge, &ids.call)
    });
    expect_request(&fake, "DELETE bridge after the dropped connection", |r| {
        is_delete_bridge(r, &ids.bridge)
    });
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up after addChannel failed",
    );
    assert!(
        vb.wait_log("AddCallerAndMedia failed", STEP).is_some(),
        "the failure is not in the log"
    );
    finish(&fake, &mut vb);
}

/// The set-up time voicebot1 logged for `call` ("caller and media bridged in N ms").
fn setup_ms(vb: &Voicebot, call: &str) -> u64 {
    let line = vb
        .wait_log(&format!("call {call}: caller and media bridged in"), STEP)
        .expect("set-up line");
    line.rsplit_once(" in ")
        .and_then(|(_, ms)| ms.trim_end_matches(" ms").trim().parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn fake_ari_a_3s_delete_on_one_call_leaves_other_calls_setup_unaffected() {
    // A slow Asterisk answer to one request is something the fake does on demand.
    let first = crate::support::voicebot::free_port_range(8);
    let config = Config {
        workers: 2,
        phase_ms: 20_000,
        port_min: first,
        port_max: first + 7,
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("slow-delete-other-calls", config);
    let slow = call_to_media_phase(&fake, &vb, "1764000101.1");
    let media = slow.media.clone();
    fake.set_rule(Rule::when(
        "DELETE",
        "the slow call's media",
        move |p| p == format!("/ari/channels/{media}"),
        Action::Delay(Duration::from_secs(3)),
    ));
    assert!(fake.caller_hangs_up(&slow.call));
    expect_request(&fake, "the slow DELETE", |r| {
        is_delete_channel(r, &slow.media)
    });
    let others = [
        "1764000101.2",
        "1764000101.3",
        "1764000101.4",
        "1764000101.5",
        "1764000101.6",
        "1764000101.7",
    ];
    // Measured from the caller's StasisStart, as the caller lives it (voicebot1's own "bridged
    // in" figure starts when a worker takes the call, so it would hide queueing).
    let mut bridged = Vec::new();
    for call in others {
        let t0 = std::time::Instant::now();
        call_to_media_phase(&fake, &vb, call);
        bridged.push(t0.elapsed().as_millis() as u64);
        assert!(setup_ms(&vb, call) < 1000);
    }
    let pending =
        fake.requests_matching(|r| is_delete_channel(r, &slow.media) && r.status.is_none());
    assert_eq!(
        pending.len(),
        1,
        "the slow DELETE should still be pending while the others were set up"
    );
    assert!(
        bridged.iter().all(|ms| *ms < 1000),
        "set-up of other calls took {bridged:?} ms behind one slow DELETE"
    );
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
    let config = Config {
        workers: 1,
        phase_ms: 1000,
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("hangup-before-timer", config);
    let call = call_to_media_phase(&fake, &vb, "1764000102.1");
    let blocker = CallIds::new("1764000102.2");
    let bridge = blocker.bridge.clone();
    fake.set_rule(Rule::when(
        "POST",
        "the blocker's bridge",
        move |p| p == format!("/ari/bridges/{bridge}"),
        Action::Delay(Duration::from_millis(1800)),
    ));
    fake.new_inbound_call(&blocker.call);
    expect_request(&fake, "the slow bridge creation", |r| {
        is_bridge_create(r, &blocker.bridge)
    });
    assert!(fake.caller_hangs_up(&call.call));
    // Past the media timer and the slow request, with margin.
    std::thread::sleep(Duration::from_millis(2500));
    expect_request(&fake, "DELETE bridge after the hang-up", |r| {
        is_delete_bridge(r, &call.bridge)
    });
    let originates = fake.requests_matching(|r| is_originate(r, &call.dest));
    assert!(
        originates.is_empty(),
        "transferred a caller who had hung up: {originates:?}"
    );
    assert!(
        vb.log_text()
            .contains(&format!("call {}: ended (caller hung up)", call.call)),
        "{}",
        vb.log_text()
    );
    fake.clear_rules();
    assert!(fake.caller_hangs_up(&blocker.call));
    finish(&fake, &mut vb);
}

// ---- overload: admission control and a janitor that converges ----------------------------

#[test]
fn fake_ari_a_call_over_max_calls_is_rejected_with_congestion_at_once() {
    let config = Config {
        phase_ms: 3000,
        admission: "max_calls = 1".into(),
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("over-max-calls", config);
    let first = call_to_media_phase(&fake, &vb, "1764000060.1");
    let second = CallIds::new("1764000061.1");
    fake.new_inbound_call(&second.call);
    let hangup = fake
        .wait_for_answered(STEP, |r| is_delete_channel(r, &second.call))
        .expect("the second caller is hung up");
    assert_eq!(hangup.q("reason"), Some("congestion"), "{hangup}");
    let line = vb
        .wait_log("call 1764000061.1: rejected with congestion", STEP)
        .expect("a rejection line");
    assert!(line.contains("admission.max_calls is 1"), "{line}");
    assert!(
        fake.requests_matching(|r| is_bridge_create(r, &second.bridge))
            .is_empty(),
        "a rejected call got a bridge"
    );
    assert!(fake.caller_hangs_up(&first.call));
    wait_no_voicebot1_resources(&fake);
    // Below the ceiling again: the next caller is taken.
    full_call(&fake, &vb, "1764000062.1");
    finish(&fake, &mut vb);
    assert!(
        vb.log_text().contains("1 not taken (overload)"),
        "{}",
        vb.log_text()
    );
}

#[test]
fn fake_ari_a_caller_waits_while_asterisk_is_slow_and_is_taken_once_it_answers_fast_again() {
    // Every bridge request takes 800 ms: past max_rest_latency_ms, so Asterisk reads as slow.
    let config = Config {
        phase_ms: 3000,
        admission: "max_rest_latency_ms = 100\nmax_wait_ms = 5000".into(),
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("slow-asterisk-waits", config);
    fake.set_rule(Rule::prefix(
        "POST",
        "/ari/bridges",
        Action::Delay(Duration::from_millis(800)),
    ));
    let slow = call_to_media_phase(&fake, &vb, "1764000063.1");
    let waiter = CallIds::new("1764000064.1");
    fake.new_inbound_call(&waiter.call);
    let line = vb
        .wait_log("call 1764000064.1: PJSIP/", STEP)
        .expect("the caller waits");
    assert!(
        line.contains("waits (Asterisk is slow: ") && line.contains("at most 5000 ms)"),
        "{line}"
    );
    // Asterisk fast again: the waiting caller is taken, not rejected.
    fake.clear_rules();
    assert!(vb
        .wait_log("call 1764000064.1: taken after waiting", STEP)
        .is_some());
    wait_bridge_has(&fake, &waiter.bridge, &[&waiter.call, &waiter.media]);
    assert!(!vb.log_text().contains("1764000064.1: not taken"));
    for ids in [&slow, &waiter] {
        assert!(fake.caller_hangs_up(&ids.call));
    }
    wait_no_voicebot1_resources(&fake);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_a_caller_is_rejected_once_a_stalled_asterisk_stays_stalled_past_max_wait() {
    let config = Config {
        phase_ms: 3000,
        admission: "max_wait_ms = 1000".into(),
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("stalled-asterisk-rejects", config);
    full_call(&fake, &vb, "1764000069.1");
    // Asterisk stops answering: the set-up's requests in flight (bridge, media) grow old.
    fake.set_rule(Rule::prefix(
        "POST",
        "/ari/",
        Action::Delay(Duration::from_secs(6)),
    ));
    let stuck = CallIds::new("1764000069.2");
    fake.new_inbound_call(&stuck.call);
    // Past the 1 s window of recent answers, only the stuck request speaks.
    std::thread::sleep(Duration::from_millis(1100));
    let shed = CallIds::new("1764000069.3");
    let arrived = std::time::Instant::now();
    fake.new_inbound_call(&shed.call);
    assert!(vb.wait_log("call 1764000069.3: PJSIP/", STEP).is_some());
    let line = vb
        .wait_log("call 1764000069.3: rejected with congestion", STEP)
        .expect("the caller is rejected after waiting");
    // Rejected when its wait ran out, or when the stall turned into an overload (max_wait and a
    // second after the stall began) — whichever came first; never before it waited.
    assert!(
        line.contains(": Asterisk is slow") || line.contains("Asterisk is overloaded"),
        "{line}"
    );
    assert!(arrived.elapsed() >= Duration::from_millis(800), "{line}");
    wait_channel_gone(&fake, &shed.call, "the rejected caller is hung up");
    fake.clear_rules();
    // The stuck call itself failed when its request timed out.
    wait_channel_gone(&fake, &stuck.call, "the stuck caller is hung up");
    wait_no_voicebot1_resources(&fake);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_a_transport_failure_sheds_calls_to_the_destination_without_the_bot() {
    // No waiting: a caller not taken at once is sent on without the bot.
    let config = Config {
        phase_ms: 20_000,
        admission: "on_overload = \"transfer\"\nmax_wait_ms = 0".into(),
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("unanswered-transfers", config);
    // One bridge request goes unanswered (connection closed): that call fails, and for the next
    // 2 s new callers go straight to the destination.
    fake.set_rule(Rule::create_bridge(Action::Drop).times(1));
    let failed = CallIds::new("1764000066.1");
    fake.new_inbound_call(&failed.call);
    wait_channel_gone(
        &fake,
        &failed.call,
        "the caller whose bridge failed is hung up",
    );
    let ids = CallIds::new("1764000067.1");
    fake.new_inbound_call(&ids.call);
    let line = vb
        .wait_log("call 1764000067.1: not taken", STEP)
        .expect("the caller is not taken with the bot");
    assert!(
        line.contains("went unanswered") && line.contains("transferring without the bot"),
        "{line}"
    );
    expect_request(&fake, "originate at once", |r| is_originate(r, &ids.dest));
    wait_bridge_has(&fake, &ids.bridge, &[&ids.call, &ids.dest]);
    assert!(
        fake.requests_matching(|r| is_external_media(r, &ids.media))
            .is_empty(),
        "the bot was set up"
    );
    caller_hangs_up_after_transfer(&fake, &ids);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_a_caller_whose_hang_up_failed_is_hung_up_by_the_janitor() {
    let config = Config {
        janitor_s: 1,
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("janitor-retries-caller", config);
    fake.set_destination(Destination::Busy {
        after: Duration::from_millis(50),
    });
    let ids = CallIds::new("1764000068.1");
    // The caller's hang-up fails twice (the request and its retry).
    let caller_path = format!("/ari/channels/{}", ids.call);
    fake.set_rule(
        Rule::when(
            "DELETE",
            "caller hang-up",
            move |p| p == caller_path,
            internal_error(),
        )
        .times(2),
    );
    fake.new_inbound_call(&ids.call);
    assert!(
        vb.wait_log("call 1764000068.1: ended", STEP).is_some(),
        "{}",
        vb.log_text()
    );
    assert!(
        fake.has_channel(&ids.call),
        "the caller's hang-up did not fail as scripted"
    );
    wait_channel_gone(
        &fake,
        &ids.call,
        "the janitor must hang the caller up once Asterisk answers",
    );
    assert!(vb
        .wait_log("whose earlier hang-up had failed", STEP)
        .is_some());
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_a_caller_whose_stasis_start_never_came_is_started_by_the_janitor() {
    let config = Config {
        janitor_s: 1,
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("janitor-starts-caller", config);
    assert!(
        vb.wait_log("sweep: 0 calls adopted", STEP).is_some(),
        "{}",
        vb.log_text()
    );
    let ids = CallIds::new("1764000069.1");
    fake.add_waiting_caller(&ids.call);
    expect_request(&fake, "bridge for the caller found by the janitor", |r| {
        is_bridge_create(r, &ids.bridge)
    });
    assert!(
        vb.log_text().contains("janitor: call 1764000069.1: caller"),
        "{}",
        vb.log_text()
    );
    transfer_to_destination(&fake, &vb, &ids);
    caller_hangs_up_after_transfer(&fake, &ids);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_the_door_shut_a_moment_ago_opens_when_voicebot1_stops() {
    // A stalled Asterisk (its bridge and media requests unanswered) is something the fake does on
    // demand. Overloaded, voicebot1 shuts Asterisk's door; stopped right after, it must open it:
    // a door left shut would refuse the next instance's first callers for up to 2 s.
    let config = Config {
        admission: "max_wait_ms = 0".into(),
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("door-opens-at-stop", config);
    fake.set_rule(Rule::prefix(
        "POST",
        "/ari/bridges",
        Action::Delay(Duration::from_secs(4)),
    ));
    fake.set_rule(Rule::prefix(
        "POST",
        "/ari/channels",
        Action::Delay(Duration::from_secs(4)),
    ));
    fake.new_inbound_call("1764000091.1");
    std::thread::sleep(Duration::from_millis(300));
    fake.new_inbound_call("1764000092.1");
    vb.wait_log(
        "refuses every new caller at its door",
        Duration::from_secs(8),
    )
    .expect("the door is shut while Asterisk is overloaded");
    // The share is set first, then the time the door stays shut until.
    let shut_until = || {
        fake.global("VOICEBOT1_FULL_UNTIL")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|t| *t > 0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while shut_until().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        shut_until().is_some(),
        "{:?}",
        fake.global("VOICEBOT1_FULL_UNTIL")
    );
    vb.signal("TERM");
    assert!(
        vb.wait_exit(Duration::from_secs(15)).is_some(),
        "voicebot1 did not stop"
    );
    assert_eq!(
        fake.global("VOICEBOT1_FULL_UNTIL").as_deref(),
        Some("0"),
        "the door is left shut after the stop; log:\n{}",
        vb.log_text()
    );
    fake.clear_rules();
}
