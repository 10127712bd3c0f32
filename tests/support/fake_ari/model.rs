//! The in-memory model of Asterisk (channels, bridges, playbacks, Stasis membership, the
//! WebSocket clients) shared by every connection under one lock, and the events it pushes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use serde_json::{json, Value};

use super::script::{Destination, MediaStart, Recorded, Rule};
use super::APP;

/// Read-only view of the model handed to `FakeAri::wait_until`.
pub struct Model<'a> {
    pub(super) st: &'a State,
}

impl Model<'_> {
    pub fn channel_ids(&self) -> Vec<String> {
        self.st.channels.keys().cloned().collect()
    }
    pub fn bridge_ids(&self) -> Vec<String> {
        self.st.bridges.keys().cloned().collect()
    }
    pub fn has_channel(&self, id: &str) -> bool {
        self.st.channels.contains_key(id)
    }
    pub fn has_bridge(&self, id: &str) -> bool {
        self.st.bridges.contains_key(id)
    }
    pub fn bridge_members(&self, id: &str) -> Option<Vec<String>> {
        self.st.bridges.get(id).map(|b| b.channels.clone())
    }
    pub fn requests(&self) -> &[Recorded] {
        &self.st.requests
    }
    pub fn ws_connections(&self) -> usize {
        self.st.ws_connections
    }
    pub fn ws_connected_now(&self) -> usize {
        self.st.ws_clients.len()
    }
    pub fn ws_pings(&self) -> usize {
        self.st.ws_pings
    }
}

#[derive(Clone, Debug)]
pub(super) struct Channel {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) state: String,
    pub(super) caller_number: String,
    pub(super) context: String,
    pub(super) exten: String,
    pub(super) app_data: String,
    pub(super) in_stasis: bool,
    pub(super) created: String,
    pub(super) vars: Option<Value>,
}

impl Channel {
    /// A channel in the Stasis application with no dialplan position of its own, as Asterisk
    /// shows its externalMedia channels; other kinds override fields.
    pub(super) fn in_stasis(id: &str, name: String, state: &str) -> Channel {
        Channel {
            id: id.into(),
            name,
            state: state.into(),
            caller_number: String::new(),
            context: "default".into(),
            exten: "s".into(),
            app_data: String::new(),
            in_stasis: true,
            created: timestamp(),
            vars: None,
        }
    }

    /// The `n`th caller from the `callers` endpoint, answered, in `Stasis(voicebot1,inbound)`.
    pub(super) fn caller(id: &str, n: u64) -> Channel {
        Channel {
            caller_number: "sipp".into(),
            context: "from-callers".into(),
            exten: "3308487".into(),
            app_data: format!("{APP},inbound"),
            ..Channel::in_stasis(id, format!("PJSIP/callers-{n:08x}"), "Up")
        }
    }

    pub(super) fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": "",
            "caller": {"name": "", "number": self.caller_number},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": if self.app_data.is_empty() { 1 } else { 2 },
                "app_name": if self.app_data.is_empty() { "" } else { "Stasis" },
                "app_data": self.app_data,
            },
            "creationtime": self.created,
            "language": "en",
        });
        if let Some(vars) = &self.vars {
            v["channelvars"] = vars.clone();
        }
        v
    }
}

#[derive(Clone, Debug)]
pub(super) struct Bridge {
    pub(super) id: String,
    pub(super) bridge_type: String,
    pub(super) name: String,
    pub(super) channels: Vec<String>,
    pub(super) created: String,
}

impl Bridge {
    pub(super) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "technology": "simple_bridge",
            "bridge_type": self.bridge_type,
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": self.name,
            "channels": self.channels,
            "creationtime": self.created,
            "video_mode": "none",
        })
    }
}

pub(super) enum WsCmd {
    Text(String, Option<Sender<()>>),
    DropMidFrame,
    /// Keep the TCP connection open but never write or read on it again.
    Freeze,
}

pub(super) struct WsClient {
    pub(super) id: usize,
    pub(super) tx: Sender<WsCmd>,
}

