//! Self-test of the scripted fake ARI (tests/support/fake_ari/), driven with
//! ureq and a tungstenite client, independently of voicebot1. The fake exists
//! for what a real Asterisk cannot be made to do on demand (events before REST
//! responses, 5xx, slow answers, dropped/malformed frames, 401).
#![allow(clippy::result_large_err)] // tungstenite::Error, as tungstenite returns it

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::fake_ari::{
    self, base64_encode, internal_error, Action, Destination, FakeAri, MediaStart, Rule,
};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn auth(password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("voicebot1:{password}").as_bytes())
    )
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build()
}

/// REST call returning (status, body-json-or-null); HTTP errors are not Err.
fn call(agent: &ureq::Agent, fake: &FakeAri, method: &str, path_and_query: &str) -> (u16, Value) {
    let url = format!("{}{}", fake.url(), path_and_query);
    let res = agent
        .request(method, &url)
        .set("Authorization", &auth(fake.password()))
        .call();
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path_and_query}: transport error {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn connect_ws(fake: &FakeAri, password: &str) -> Result<Ws, tungstenite::Error> {
    let mut req = format!(
        "ws://{}/ari/events?app=voicebot1&subscribeAll=false",
        fake.addr()
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("Authorization", auth(password).parse().unwrap());
    let (ws, _) = tungstenite::connect(req)?;
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    Ok(ws)
}

/// Reads text frames until one parses as an event of type `ty` (or timeout).
fn next_event(ws: &mut Ws, ty: &str, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(t)) => {
                if let Ok(v) = serde_json::from_str::<Value>(&t) {
                    if v["type"] == ty {
                        return Some(v);
                    }
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("websocket read failed: {e}"),
        }
    }
    None
}

/// Reads the next text frame (raw).
fn next_text(ws: &mut Ws, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("websocket read failed: {e}"),
        }
    }
    None
}

const T: Duration = Duration::from_secs(5);

#[test]
fn fake_ari_harness_info_and_auth() {
    let fake = FakeAri::start();
    let a = agent();
    let (s, b) = call(&a, &fake, "GET", "/ari/asterisk/info");
    assert_eq!(s, 200);
    assert_eq!(b["system"]["version"], "22.0.0-fake");

    // Wrong password on REST and WS: 401 with the Asterisk message.
    let res = a
        .get(&format!("{}/ari/channels", fake.url()))
        .set("Authorization", &auth("nope"))
        .call();
    match res {
        Err(ureq::Error::Status(401, r)) => {
            let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
            assert_eq!(v["message"], "Authentication required");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    match connect_ws(&fake, "nope") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        Err(e) => panic!("expected HTTP 401 error, got {e}"),
        Ok(_) => panic!("websocket accepted a wrong password"),
    }
    assert!(fake.wait_auth_failures(2, T));
    assert_eq!(fake.ws_connections(), 0);

    // api_key in the query is accepted too, as in Asterisk.
    let r = a
        .get(&format!(
            "{}/ari/bridges?api_key=voicebot1:voicebot1-sandbox",
            fake.url()
        ))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);

    // Unknown route.
    let (s, b) = call(&a, &fake, "GET", "/ari/nothing/here");
    assert_eq!(s, 404);
    assert!(b["message"].is_string());
}

