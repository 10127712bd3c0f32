//! What a test scripts the fake to do (rules with their faults, the destination's answer, when
//! the bot's media channel starts) and what the fake recorded of each request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::segments;

/// One HTTP request as the fake received it (recorded on arrival, before any
/// rule delay). WebSocket upgrade attempts are recorded too (method `GET`,
/// path `/ari/events`).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: String,
    /// HTTP status the fake answered with (None while pending, or when the
    /// connection was dropped by a rule).
    pub status: Option<u16>,
    pub at: Instant,
}

impl Recorded {
    /// First value of a query parameter.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, "?{}", q.join("&"))?;
        }
        match self.status {
            Some(s) => write!(f, " -> {s}"),
            None => write!(f, " -> (no answer)"),
        }
    }
}

/// What a originated destination does after `POST /ari/channels/{id}`.
#[derive(Clone, Debug)]
pub enum Destination {
    /// After `after`: `ChannelStateChange` (Up) then `StasisStart` with the
    /// originate's appArgs.
    Answer { after: Duration },
    /// After `after`: `ChannelDestroyed` cause 17 "User busy" (no StasisStart).
    Busy { after: Duration },
    /// After `after` (or, if None, the originate's `timeout` seconds):
    /// `ChannelDestroyed` cause 19 "No user responding".
    NoAnswer { after: Option<Duration> },
    /// Answers at once: `ChannelStateChange` (Up) and `StasisStart` are on the
    /// wire before the originate's REST response is written.
    AnswerBeforeResponse,
    /// Nothing happens: the channel rings forever.
    Never,
}

/// When the `StasisStart` of an externalMedia channel is pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaStart {
    /// Right after the REST response has been written (the usual case).
    AfterResponse,
    /// Before the REST response is written: the event frame is on the wire
    /// (plus a short pause) before the client sees the 200.
    BeforeResponse,
    /// Never.
    Never,
}

/// What an override rule does to a matching request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer with this status and body; the model is not touched.
    Respond { status: u16, body: Value },
    /// Sleep, then handle the request normally (the model is updated after
    /// the delay, as a slow Asterisk would).
    Delay(Duration),
    /// Sleep, then answer with this status and body (model not touched).
    DelayThenRespond {
        delay: Duration,
        status: u16,
        body: Value,
    },
    /// Read the request, then close the TCP connection without answering.
    Drop,
}

type PathPred = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Override rule: a method plus a path predicate, an action and an optional
/// number of times it applies.
#[derive(Clone)]
pub struct Rule {
    method: String,
    desc: String,
    pred: PathPred,
    action: Action,
    remaining: Option<usize>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Rule({} {} => {:?}, remaining {:?})",
            self.method, self.desc, self.action, self.remaining
        )
    }
}

impl Rule {
    /// Matches `method` and any path starting with `prefix`.
    pub fn prefix(method: &str, prefix: &str, action: Action) -> Rule {
        let p = prefix.to_string();
        Rule {
            method: method.to_string(),
            desc: format!("{prefix}*"),
            pred: Arc::new(move |path| path.starts_with(&p)),
            action,
            remaining: None,
        }
    }
    /// Matches `method` and paths accepted by `pred`.
    pub fn when(
        method: &str,
        desc: &str,
        pred: impl Fn(&str) -> bool + Send + Sync + 'static,
        action: Action,
    ) -> Rule {
        Rule {
            method: method.to_string(),
            desc: desc.to_string(),
            pred: Arc::new(pred),
            action,
            remaining: None,
        }
    }
    /// Bridge creation: `POST /ari/bridges` or `POST /ari/bridges/{id}`.
    pub fn create_bridge(action: Action) -> Rule {
        Rule::when("POST", "create bridge", is_bridge_create_path, action)
    }
    /// `POST /ari/channels/externalMedia`.
    pub fn external_media(action: Action) -> Rule {
        Rule::prefix("POST", "/ari/channels/externalMedia", action)
    }
    /// Originate: `POST /ari/channels` or `POST /ari/channels/{id}`.
    pub fn originate(action: Action) -> Rule {
        Rule::when("POST", "originate", is_originate_path, action)
    }
    /// Applies to the next `n` matching requests only.
    pub fn times(mut self, n: usize) -> Rule {
        self.remaining = Some(n);
        self
    }
}

/// The action of the first rule for `method path` with uses left, counting that use; `None` when
/// no rule applies (the model answers).
pub(super) fn take_action(rules: &mut [Rule], method: &str, path: &str) -> Option<Action> {
    let rule = rules.iter_mut().find(|r| {
        r.method.eq_ignore_ascii_case(method) && (r.pred)(path) && r.remaining != Some(0)
    })?;
    if let Some(n) = rule.remaining.as_mut() {
        *n -= 1;
    }
    Some(rule.action.clone())
}

/// `500 {"message":"Internal Server Error"}`.
pub fn internal_error() -> Action {
    Action::Respond {
        status: 500,
        body: json!({"message": "Internal Server Error"}),
    }
}

/// True for `/ari/bridges` and `/ari/bridges/{id}` (bridge creation paths).
pub fn is_bridge_create_path(path: &str) -> bool {
    let segs = segments(path);
    segs.len() >= 2 && segs.len() <= 3 && segs[0] == "ari" && segs[1] == "bridges"
}

/// True for `/ari/channels` and `/ari/channels/{id}` except the fixed
/// sub-resources `externalMedia` and `create`.
pub fn is_originate_path(path: &str) -> bool {
    let segs = segments(path);
    match segs.as_slice() {
        ["ari", "channels"] => true,
        ["ari", "channels", id] => *id != "externalMedia" && *id != "create",
        _ => false,
    }
}
