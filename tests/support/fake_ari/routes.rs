//! The REST resources, answered from the fake's model of Asterisk (when a rule of the test's
//! script applies, `http` answers as the rule says instead).

use std::sync::{Arc, MutexGuard};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use super::http::{segments, After, HttpReq, Reply};
use super::model::{event, timestamp, Bridge, Channel, Inner, State};
use super::script::{Destination, MediaStart};
use super::APP;

pub(super) fn route(inner: &Arc<Inner>, req: &HttpReq) -> Reply {
    let segs = segments(&req.path);
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("GET", ["ari", "asterisk", "info"]) => {
            let version = inner.lock().asterisk_version.clone();
            Reply::json(
                200,
                json!({"system": {"version": version, "entity_id": "fake"}}),
            )
        }
        ("POST", ["ari", "asterisk", "variable"]) => match req.param("variable") {
            Some(name) => {
                let value = req.param("value").unwrap_or_default();
                inner.lock().globals.insert(name, value);
                Reply::no_content()
            }
            None => Reply::msg(400, "variable: Missing required field"),
        },
        // What the preflight (`voicebot1 --check --online`) asks: every module is loaded, the
        // one transfer endpoint the tests use exists, the application is registered while a
        // WebSocket client is connected.
        ("GET", ["ari", "asterisk", "modules", name]) => Reply::json(
            200,
            json!({"name": name, "description": "fake", "use_count": 0, "status": "Running", "support_level": "core"}),
        ),
        ("GET", ["ari", "endpoints", "PJSIP", "AVAYA-endpoint"]) => Reply::json(
            200,
            json!({"technology": "PJSIP", "resource": "AVAYA-endpoint", "state": "online", "channel_ids": []}),
        ),
        ("GET", ["ari", "endpoints", _, _]) => Reply::msg(404, "Endpoint not found"),
        ("GET", ["ari", "applications", name]) => {
            if *name == APP && !inner.lock().ws_clients.is_empty() {
                Reply::json(
                    200,
                    json!({"name": name, "channel_ids": [], "bridge_ids": [], "endpoint_ids": [], "device_names": []}),
                )
            } else {
                Reply::msg(404, "Application not found")
            }
        }
        ("GET", ["ari", "channels"]) => {
            let st = inner.lock();
            Reply::json(
                200,
                Value::Array(st.channels.values().map(Channel::to_json).collect()),
            )
        }
        ("GET", ["ari", "bridges"]) => {
            let st = inner.lock();
            Reply::json(
                200,
                Value::Array(st.bridges.values().map(Bridge::to_json).collect()),
            )
        }
        ("GET", ["ari", "channels", id]) => match inner.lock().channels.get(*id) {
            Some(c) => Reply::json(200, c.to_json()),
            None => Reply::msg(404, "Channel not found"),
        },
        ("GET", ["ari", "bridges", id]) => match inner.lock().bridges.get(*id) {
            Some(b) => Reply::json(200, b.to_json()),
            None => Reply::msg(404, "Bridge not found"),
        },
        ("POST", ["ari", "bridges"]) => create_bridge(inner, req, req.param("bridgeId")),
        ("POST", ["ari", "bridges", id]) => create_bridge(inner, req, Some(id.to_string())),
        ("DELETE", ["ari", "bridges", id]) => {
            let mut st = inner.lock();
            let Some(b) = st.bridges.remove(*id) else {
                return Reply::msg(404, "Bridge not found");
            };
            let mut r = Reply::no_content();
            let mut bj = b.to_json();
            for c in &b.channels {
                if let Some(ch) = st.channels.get(c) {
                    r.after.push(After::Push(event(
                        "ChannelLeftBridge",
                        json!({"bridge": bj.clone(), "channel": ch.to_json()}),
                    )));
                }
            }
            bj["channels"] = json!([]);
            r.after.push(After::Push(event(
                "BridgeDestroyed",
                json!({ "bridge": bj }),
            )));
            inner.cond.notify_all();
            r
        }
        ("POST", ["ari", "bridges", id, "addChannel"]) => add_channel(inner, req, id),
        ("POST", ["ari", "bridges", id, "removeChannel"]) => {
            let mut st = inner.lock();
            if !st.bridges.contains_key(*id) {
                return Reply::msg(404, "Bridge not found");
            }
            let chans = list_param(req, "channel");
            if chans.is_empty() {
                return Reply::msg(400, "channel: Missing required field");
            }
            for c in &chans {
                if !st.channels.contains_key(c) {
                    return Reply::msg(422, "Channel not found");
                }
            }
            let mut r = Reply::no_content();
            for c in &chans {
                let b = st.bridges.get_mut(*id).unwrap();
                if b.channels.iter().any(|x| x == c) {
                    b.channels.retain(|x| x != c);
                    let bj = b.to_json();
                    let cj = st.channels[c].to_json();
                    r.after.push(After::Push(event(
                        "ChannelLeftBridge",
                        json!({"bridge": bj, "channel": cj}),
                    )));
                }
            }
            inner.cond.notify_all();
            r
        }
        ("POST", ["ari", "channels", "externalMedia"]) => external_media(inner, req),
        ("POST", ["ari", "channels"]) => originate(inner, req, req.param("channelId")),
        ("POST", ["ari", "channels", id]) if *id != "create" => {
            originate(inner, req, Some(id.to_string()))
        }
        ("POST", ["ari", "channels", id, "play", playback]) => {
            let mut st = inner.lock();
            if !st.channels.contains_key(*id) {
                return Reply::msg(404, "Channel not found");
            }
            st.playbacks.insert(playback.to_string());
            let body = json!({"id": playback, "media_uri": req.param("media"), "target_uri": format!("channel:{id}"), "state": "queued"});
            Reply::json(201, body)
        }
        // The fake plays nothing: a playback it knows of is playing at once.
        ("GET", ["ari", "playbacks", playback]) => {
            if inner.lock().playbacks.contains(*playback) {
                Reply::json(
                    200,
                    json!({"id": playback, "media_uri": "tone:ring", "state": "playing"}),
                )
            } else {
                Reply::msg(404, "Playback not found")
            }
        }
        ("DELETE", ["ari", "playbacks", playback]) => {
            if inner.lock().playbacks.remove(*playback) {
                Reply::no_content()
            } else {
                Reply::msg(404, "Playback not found")
            }
        }
        ("POST", ["ari", "channels", id, "variable"]) => {
            if req.param("variable").is_none() {
                return Reply::msg(400, "variable: Missing required field");
            }
            if inner.lock().channels.contains_key(*id) {
                Reply::no_content()
            } else {
                Reply::msg(404, "Channel not found")
            }
        }
        ("POST", ["ari", "channels", id, "ring"])
        | ("DELETE", ["ari", "channels", id, "ring"])
        | ("POST", ["ari", "channels", id, "answer"]) => {
            if inner.lock().channels.contains_key(*id) {
                Reply::no_content()
            } else {
                Reply::msg(404, "Channel not found")
            }
        }
        ("DELETE", ["ari", "channels", id]) => {
            let mut st = inner.lock();
            let Some(ch) = st.channels.get(*id).cloned() else {
                return Reply::msg(404, "Channel not found");
            };
            // Hang up: the model changes now, the events follow the response.
            let mut r = Reply::no_content();
            let ids: Vec<String> = st
                .bridges
                .values()
                .filter(|b| b.channels.iter().any(|c| c == *id))
                .map(|b| b.id.clone())
                .collect();
            for bid in ids {
                let b = st.bridges.get_mut(&bid).unwrap();
                b.channels.retain(|c| c != *id);
                r.after.push(After::Push(event(
                    "ChannelLeftBridge",
                    json!({"bridge": b.to_json(), "channel": ch.to_json()}),
                )));
            }
            st.channels.remove(*id);
            if ch.in_stasis {
                r.after.push(After::Push(event(
                    "StasisEnd",
                    json!({"channel": ch.to_json()}),
                )));
            }
            r.after.push(After::Push(event(
                "ChannelDestroyed",
                json!({"cause": 16, "cause_txt": "Normal Clearing", "channel": ch.to_json()}),
            )));
            inner.cond.notify_all();
            r
        }
        _ => Reply::msg(404, "Resource not found"),
    }
}

