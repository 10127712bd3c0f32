//! voicebot1 call flow against the scripted fake ARI (tests/support/fake_ari/).
//! A fake is used because a real Asterisk cannot be made on demand to push a
//! StasisStart before the REST response that created the channel, or to make
//! a destination busy / answer at a chosen moment while the test hangs up the
//! caller at a chosen point of the flow.

use std::time::Duration;

use crate::support::*;

#[test]
fn fake_ari_media_stasis_start_before_rest_response_is_bridged() {
    let (fake, mut vb) = start_pair("media-before-rest", Config::new());
    fake.set_media_start(MediaStart::BeforeResponse);
    // call_to_media_phase waits for the media channel to be in the bridge.
    let ids = call_to_media_phase(&fake, &vb, "1764000001.1");
    transfer_to_destination(&fake, &vb, &ids);
    caller_hangs_up_after_transfer(&fake, &ids);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_caller_hangup_during_media_phase_cancels_origination() {
    // A long media phase, so the hangup surely falls inside it.
    let config = Config {
        phase_ms: 3000,
        ..Config::new()
    };
    let phase = Duration::from_millis(config.phase_ms);
    let (fake, mut vb) = start_pair("hangup-in-media-phase", config);
    let ids = call_to_media_phase(&fake, &vb, "1764000002.1");
    assert!(
        fake.requests_matching(is_any_originate).is_empty(),
        "originate already sent before phase_ms elapsed"
    );
    assert!(fake.caller_hangs_up(&ids.call));
    expect_request(&fake, "DELETE bridge after caller hangup", |r| {
        is_delete_bridge(r, &ids.bridge)
    });
    wait_no_voicebot1_resources(&fake);
    // Wait past the end of the media phase, with margin.
    std::thread::sleep(phase + Duration::from_secs(2));
    let originates = fake.requests_matching(is_any_originate);
    assert!(
        originates.is_empty(),
        "originate sent after the caller hung up: {originates:?}"
    );
    let rings = fake.requests_matching(|r| is_ring(r, "POST", &ids.call));
    assert!(
        rings.is_empty(),
        "ring started after the caller hung up: {rings:?}"
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_destination_busy_hangs_up_caller() {
    let (fake, mut vb) = start_pair("dest-busy", Config::new());
    fake.set_destination(Destination::Busy {
        after: Duration::from_millis(300),
    });
    let ids = call_to_media_phase(&fake, &vb, "1764000003.1");
    expect_request(&fake, "originate destination", |r| {
        is_originate(r, &ids.dest)
    });
    expect_request(&fake, "DELETE caller after busy destination", |r| {
        is_delete_channel(r, &ids.call)
    });
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up when the destination is busy",
    );
    finish(&fake, &mut vb);
}

/// Asterisk 22.10.1 froze a caller for 10 minutes when its ringback was started and the caller
/// left the bridge within the millisecond before Asterisk picked the tone up (see
/// `CallHandler::ring`). A fake cannot freeze; it shows the order: a destination that fails at
/// once ends the caller only after Asterisk said the ringback plays.
#[test]
fn fake_ari_the_caller_is_hung_up_only_once_its_ringback_plays() {
    let (fake, mut vb) = start_pair("ring-settles", Config::new());
    fake.set_destination(Destination::Busy {
        after: Duration::ZERO,
    });
    // An Asterisk slow to pick the tone up: the first three looks find it still queued.
    let queued = Action::Respond {
        status: 200,
        body: serde_json::json!({"state": "queued"}),
    };
    fake.set_rule(Rule::prefix("GET", "/ari/playbacks/", queued).times(3));
    let ids = call_to_media_phase(&fake, &vb, "1764000020.1");
    expect_request(&fake, "DELETE caller after busy destination", |r| {
        is_delete_channel(r, &ids.call)
    });
    let requests = fake.requests();
    let hangup = requests
        .iter()
        .position(|r| is_delete_channel(r, &ids.call))
        .unwrap_or(usize::MAX);
    let looks = requests[..hangup]
        .iter()
        .filter(|r| is_ring(r, "GET", &ids.call))
        .count();
    assert_eq!(
        looks,
        4,
        "the caller was hung up after {looks} looks at its ringback (3 queued, then playing):\n{}",
        fake.dump()
    );
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up when the destination is busy",
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_destination_no_answer_hangs_up_caller() {
    let (fake, mut vb) = start_pair("dest-no-answer", Config::new());
    fake.set_destination(Destination::NoAnswer {
        after: Some(Duration::from_millis(500)),
    });
    let ids = call_to_media_phase(&fake, &vb, "1764000004.1");
    let orig = expect_request(&fake, "originate destination", |r| {
        is_originate(r, &ids.dest)
    });
    assert_eq!(
        orig.q("timeout"),
        Some(vb.config.dial_timeout_s.to_string().as_str()),
        "originate timeout: {orig}"
    );
    expect_request(&fake, "DELETE caller after unanswered destination", |r| {
        is_delete_channel(r, &ids.call)
    });
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up when the destination does not answer",
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_destination_answers_and_is_bridged_then_caller_hangs_up() {
    let (fake, mut vb) = start_pair("dest-answers", Config::new());
    full_call(&fake, &vb, "1764000005.1");
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_destination_hangs_up_after_transfer_hangs_up_caller() {
    let (fake, mut vb) = start_pair("dest-hangs-up", Config::new());
    let ids = call_to_media_phase(&fake, &vb, "1764000006.1");
    transfer_to_destination(&fake, &vb, &ids);
    assert!(fake.remote_hangup(&ids.dest));
    expect_request(&fake, "DELETE caller after destination hangup", |r| {
        is_delete_channel(r, &ids.call)
    });
    expect_request(&fake, "DELETE bridge after destination hangup", |r| {
        is_delete_bridge(r, &ids.bridge)
    });
    wait_channel_gone(
        &fake,
        &ids.call,
        "caller must be hung up when the destination leaves",
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_stop_with_on_stop_hangup_cleans_the_active_call_up() {
    // A long media phase keeps the call active while SIGTERM arrives.
    let config = Config {
        phase_ms: 20_000,
        on_stop: "hangup".into(),
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("shutdown-active-call", config);
    let ids = call_to_media_phase(&fake, &vb, "1764000007.1");
    vb.stop_and_assert_clean();
    for (what, id) in [("caller", &ids.call), ("media", &ids.media)] {
        assert!(
            !fake.has_channel(id),
            "{what} channel {id} not hung up by shutdown"
        );
    }
    assert!(
        !fake.has_bridge(&ids.bridge),
        "bridge {} not destroyed by shutdown",
        ids.bridge
    );
    assert!(
        fake.requests_matching(is_any_originate).is_empty(),
        "originate during shutdown"
    );
}

#[test]
fn fake_ari_sigterm_transfers_the_caller_with_the_bot_and_hands_connected_calls_over() {
    let config = Config {
        phase_ms: 20_000,
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("handover", config);
    let with_bot = call_to_media_phase(&fake, &vb, "1764000009.1");
    vb.stop_and_assert_clean();
    // The bot phase was cut short: the caller went on to the destination, which answered.
    assert!(
        fake.requests_matching(|r| is_originate(r, &with_bot.dest))
            .len()
            == 1,
        "no transfer at the stop"
    );
    assert!(
        !fake.has_channel(&with_bot.media),
        "the bot's media channel outlived voicebot1"
    );
    assert!(
        fake.bridge_members(&with_bot.bridge)
            .is_some_and(|m| m.len() == 2),
        "caller and destination not left connected"
    );
    let hung_up = fake.requests_matching(|r| {
        is_delete_channel(r, &with_bot.call) || is_delete_channel(r, &with_bot.dest)
    });
    assert!(hung_up.is_empty(), "the stop hung up a party: {hung_up:?}");
    let log = vb.log_text();
    assert!(log.contains("call 1764000009.1: handed over to the next voicebot1 (caller and destination connected)"), "{log}");
    assert!(log.contains("1 handed over, 0 left"), "{log}");
    // The next instance adopts it; the call then ends as any call does.
    let mut next = launch("handover-next", &fake, Config::new());
    assert!(
        next.wait_log("call 1764000009.1: adopted from an earlier voicebot1", STEP)
            .is_some(),
        "{}",
        next.log_text()
    );
    caller_hangs_up_after_transfer(&fake, &with_bot);
    finish(&fake, &mut next);
}

#[test]
fn fake_ari_caller_arriving_during_the_handover_drain_waits_for_the_next_instance() {
    // The destination answers after 1.5 s: the drain waits for it, and a caller arrives meanwhile.
    let config = Config {
        phase_ms: 20_000,
        ..Config::new()
    };
    let (fake, mut vb) = start_pair("drain-arrival", config);
    fake.set_destination(Destination::Answer {
        after: Duration::from_millis(1500),
    });
    let with_bot = call_to_media_phase(&fake, &vb, "1764000010.1");
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(vb.pid().to_string())
        .status();
    assert!(
        vb.wait_log("stop requested", STEP).is_some(),
        "{}",
        vb.log_text()
    );
    let late = CallIds::new("1764000011.1");
    fake.new_inbound_call("1764000011.1");
    assert!(
        vb.wait_log("call 1764000011.1: inbound from", STEP)
            .is_some_and(|l| l.contains("left waiting for the next voicebot1")),
        "{}",
        vb.log_text()
    );
    let status = vb.wait_exit(STEP);
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after the drain: {}",
        vb.log_text()
    );
    assert!(
        vb.log_text().contains("1 handed over, 0 left"),
        "{}",
        vb.log_text()
    );
    assert!(
        fake.requests_matching(|r| is_bridge_create(r, &late.bridge))
            .is_empty(),
        "a call was started during the drain"
    );
    assert!(
        fake.has_channel(&late.call),
        "the late caller was hung up by the stop"
    );
    // The next instance adopts the connected call and starts the waiting caller.
    fake.set_destination(Destination::Answer {
        after: Duration::from_millis(50),
    });
    let mut next = launch("drain-arrival-next", &fake, Config::new());
    assert!(
        next.wait_log("call 1764000010.1: adopted from an earlier voicebot1", STEP)
            .is_some(),
        "{}",
        next.log_text()
    );
    assert!(
        next.wait_log("call 1764000011.1: caller", STEP)
            .is_some_and(|l| l.contains("starting it")),
        "{}",
        next.log_text()
    );
    expect_request(&fake, "create bridge for the waiting caller", |r| {
        is_bridge_create(r, &late.bridge)
    });
    expect_request(&fake, "addChannel of the waiting caller", |r| {
        is_add_channel(r, &late.bridge, &late.call)
    });
    assert!(
        fake.caller_hangs_up(&late.call),
        "the waiting caller was hung up"
    );
    caller_hangs_up_after_transfer(&fake, &with_bot);
    finish(&fake, &mut next);
}

#[test]
fn fake_ari_destination_stasis_start_before_originate_response_is_bridged() {
    let (fake, mut vb) = start_pair("dest-before-rest", Config::new());
    fake.set_destination(Destination::AnswerBeforeResponse);
    let ids = call_to_media_phase(&fake, &vb, "1764000008.1");
    transfer_to_destination(&fake, &vb, &ids);
    caller_hangs_up_after_transfer(&fake, &ids);
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_metrics_count_calls_requests_and_set_ups_as_the_log_does() {
    let (fake, mut vb) = start_pair("metrics-counters", Config::new());
    // Connected counts from the end of the start-up sweep, a moment after the WebSocket opened.
    assert!(vb.wait_health(200, STEP).is_ok(), "{}", vb.log_text());
    assert_eq!(vb.scrape().get("voicebot1_ari_websocket_connected"), 1);
    full_call(&fake, &vb, "1764000031.1");
    assert!(
        vb.wait_log("call 1764000031.1: ended (caller hung up)", STEP)
            .is_some(),
        "{}",
        vb.log_text()
    );
    // A second call whose bridge cannot be created (one 500, not retried: POST).
    fake.set_rule(Rule::create_bridge(crate::support::fake_ari::internal_error()).times(1));
    fake.new_inbound_call("1764000032.1");
    assert!(
        vb.wait_log("call 1764000032.1: ended (", STEP).is_some(),
        "{}",
        vb.log_text()
    );
    wait_no_voicebot1_resources(&fake);

    let m = vb.scrape();
    // The log's totals and the counters agree.
    assert_eq!(
        m.get(r#"voicebot1_calls_started_total{origin="inbound"}"#),
        vb.count_log(": inbound from ") as u64
    );
    assert_eq!(
        m.sum("voicebot1_calls_ended_total"),
        vb.count_log(": ended (") as u64
    );
    assert_eq!(
        m.get("voicebot1_call_setup_seconds_count"),
        vb.count_log("caller and media bridged in") as u64
    );
    assert_eq!(
        m.get("voicebot1_bot_sessions_total"),
        vb.count_log("bot media ended on port") as u64
    );
    // And say what happened.
    assert_eq!(
        m.get(r#"voicebot1_calls_started_total{origin="inbound"}"#),
        2
    );
    assert_eq!(
        m.get(r#"voicebot1_calls_ended_total{outcome="caller_hangup"}"#),
        1
    );
    assert_eq!(
        m.get(r#"voicebot1_calls_ended_total{outcome="setup_failed"}"#),
        1
    );
    assert_eq!(m.sum("voicebot1_calls_active"), 0);
    assert_eq!(m.get("voicebot1_call_setup_seconds_count"), 1);
    assert_eq!(
        m.get(r#"voicebot1_ari_requests_total{operation="create_bridge",class="2xx"}"#),
        1
    );
    assert_eq!(
        m.get(r#"voicebot1_ari_requests_total{operation="create_bridge",class="5xx"}"#),
        1
    );
    assert_eq!(
        m.get(r#"voicebot1_ari_request_duration_seconds_count{operation="create_bridge"}"#),
        2
    );
    // The bridge and the externalMedia channel are asked for at once: the failed call made one too.
    assert_eq!(
        m.get(r#"voicebot1_ari_requests_total{operation="external_media",class="2xx"}"#),
        2
    );
    assert_eq!(
        m.get(r#"voicebot1_ari_requests_total{operation="originate",class="2xx"}"#),
        1
    );
    // One for caller and media together, one for the destination.
    assert_eq!(
        m.get(r#"voicebot1_ari_requests_total{operation="add_channel",class="2xx"}"#),
        2,
        "{}",
        m.0
    );
    let pool = vb.config.pool_size() as u64;
    assert_eq!(
        (
            m.get("voicebot1_pool_ports_free"),
            m.get("voicebot1_pool_ports")
        ),
        (pool, pool)
    );
    assert!(
        !m.0.contains("1764000031"),
        "a call id in a label:\n{}",
        m.0
    );
    assert_eq!(
        vb.health(),
        (
            200,
            format!("ok: ARI connected, 0 calls active, pool {pool}/{pool} free")
        )
    );
    finish(&fake, &mut vb);
}

#[test]
fn fake_ari_health_is_503_while_every_media_port_is_in_use() {
    let config = Config::new();
    // One port, held by a call with the bot for 20 s.
    let config = Config {
        port_max: config.port_min,
        phase_ms: 20_000,
        ..config
    };
    let (fake, mut vb) = start_pair("health-pool", config);
    assert!(vb.wait_health(200, STEP).is_ok());
    let ids = call_to_media_phase(&fake, &vb, "1764000033.1");
    // The phase is recorded when the call's turn ends, just after the fake saw the bridge.
    let media = r#"voicebot1_calls_active{phase="media"}"#;
    assert_eq!(vb.wait_metric(media, 1, STEP).get(media), 1);
    let (status, line) = vb.health();
    assert_eq!(status, 503, "{line}");
    assert_eq!(
        line,
        "unavailable: no free media port (pool 0/1 free, 1 calls active)"
    );
    assert!(fake.caller_hangs_up(&ids.call));
    wait_no_voicebot1_resources(&fake);
    let back = vb.wait_health(200, STEP);
    assert!(back.is_ok(), "{back:?}");
    finish(&fake, &mut vb);
}

/// A voicebot1 connected to a fake Asterisk 16.28, which needs its channels woken.
fn launch_on_asterisk_16(name: &str) -> (FakeAri, Voicebot) {
    let fake = FakeAri::start();
    fake.set_asterisk_version("16.28.0");
    let vb = launch(name, &fake, Config::new());
    assert!(
        vb.wait_log("wakes the bot's media channel during set-up", STEP)
            .is_some(),
        "{}",
        vb.log_text()
    );
    (fake, vb)
}

/// Asterisk's end of `channel`'s RTP, a local socket the fake names (as `address_host:port`)
/// when voicebot1 reads the channel's `CHANNEL(rtp,src)`.
fn rtp_end_of(fake: &FakeAri, channel: &str, address_host: &str) -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let port = socket.local_addr().expect("addr").port();
    let value = serde_json::json!({ "value": format!("{address_host}:{port}") });
    fake.set_rule(Rule::prefix(
        "GET",
        &format!("/ari/channels/{channel}/variable"),
        Action::Respond {
            status: 200,
            body: value,
        },
    ));
    socket
}

/// voicebot1 read `channel`'s RTP address once, and `rtp` got only NAT keepalives, at least 20
/// while a 300 ms add waited (one every 1 ms), and none after it (the reads ran dry for 500 ms).
fn assert_poked_while_the_add_waited(fake: &FakeAri, channel: &str, rtp: &std::net::UdpSocket) {
    let asked = fake.requests_matching(|r| {
        r.method == "GET" && r.path == format!("/ari/channels/{channel}/variable")
    });
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].q("variable"), Some("CHANNEL(rtp,src)"));
    let mut buf = [0u8; 64];
    let mut got = 0;
    while let Ok(n) = rtp.recv(&mut buf) {
        assert_eq!(&buf[..n], &[0, 0, 0, 0], "not a keepalive");
        got += 1;
    }
    assert!(got >= 20, "only {got} keepalives during a 300 ms add");
}

/// The wiring only: that a real Asterisk 16 runs the queued add at once when the keepalive
/// arrives is shown by the sandbox runs on 16.28 (set-up times in scripts/test.sh's output).
#[test]
fn fake_ari_on_asterisk_16_the_callers_rtp_gets_keepalives_while_its_add_waits() {
    let (fake, mut vb) = launch_on_asterisk_16("wake-caller-16");
    let call = "1764000035.1";
    // Asterisk bound the caller's RTP to every address: voicebot1 pokes asterisk_host.
    let caller_rtp = rtp_end_of(&fake, call, "0.0.0.0");
    fake.set_rule(
        Rule::prefix(
            "POST",
            &format!("/ari/bridges/voicebot1-{call}-bridge/addChannel"),
            Action::Delay(Duration::from_millis(300)),
        )
        .times(1),
    );
    let ids = call_to_media_phase(&fake, &vb, call);
    assert_poked_while_the_add_waited(&fake, call, &caller_rtp);
    assert!(fake.caller_hangs_up(&ids.call));
    finish(&fake, &mut vb);
}

/// The same for the destination's `addChannel` after it answered (its own RTP may be 20 ms or
/// more away).
#[test]
fn fake_ari_on_asterisk_16_the_destinations_rtp_gets_keepalives_while_its_add_waits() {
    let (fake, mut vb) = launch_on_asterisk_16("wake-dest-16");
    let call = "1764000036.1";
    let dest = format!("voicebot1-{call}-dest");
    let dest_rtp = rtp_end_of(&fake, &dest, "127.0.0.1");
    let ids = call_to_media_phase(&fake, &vb, call);
    fake.set_rule(
        Rule::prefix(
            "POST",
            &format!("/ari/bridges/{}/addChannel", ids.bridge),
            Action::Delay(Duration::from_millis(300)),
        )
        .times(1),
    );
    transfer_to_destination(&fake, &vb, &ids);
    assert_poked_while_the_add_waited(&fake, &dest, &dest_rtp);
    caller_hangs_up_after_transfer(&fake, &ids);
    finish(&fake, &mut vb);
}