#[test]
fn fake_ari_harness_bridge_external_media_and_events() {
    let fake = FakeAri::start();
    let mut ws = connect_ws(&fake, fake.password()).unwrap();
    assert!(fake.wait_ws_connections(1, T));
    let a = agent();

    // Inbound call.
    fake.new_inbound_call("1764000000.1");
    let ev = next_event(&mut ws, "StasisStart", T).expect("caller StasisStart");
    assert_eq!(ev["args"], json!(["inbound"]));
    assert_eq!(ev["channel"]["id"], "1764000000.1");
    assert_eq!(ev["channel"]["state"], "Up");
    assert_eq!(ev["application"], "voicebot1");
    assert!(ev["channel"]["name"]
        .as_str()
        .unwrap()
        .starts_with("PJSIP/callers-"));

    // Bridge, keep-alive on the same agent.
    let (s, b) = call(
        &a,
        &fake,
        "POST",
        "/ari/bridges/voicebot1-X-bridge?type=mixing&name=x",
    );
    assert_eq!(s, 200);
    assert_eq!(b["id"], "voicebot1-X-bridge");
    assert_eq!(b["bridge_class"], "stasis");
    let (s, list) = call(&a, &fake, "GET", "/ari/bridges");
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // addChannel: unknown channel 422, unknown bridge 404, ok 204 + event.
    let (s, _) = call(
        &a,
        &fake,
        "POST",
        "/ari/bridges/voicebot1-X-bridge/addChannel?channel=nope",
    );
    assert_eq!(s, 422);
    let (s, _) = call(
        &a,
        &fake,
        "POST",
        "/ari/bridges/nope/addChannel?channel=1764000000.1",
    );
    assert_eq!(s, 404);
    let (s, _) = call(
        &a,
        &fake,
        "POST",
        "/ari/bridges/voicebot1-X-bridge/addChannel?channel=1764000000.1",
    );
    assert_eq!(s, 204);
    let ev = next_event(&mut ws, "ChannelEnteredBridge", T).expect("ChannelEnteredBridge");
    assert_eq!(ev["bridge"]["channels"], json!(["1764000000.1"]));

    // externalMedia: response first, then StasisStart with no args.
    let (s, ch) = call(
        &a,
        &fake,
        "POST",
        "/ari/channels/externalMedia?app=voicebot1&channelId=voicebot1-X-media&external_host=127.0.0.1%3A27000&format=alaw&encapsulation=rtp&transport=udp&connection_type=client&direction=both",
    );
    assert_eq!(s, 200);
    assert_eq!(ch["id"], "voicebot1-X-media");
    assert_eq!(ch["state"], "Down");
    assert!(ch["name"]
        .as_str()
        .unwrap()
        .starts_with("UnicastRTP/127.0.0.1:27000-0x"));
    let ev = next_event(&mut ws, "StasisStart", T).expect("media StasisStart");
    assert_eq!(ev["args"], json!([]));
    assert_eq!(ev["channel"]["id"], "voicebot1-X-media");
    let r = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/ari/channels/externalMedia")
        .unwrap();
    assert_eq!(r.q("external_host"), Some("127.0.0.1:27000"));

    // Ring on/off.
    assert_eq!(
        call(&a, &fake, "POST", "/ari/channels/1764000000.1/ring").0,
        204
    );
    assert_eq!(
        call(&a, &fake, "DELETE", "/ari/channels/1764000000.1/ring").0,
        204
    );
    assert_eq!(call(&a, &fake, "POST", "/ari/channels/nope/ring").0, 404);

    // DELETE channel: 204, then StasisEnd and ChannelDestroyed; 404 the second time.
    assert_eq!(
        call(
            &a,
            &fake,
            "DELETE",
            "/ari/channels/voicebot1-X-media?reason_code=16"
        )
        .0,
        204
    );
    let ev = next_event(&mut ws, "StasisEnd", T).expect("StasisEnd");
    assert_eq!(ev["channel"]["id"], "voicebot1-X-media");
    let ev = next_event(&mut ws, "ChannelDestroyed", T).expect("ChannelDestroyed");
    assert_eq!(ev["cause"], 16);
    let (s, b) = call(&a, &fake, "DELETE", "/ari/channels/voicebot1-X-media");
    assert_eq!((s, b["message"].as_str()), (404, Some("Channel not found")));

    // Caller hangs up.
    assert!(fake.caller_hangs_up("1764000000.1"));
    let ev = next_event(&mut ws, "ChannelHangupRequest", T).expect("ChannelHangupRequest");
    assert_eq!(ev["cause"], 16);
    next_event(&mut ws, "StasisEnd", T).expect("caller StasisEnd");
    let ev = next_event(&mut ws, "ChannelDestroyed", T).expect("caller ChannelDestroyed");
    assert_eq!(ev["cause_txt"], "Normal Clearing");
    assert!(fake.channel_ids().is_empty());

    // Bridge delete.
    assert_eq!(
        call(&a, &fake, "DELETE", "/ari/bridges/voicebot1-X-bridge").0,
        204
    );
    assert_eq!(
        call(&a, &fake, "DELETE", "/ari/bridges/voicebot1-X-bridge").0,
        404
    );
    assert!(fake.bridge_ids().is_empty());
}