pub(super) struct State {
    pub(super) channels: BTreeMap<String, Channel>,
    pub(super) bridges: BTreeMap<String, Bridge>,
    /// Playbacks started and not stopped (ids only: the fake plays nothing).
    pub(super) playbacks: std::collections::BTreeSet<String>,
    pub(super) requests: Vec<Recorded>,
    pub(super) rules: Vec<Rule>,
    pub(super) ws_clients: Vec<WsClient>,
    pub(super) ws_connections: usize,
    /// WebSocket pings received from clients (each answered with a pong, unless frozen).
    pub(super) ws_pings: usize,
    pub(super) auth_failures: usize,
    pub(super) destination: Destination,
    pub(super) media_start: MediaStart,
    pub(super) seq: u64,
    pub(super) dropped_events: usize,
    /// What `GET /ari/asterisk/info` reports as `system.version`.
    pub(super) asterisk_version: String,
    /// Global variables set with `POST /ari/asterisk/variable`.
    pub(super) globals: BTreeMap<String, String>,
}

pub(super) struct Inner {
    pub(super) state: Mutex<State>,
    pub(super) cond: Condvar,
    pub(super) password: String,
    pub(super) stop: AtomicBool,
    pub(super) next_ws_id: AtomicUsize,
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
    /// Queues an event on every connected WebSocket (in call order: callers
    /// hold the state lock, so events keep a global order).
    pub(super) fn push(&mut self, ev: Value) {
        self.push_acked(ev, None);
    }
    pub(super) fn push_acked(&mut self, ev: Value, ack: Option<Sender<()>>) {
        let text = ev.to_string();
        if self.ws_clients.is_empty() {
            self.dropped_events += 1;
        }
        self.ws_clients
            .retain(|c| c.tx.send(WsCmd::Text(text.clone(), ack.clone())).is_ok());
    }
    /// Removes a channel from whatever bridge holds it, pushing ChannelLeftBridge.
    pub(super) fn leave_bridges(&mut self, chan_id: &str) {
        let Some(ch) = self.channels.get(chan_id).cloned() else {
            return;
        };
        let ids: Vec<String> = self
            .bridges
            .values()
            .filter(|b| b.channels.iter().any(|c| c == chan_id))
            .map(|b| b.id.clone())
            .collect();
        for bid in ids {
            let b = self.bridges.get_mut(&bid).unwrap();
            b.channels.retain(|c| c != chan_id);
            let bj = b.to_json();
            self.push(event(
                "ChannelLeftBridge",
                json!({"bridge": bj, "channel": ch.to_json()}),
            ));
        }
    }
    /// Channel goes away with `cause`: (ChannelLeftBridge), StasisEnd if it
    /// was in Stasis, ChannelDestroyed.
    pub(super) fn destroy_channel(&mut self, id: &str, cause: u16, cause_txt: &str) -> bool {
        if !self.channels.contains_key(id) {
            return false;
        }
        self.leave_bridges(id);
        let ch = self.channels.remove(id).unwrap();
        if ch.in_stasis {
            self.push(event("StasisEnd", json!({"channel": ch.to_json()})));
        }
        self.push(event(
            "ChannelDestroyed",
            json!({"cause": cause, "cause_txt": cause_txt, "channel": ch.to_json()}),
        ));
        true
    }
}

/// Builds an ARI event: `{"type":ty, ...fields, timestamp, asterisk_id, application}`.
pub fn event(ty: &str, fields: Value) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("type".into(), Value::String(ty.into()));
    o.insert("timestamp".into(), Value::String(timestamp()));
    if let Value::Object(f) = fields {
        for (k, v) in f {
            o.insert(k, v);
        }
    }
    o.insert(
        "asterisk_id".into(),
        Value::String("00:00:00:00:00:00".into()),
    );
    o.insert("application".into(), Value::String(APP.into()));
    Value::Object(o)
}

/// Asterisk-style timestamp, e.g. `2026-11-24T04:10:00.000+0000` (UTC).
pub fn timestamp() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let ms = d.subsec_millis();
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}+0000",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}
