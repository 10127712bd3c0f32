//! voicebot1's event WebSocket against the scripted fake ARI
//! (tests/support/fake_ari/): a real Asterisk cannot be made on demand to
//! send malformed frames, drop the socket mid-frame, go silent without
//! closing or refuse credentials at a chosen moment, so these use the fake.

use std::time::{Duration, Instant};

use crate::support::fake_ari::{base64_encode, internal_error, DEFAULT_PASSWORD};
use crate::support::*;
use serde_json::json;

#[test]
fn fake_ari_malformed_frames_are_skipped() {
    let (fake, mut vb) = start_pair("malformed-frames", Config::new());
    assert_eq!(
        fake.send_raw_text("this is {not json"),
        1,
        "no WebSocket client to send to"
    );
    fake.send_raw_text("[1,2,3]");
    fake.send_raw_text(r#"{"no_type":"here"}"#);
    fake.send_raw_text("");
    // Events of known types missing the fields they need.
    fake.send_event(json!({"type": "StasisStart", "args": ["inbound"]}));
    fake.send_event(json!({"type": "StasisStart", "args": ["inbound"], "channel": {"id": 5}}));
    fake.send_event(json!({"type": "StasisEnd"}));
    fake.send_event(json!({"type": "ChannelDestroyed", "cause": 16}));
    // An event type voicebot1 does not know.
    fake.send_event(json!({"type": "SomethingNewInAsterisk23", "channel": {"id": "x"}}));
    std::thread::sleep(Duration::from_millis(500));
    assert!(vb.is_running(), "voicebot1 exited after malformed frames");
    full_call(&fake, &vb, "1764000021.1");
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_websocket_drop_reconnects_and_takes_calls() {
    let (fake, mut vb) = start_pair("ws-drop", Config::new());
    assert_eq!(fake.drop_websocket(), 1);
    assert!(
        fake.wait_ws_connections(2, STEP),
        "voicebot1 did not reconnect after the WebSocket dropped"
    );
    assert!(vb.is_running());
    full_call(&fake, &vb, "1764000022.1");
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_wrong_password_is_reported_and_retried() {
    let fake = FakeAri::start();
    let secret = "wrong-secret-7f3a9c";
    assert_ne!(secret, DEFAULT_PASSWORD);
    let mut vb = Voicebot::start(
        "wrong-password",
        &fake,
        Config {
            password: secret.into(),
            ..Config::new()
        },
    );
    assert!(
        fake.wait_auth_failures(2, Duration::from_secs(15)),
        "voicebot1 did not retry after a 401"
    );
    assert!(vb.wait_log("401", STEP).is_some(), "log never mentions 401");
    assert!(
        vb.wait_log("check [ari] username/password", STEP).is_some(),
        "log never says `check [ari] username/password`"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        vb.is_running(),
        "voicebot1 exited on wrong credentials instead of retrying"
    );
    assert_eq!(fake.ws_connections(), 0);
    vb.stop_and_assert_clean();
    let log = vb.log_text();
    assert!(!log.contains(secret), "the password appears in the log");
    let b64 = base64_encode(format!("voicebot1:{secret}").as_bytes());
    assert!(
        !log.contains(&b64),
        "the Basic auth credentials appear in the log"
    );
}

#[test]
fn fake_ari_websocket_drop_during_call_then_call_completes() {
    // A long media phase so the drop and reconnection happen inside it.
    let (fake, mut vb) = start_pair(
        "ws-drop-mid-call",
        Config {
            phase_ms: 3000,
            ..Config::new()
        },
    );
    let ids = call_to_media_phase(&fake, &vb, "1764000023.1");
    assert_eq!(fake.drop_websocket(), 1);
    assert!(
        fake.wait_ws_connections(2, STEP),
        "voicebot1 did not reconnect after the WebSocket dropped"
    );
    transfer_to_destination(&fake, &vb, &ids);
    caller_hangs_up_after_transfer(&fake, &ids);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_caller_hangup_lost_while_disconnected_is_reconciled() {
    // The caller leaves while the WebSocket is down: its StasisEnd never reaches voicebot1 (a real
    // Asterisk cannot be made to lose exactly that event on demand). After reconnecting,
    // voicebot1 must notice the caller is gone and release the call.
    let (fake, mut vb) = start_pair(
        "ws-lost-hangup",
        Config {
            phase_ms: 5000,
            ..Config::new()
        },
    );
    let ids = call_to_media_phase(&fake, &vb, "1764000024.1");
    assert_eq!(fake.drop_websocket(), 1);
    assert!(
        fake.caller_hangs_up(&ids.call),
        "the caller was not in the fake"
    );
    assert!(
        fake.wait_ws_connections(2, STEP),
        "voicebot1 did not reconnect"
    );
    assert!(
        vb.wait_log("caller channel vanished while disconnected", STEP)
            .is_some(),
        "no reconcile line"
    );
    wait_no_voicebot1_resources(&fake);
    assert!(
        fake.requests_matching(is_any_originate).is_empty(),
        "voicebot1 transferred a caller who had left"
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_huge_frame_is_refused_and_the_connection_recovers() {
    // A frame over the 1 MiB limit cannot be skipped in place (its payload follows its header on
    // the stream), so voicebot1 drops the connection, says so, reconnects and goes on.
    let (fake, mut vb) = start_pair("huge-frame", Config::new());
    let huge = format!(
        "{{\"type\":\"ChannelVarset\",\"value\":\"{}\"}}",
        "x".repeat(2 << 20)
    );
    fake.send_raw_text(&huge);
    assert!(
        fake.wait_ws_connections(2, STEP),
        "voicebot1 did not reconnect after a huge frame"
    );
    assert!(
        vb.wait_log("event WebSocket lost", STEP).is_some(),
        "the refused frame is not in the log"
    );
    assert!(vb.is_running());
    full_call(&fake, &vb, "1764000025.1");
    finish(&fake, &mut vb);
}

/// The silence a "silent for N s, pings unanswered" line reports, in seconds.
fn reported_silence(line: &str) -> Option<f64> {
    line.split("silent for ")
        .nth(1)?
        .split(" s")
        .next()?
        .parse()
        .ok()
}

#[test]
fn fake_ari_websocket_that_stops_answering_without_closing_is_replaced_within_15s() {
    // A half-open connection: the TCP connection stays up, nothing comes back, not even pongs.
    // Asterisk never pings, so only voicebot1's own pings can tell.
    let (fake, mut vb) = start_pair("ws-frozen", Config::new());
    assert_eq!(fake.freeze_websocket(), 1);
    let frozen_at = Instant::now();
    assert!(
        fake.wait_ws_connections(2, Duration::from_secs(15)),
        "voicebot1 still waited on the silent WebSocket {:.1} s after it froze",
        frozen_at.elapsed().as_secs_f64()
    );
    let line = vb
        .wait_log("pings unanswered", STEP)
        .expect("no log line says the WebSocket went silent");
    assert!(
        line.contains("[WARN]") && line.contains("event WebSocket lost"),
        "{line}"
    );
    let silence = reported_silence(&line).unwrap_or_else(|| panic!("no silence in {line:?}"));
    assert!(
        (5.0..15.0).contains(&silence),
        "reported silence {silence} s: {line}"
    );
    assert_eq!(
        vb.count_log("pings unanswered"),
        1,
        "one WARN line per dead connection"
    );
    assert!(
        vb.wait_log("reconciling active calls", STEP).is_some(),
        "no reconcile after the reconnect"
    );
    full_call(&fake, &vb, "1764000026.1");
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_quiet_websocket_answering_pings_is_kept() {
    // No event for more than a ping interval plus a pong timeout: voicebot1 pings, the fake's
    // pongs prove the connection alive, and it is kept.
    let (fake, mut vb) = start_pair("ws-quiet", Config::new());
    assert!(
        fake.wait_until(Duration::from_secs(15), |m| m.ws_pings() >= 2),
        "voicebot1 sent {} pings in 15 s on a quiet WebSocket",
        fake.ws_pings()
    );
    assert_eq!(
        fake.ws_connections(),
        1,
        "a connection that answered every ping was replaced"
    );
    assert_eq!(vb.count_log("pings unanswered"), 0);
    full_call(&fake, &vb, "1764000027.1");
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_caller_stranded_in_the_app_while_disconnected_is_started_after_reconnect() {
    // A StasisStart lost with the WebSocket: the fake drops events while no client is connected.
    let (fake, mut vb) = start_pair("stranded-caller", Config::new());
    assert!(vb.wait_log("sweep: 0 calls adopted", STEP).is_some());
    assert_eq!(fake.drop_websocket(), 1);
    let ids = CallIds::new("1764000027.1");
    fake.new_inbound_call(&ids.call);
    assert!(
        fake.wait_ws_connections(2, STEP),
        "voicebot1 did not reconnect"
    );
    // The reconnect finds the caller waiting in the application and gives it its call.
    expect_request(&fake, "bridge for the stranded caller", |r| {
        is_bridge_create(r, &ids.bridge)
    });
    wait_bridge_has(&fake, &ids.bridge, &[&ids.call, &ids.media]);
    assert!(vb
        .wait_log(
            "was waiting in the application with no call; starting it",
            STEP
        )
        .is_some());
    transfer_to_destination(&fake, &vb, &ids);
    caller_hangs_up_after_transfer(&fake, &ids);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_media_stasis_start_lost_while_disconnected_is_recovered_after_reconnect() {
    let (fake, mut vb) = start_pair("media-start-lost", Config::new());
    // The media channel's StasisStart goes out while no WebSocket is there to carry it.
    fake.set_media_start(MediaStart::Never);
    let ids = CallIds::new("1764000028.1");
    fake.new_inbound_call(&ids.call);
    expect_request(&fake, "externalMedia", |r| is_external_media(r, &ids.media));
    assert_eq!(fake.drop_websocket(), 1);
    assert!(
        fake.wait_ws_connections(2, STEP),
        "voicebot1 did not reconnect"
    );
    // Well before the set-up guard (11 s here): the reconcile finds the media channel.
    wait_bridge_has(&fake, &ids.bridge, &[&ids.call, &ids.media]);
    fake.set_media_start(MediaStart::AfterResponse);
    transfer_to_destination(&fake, &vb, &ids);
    caller_hangs_up_after_transfer(&fake, &ids);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_a_failed_reconcile_after_reconnect_is_retried_by_reconnecting() {
    let (fake, mut vb) = start_pair("reconcile-retried", Config::new());
    assert!(vb.wait_log("sweep: 0 calls adopted", STEP).is_some());
    let ids = call_to_media_phase(&fake, &vb, "1764000029.1");
    // The listing that reconciles the calls fails (the request and its retry) after the drop.
    fake.set_rule(Rule::prefix("GET", "/ari/channels", internal_error()).times(2));
    assert_eq!(fake.drop_websocket(), 1);
    assert!(
        vb.wait_log("cannot reconcile after reconnect", STEP)
            .is_some(),
        "{}",
        vb.log_text()
    );
    assert!(
        fake.wait_ws_connections(3, STEP),
        "voicebot1 did not reconnect to reconcile again"
    );
    assert!(
        vb.wait_log("ARI: reconciling active calls with", STEP)
            .is_some(),
        "{}",
        vb.log_text()
    );
    transfer_to_destination(&fake, &vb, &ids);
    caller_hangs_up_after_transfer(&fake, &ids);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_health_is_503_while_asterisk_is_gone_and_200_when_it_is_back() {
    let (fake, mut vb) = start_pair("health-asterisk-gone", Config::new());
    let up = vb
        .wait_health(200, STEP)
        .unwrap_or_else(|e| panic!("never healthy: {e:?}"));
    assert!(up.starts_with("ok: ARI connected"), "{up}");
    let addr = fake.addr();
    drop(fake);
    let down = vb
        .wait_health(503, STEP)
        .unwrap_or_else(|e| panic!("still healthy with Asterisk gone: {e:?}"));
    assert!(down.contains("WebSocket not connected"), "{down}");
    assert_eq!(vb.scrape().get("voicebot1_ari_websocket_connected"), 0);
    // voicebot1 keeps trying (and failing) to connect: it stays unavailable meanwhile.
    let refused = r#"voicebot1_ari_requests_total{operation="info",class="connect"}"#;
    let deadline = Instant::now() + STEP;
    while vb.scrape().get(refused) == 0 {
        assert!(
            Instant::now() < deadline,
            "no refused connection counted:\n{}",
            vb.scrape().0
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(vb.health().0, 503);

    let fake = FakeAri::start_at(addr);
    let back = vb
        .wait_health(200, STEP)
        .unwrap_or_else(|e| panic!("not healthy after Asterisk came back: {e:?}"));
    assert!(back.starts_with("ok: ARI connected"), "{back}");
    let m = vb.scrape();
    assert_eq!(m.get("voicebot1_ari_websocket_connected"), 1);
    assert_eq!(m.get("voicebot1_ari_websocket_reconnects_total"), 1);
    full_call(&fake, &vb, "1764000034.1");
    finish(&fake, &mut vb);
}