#[test]
fn fake_ari_harness_stasis_start_before_rest_response() {
    let fake = FakeAri::start();
    fake.set_media_start(MediaStart::BeforeResponse);
    let mut ws = connect_ws(&fake, fake.password()).unwrap();
    assert!(fake.wait_ws_connections(1, T));
    let url = format!(
        "{}/ari/channels/externalMedia?app=voicebot1&channelId=m1&external_host=127.0.0.1:1&format=alaw",
        fake.url()
    );
    let pw = fake.password().to_string();
    let h = std::thread::spawn(move || {
        let r = agent()
            .post(&url)
            .set("Authorization", &auth(&pw))
            .call()
            .unwrap();
        (Instant::now(), r.status())
    });
    let ev = next_event(&mut ws, "StasisStart", T).expect("StasisStart");
    let ev_at = Instant::now();
    assert_eq!(ev["channel"]["id"], "m1");
    let (resp_at, status) = h.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        ev_at < resp_at,
        "event was not delivered before the REST response"
    );
}

#[test]
fn fake_ari_harness_rules_500_delay_drop() {
    let fake = FakeAri::start();
    let a = agent();
    fake.set_rule(Rule::create_bridge(internal_error()).times(1));
    let (s, b) = call(&a, &fake, "POST", "/ari/bridges/b1?type=mixing");
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("Internal Server Error"))
    );
    assert!(!fake.has_bridge("b1"), "a 500 must not create the bridge");
    // times(1): the next one succeeds.
    assert_eq!(
        call(&a, &fake, "POST", "/ari/bridges/b1?type=mixing").0,
        200
    );
    // The rule does not touch addChannel on the same prefix.
    fake.new_inbound_call("c1");
    assert_eq!(
        call(&a, &fake, "POST", "/ari/bridges/b1/addChannel?channel=c1").0,
        204
    );

    // Slow answer: the model changes after the delay.
    fake.set_rule(Rule::external_media(Action::Delay(Duration::from_millis(
        800,
    ))));
    let t0 = Instant::now();
    let (s, _) = call(
        &a,
        &fake,
        "POST",
        "/ari/channels/externalMedia?app=voicebot1&channelId=m&external_host=h:1&format=alaw",
    );
    assert_eq!(s, 200);
    assert!(t0.elapsed() >= Duration::from_millis(800));
    assert!(fake.has_channel("m"));

    // Dropped connection: transport error.
    fake.set_rule(Rule::prefix("GET", "/ari/channels", Action::Drop));
    let res = a
        .get(&format!("{}/ari/channels", fake.url()))
        .set("Authorization", &auth(fake.password()))
        .call();
    assert!(
        matches!(res, Err(ureq::Error::Transport(_))),
        "expected transport error, got {res:?}"
    );
    fake.clear_rules();
    assert_eq!(call(&a, &fake, "GET", "/ari/channels").0, 200);

    let recorded = fake.requests();
    assert!(recorded
        .iter()
        .any(|r| r.method == "GET" && r.path == "/ari/channels" && r.status.is_none()));
    assert!(fake
        .dump()
        .contains("POST /ari/bridges/b1?type=mixing -> 500"));
}