fn list_param(req: &HttpReq, key: &str) -> Vec<String> {
    req.param(key)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn create_bridge(inner: &Arc<Inner>, req: &HttpReq, id: Option<String>) -> Reply {
    let mut st = inner.lock();
    let id = id.unwrap_or_else(|| format!("{:08x}-fake-bridge-{}", 0x5eed, st.next_seq()));
    let bridge_type = req.param("type").unwrap_or_else(|| "mixing".into());
    let name = req.param("name").unwrap_or_default();
    let b = st.bridges.entry(id.clone()).or_insert_with(|| Bridge {
        id: id.clone(),
        bridge_type: bridge_type.clone(),
        name: name.clone(),
        channels: vec![],
        created: timestamp(),
    });
    let j = b.to_json();
    inner.cond.notify_all();
    let mut r = Reply::json(200, j.clone());
    r.after
        .push(After::Push(event("BridgeCreated", json!({ "bridge": j }))));
    r
}

fn add_channel(inner: &Arc<Inner>, req: &HttpReq, bid: &str) -> Reply {
    let mut st = inner.lock();
    if !st.bridges.contains_key(bid) {
        return Reply::msg(404, "Bridge not found");
    }
    let chans = list_param(req, "channel");
    if chans.is_empty() {
        return Reply::msg(400, "channel: Missing required field");
    }
    for c in &chans {
        match st.channels.get(c) {
            Some(ch) if ch.in_stasis => {}
            _ => return Reply::msg(422, "Channel not in Stasis application"),
        }
    }
    let mut r = Reply::no_content();
    for c in &chans {
        // A channel is in at most one bridge: leaving the old one first.
        let others: Vec<String> = st
            .bridges
            .values()
            .filter(|b| b.id != bid && b.channels.iter().any(|x| x == c))
            .map(|b| b.id.clone())
            .collect();
        for o in others {
            let b = st.bridges.get_mut(&o).unwrap();
            b.channels.retain(|x| x != c);
            let bj = b.to_json();
            r.after.push(After::Push(event(
                "ChannelLeftBridge",
                json!({"bridge": bj, "channel": st.channels[c].to_json()}),
            )));
        }
        let b = st.bridges.get_mut(bid).unwrap();
        if !b.channels.iter().any(|x| x == c) {
            b.channels.push(c.clone());
        }
        let bj = b.to_json();
        r.after.push(After::Push(event(
            "ChannelEnteredBridge",
            json!({"bridge": bj, "channel": st.channels[c].to_json()}),
        )));
    }
    inner.cond.notify_all();
    r
}

fn external_media(inner: &Arc<Inner>, req: &HttpReq) -> Reply {
    let Some(host) = req.param("external_host") else {
        return Reply::msg(400, "external_host: Missing required field");
    };
    if req.param("format").is_none() {
        return Reply::msg(400, "format: Missing required field");
    }
    if req.param("app").is_none() {
        return Reply::msg(400, "app: Missing required field");
    }
    let mut st = inner.lock();
    let n = st.next_seq();
    let id = req
        .param("channelId")
        .unwrap_or_else(|| format!("1764000000.{}", 1000 + n));
    if st.channels.contains_key(&id) {
        return Reply::msg(409, "Channel with given unique ID already exists");
    }
    let ch = Channel {
        vars: Some(
            json!({"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": (10000 + 2 * n).to_string()}),
        ),
        ..Channel::in_stasis(&id, format!("UnicastRTP/{host}-0x7f00{n:08x}"), "Down")
    };
    let j = ch.to_json();
    st.channels.insert(id, ch);
    inner.cond.notify_all();
    let start = event("StasisStart", json!({"args": [], "channel": j.clone()}));
    let mut r = Reply::json(200, j);
    match st.media_start {
        MediaStart::AfterResponse => r.after.push(After::Push(start)),
        MediaStart::BeforeResponse => push_before_response(st, vec![start]),
        MediaStart::Never => {}
    }
    r
}

/// Pushes `events` and waits until they are written to every client, then
/// gives the client's reader a moment to dispatch them before the caller goes
/// on to write the REST response. Releases the state lock.
fn push_before_response(mut st: MutexGuard<'_, State>, events: Vec<Value>) {
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
    let n_clients = st.ws_clients.len();
    let n_events = events.len();
    for ev in events {
        st.push_acked(ev, Some(ack_tx.clone()));
    }
    drop(st);
    for _ in 0..n_clients * n_events {
        let _ = ack_rx.recv_timeout(Duration::from_secs(2));
    }
    thread::sleep(Duration::from_millis(200));
}

fn originate(inner: &Arc<Inner>, req: &HttpReq, id: Option<String>) -> Reply {
    let Some(endpoint) = req.param("endpoint") else {
        return Reply::msg(400, "Endpoint must be specified");
    };
    if req.param("app").is_none() && req.param("extension").is_none() {
        return Reply::msg(400, "Application or extension must be specified");
    }
    let mut st = inner.lock();
    let n = st.next_seq();
    let id = id.unwrap_or_else(|| format!("1764000000.{}", 2000 + n));
    if st.channels.contains_key(&id) {
        return Reply::msg(409, "Channel with given unique ID already exists");
    }
    let tech_dest = endpoint
        .split_once('@')
        .map(|(_, h)| h)
        .unwrap_or(&endpoint);
    let tech = endpoint.split('/').next().unwrap_or("PJSIP");
    let tail = tech_dest.rsplit('/').next().unwrap_or(tech_dest);
    let args: Vec<String> = req
        .param("appArgs")
        .map(|a| a.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let app_data = if args.is_empty() {
        APP.to_string()
    } else {
        format!("{APP},{}", args.join(","))
    };
    // Not in Stasis until it answers.
    let ch = Channel {
        caller_number: req.param("callerId").unwrap_or_default(),
        app_data,
        in_stasis: false,
        ..Channel::in_stasis(&id, format!("{tech}/{tail}-{n:08x}"), "Down")
    };
    let j = ch.to_json();
    st.channels.insert(id.clone(), ch);
    inner.cond.notify_all();
    let timeout_s: u64 = req
        .param("timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(30);
    let mut r = Reply::json(200, j);
    let cid = id.clone();
    match st.destination.clone() {
        Destination::Answer { after } => r.after.push(After::Later(
            after,
            Box::new(move |st: &mut State| {
                let Some(ch) = st.channels.get_mut(&cid) else {
                    return;
                };
                ch.state = "Up".into();
                ch.in_stasis = true;
                let j = ch.to_json();
                st.push(event("ChannelStateChange", json!({ "channel": j.clone() })));
                st.push(event("StasisStart", json!({"args": args, "channel": j})));
            }),
        )),
        Destination::Busy { after } => r.after.push(After::Later(
            after,
            Box::new(move |st: &mut State| {
                st.destroy_channel(&cid, 17, "User busy");
            }),
        )),
        Destination::NoAnswer { after } => r.after.push(After::Later(
            after.unwrap_or(Duration::from_secs(timeout_s)),
            Box::new(move |st: &mut State| {
                st.destroy_channel(&cid, 19, "No user responding");
            }),
        )),
        Destination::AnswerBeforeResponse => {
            let ch = st.channels.get_mut(&cid).unwrap();
            ch.state = "Up".into();
            ch.in_stasis = true;
            let up = ch.to_json();
            let evs = vec![
                event("ChannelStateChange", json!({ "channel": up.clone() })),
                event("StasisStart", json!({"args": args, "channel": up})),
            ];
            push_before_response(st, evs);
        }
        Destination::Never => {}
    }
    r
}