#[test]
fn fake_ari_harness_originate_destinations() {
    let fake = FakeAri::start();
    let mut ws = connect_ws(&fake, fake.password()).unwrap();
    assert!(fake.wait_ws_connections(1, T));
    let a = agent();
    let orig = |id: &str| {
        call(
            &a,
            &fake,
            "POST",
            &format!(
                "/ari/channels/{id}?endpoint=PJSIP%2F4438007%40AVAYA-endpoint&app=voicebot1&appArgs=transfer%2CC1&callerId=sipp&timeout=30"
            ),
        )
    };

    fake.set_destination(Destination::Answer {
        after: Duration::from_millis(50),
    });
    let (s, ch) = orig("d1");
    assert_eq!((s, ch["state"].as_str()), (200, Some("Down")));
    let ev = next_event(&mut ws, "ChannelStateChange", T).expect("ChannelStateChange");
    assert_eq!(ev["channel"]["state"], "Up");
    let ev = next_event(&mut ws, "StasisStart", T).expect("dest StasisStart");
    assert_eq!(ev["args"], json!(["transfer", "C1"]));
    assert_eq!(ev["channel"]["id"], "d1");
    assert_eq!(orig("d1").0, 409);

    fake.set_destination(Destination::Busy {
        after: Duration::from_millis(50),
    });
    assert_eq!(orig("d2").0, 200);
    let ev = next_event(&mut ws, "ChannelDestroyed", T).expect("busy ChannelDestroyed");
    assert_eq!(
        (ev["cause"].as_u64(), ev["cause_txt"].as_str()),
        (Some(17), Some("User busy"))
    );
    assert!(!fake.has_channel("d2"));

    fake.set_destination(Destination::NoAnswer {
        after: Some(Duration::from_millis(50)),
    });
    assert_eq!(orig("d3").0, 200);
    let ev = next_event(&mut ws, "ChannelDestroyed", T).expect("no-answer ChannelDestroyed");
    assert_eq!(ev["cause"], 19);

    fake.set_destination(Destination::AnswerBeforeResponse);
    let pw = fake.password().to_string();
    let url = format!(
        "{}/ari/channels/d5?endpoint=PJSIP/x@y&app=voicebot1&appArgs=transfer,C1",
        fake.url()
    );
    let h = std::thread::spawn(move || {
        let r = agent()
            .post(&url)
            .set("Authorization", &auth(&pw))
            .call()
            .unwrap();
        (Instant::now(), r.status())
    });
    let ev = next_event(&mut ws, "StasisStart", T).expect("d5 StasisStart");
    let ev_at = Instant::now();
    assert_eq!(ev["channel"]["id"], "d5");
    let (resp_at, status) = h.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        ev_at < resp_at,
        "d5 StasisStart was not delivered before the originate response"
    );

    fake.set_destination(Destination::Never);
    assert_eq!(orig("d4").0, 200);
    // Hanging up a never-answered (not in Stasis) channel: only ChannelDestroyed.
    assert_eq!(call(&a, &fake, "DELETE", "/ari/channels/d4").0, 204);
    let ev = next_event(&mut ws, "ChannelDestroyed", T).expect("d4 ChannelDestroyed");
    assert_eq!(ev["channel"]["id"], "d4");
    assert!(fake_ari::is_originate_path("/ari/channels/d4"));
    assert!(!fake_ari::is_originate_path("/ari/channels/externalMedia"));
}

#[test]
fn fake_ari_harness_raw_frames_and_drop_mid_frame() {
    let fake = FakeAri::start();
    let mut ws = connect_ws(&fake, fake.password()).unwrap();
    assert!(fake.wait_ws_connections(1, T));
    assert_eq!(fake.send_raw_text("this is {not json"), 1);
    assert_eq!(next_text(&mut ws, T).as_deref(), Some("this is {not json"));
    fake.send_event(json!({"type": "StasisStart", "args": ["inbound"]}));
    let ev = next_event(&mut ws, "StasisStart", T).unwrap();
    assert_eq!(ev["application"], "voicebot1");
    assert!(ev["channel"].is_null());

    assert_eq!(fake.drop_websocket(), 1);
    // The client sees an error (truncated frame / reset), never a clean frame.
    let deadline = Instant::now() + T;
    let mut broke = false;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(t)) => panic!("unexpected frame after drop: {t}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "websocket did not break after drop_websocket");
    assert!(fake.wait_until(T, |m| m.ws_connected_now() == 0));
    // Reconnect works and counts.
    let _ws2 = connect_ws(&fake, fake.password()).unwrap();
    assert!(fake.wait_ws_connections(2, T));
}
