//! Routing events to the worker that owns their call.
//!
//! A call lives on one worker for its whole life: the worker is chosen by a hash of the call id,
//! and the call id is derived from every event's channel id (see `ids`). So all events of one call
//! reach the same worker, in the order the WebSocket delivered them, and calls on different
//! workers run in parallel with no lock between them.
//!
//! Shutdown: dropping the `Dispatcher` drops every worker's sender; each worker sees its channel
//! disconnected, ends its calls and exits.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::ari::{Channel, Event};
use crate::ids::{CallId, Ids, Role};

/// What a worker is told about one of its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A caller entered Stasis with the inbound argument: a new call.
    Inbound(Box<Channel>),
    /// Our externalMedia or destination channel entered Stasis.
    Started(Role, Box<Channel>),
    /// A party's channel left Stasis (`None`) or was destroyed (with its cause).
    Left(Role, Option<i64>),
    /// Progress of the origination to the destination (ringing, busy …), for the log.
    Dial(String),
}

/// A message to a worker.
#[derive(Debug, Clone)]
pub enum WorkerMsg {
    Call(CallId, CallEvent),
    /// After a reconnect: the ids of every channel Asterisk has now. Calls whose channels are
    /// missing lost their events while voicebot1 was disconnected.
    Reconcile(Arc<HashSet<String>>),
}

/// Turns an event into the call it is about and what happened, or `None` for events no call
/// needs (other applications' arguments, event types the flow ignores).
pub fn route(ids: &Ids, inbound_arg: &str, event: Event) -> Option<(CallId, CallEvent)> {
    match event {
        Event::StasisStart { channel, args } => {
            let (call, role) = ids.classify_channel(&channel.id);
            match role {
                Role::Caller if args.first().map(String::as_str) == Some(inbound_arg) => Some((call, CallEvent::Inbound(Box::new(channel)))),
                Role::Caller => None,
                _ => Some((call, CallEvent::Started(role, Box::new(channel)))),
            }
        }
        Event::StasisEnd { channel } => {
            let (call, role) = ids.classify_channel(&channel.id);
            Some((call, CallEvent::Left(role, None)))
        }
        Event::ChannelDestroyed { channel, cause, .. } => {
            let (call, role) = ids.classify_channel(&channel.id);
            Some((call, CallEvent::Left(role, Some(cause))))
        }
        Event::Dial { peer, dialstatus } => match ids.classify_channel(&peer.id) {
            (call, Role::Dest) if !dialstatus.is_empty() => Some((call, CallEvent::Dial(dialstatus))),
            _ => None,
        },
        Event::Other => None,
    }
}

/// The senders to every worker.
pub struct Dispatcher {
    workers: Vec<Sender<WorkerMsg>>,
}

impl Dispatcher {
    /// Makes `n` worker channels; the receivers go to the workers.
    pub fn new(n: usize) -> (Dispatcher, Vec<Receiver<WorkerMsg>>) {
        let (senders, receivers) = (0..n.max(1)).map(|_| crossbeam_channel::unbounded()).unzip();
        (Dispatcher { workers: senders }, receivers)
    }

    /// Which worker owns `call`.
    pub fn worker_of(&self, call: &CallId) -> usize {
        // DefaultHasher::new() has fixed keys: the same call always maps to the same worker.
        let mut h = DefaultHasher::new();
        call.hash(&mut h);
        (h.finish() % self.workers.len() as u64) as usize
    }

    /// Sends a call's event to its worker. A worker that is gone is shutting down: the event no
    /// longer matters.
    pub fn send(&self, call: CallId, event: CallEvent) {
        let w = self.worker_of(&call);
        let _ = self.workers[w].send(WorkerMsg::Call(call, event));
    }

    pub fn broadcast(&self, msg: WorkerMsg) {
        for w in &self.workers {
            let _ = w.send(msg.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ari::events::decode;

    fn ev(json: &str) -> Event {
        decode(json).unwrap()
    }

    #[test]
    fn inbound_caller_starts_a_call_and_other_args_do_not() {
        let ids = Ids::new("voicebot1");
        let start = ev(r#"{"type":"StasisStart","args":["inbound"],"channel":{"id":"17.1"}}"#);
        assert!(matches!(route(&ids, "inbound", start), Some((CallId(c), CallEvent::Inbound(_))) if c == "17.1"));
        let other = ev(r#"{"type":"StasisStart","args":["other"],"channel":{"id":"17.2"}}"#);
        assert_eq!(route(&ids, "inbound", other), None);
        let none = ev(r#"{"type":"StasisStart","args":[],"channel":{"id":"17.3"}}"#);
        assert_eq!(route(&ids, "inbound", none), None);
    }

    #[test]
    fn our_channels_route_to_their_call_with_their_role() {
        let ids = Ids::new("voicebot1");
        let media = ev(r#"{"type":"StasisStart","args":[],"channel":{"id":"voicebot1-17.1-media"}}"#);
        assert!(matches!(route(&ids, "inbound", media), Some((CallId(c), CallEvent::Started(Role::Media, _))) if c == "17.1"));
        let gone = ev(r#"{"type":"ChannelDestroyed","cause":17,"cause_txt":"User busy","channel":{"id":"voicebot1-17.1-dest"}}"#);
        assert_eq!(route(&ids, "inbound", gone), Some((CallId("17.1".into()), CallEvent::Left(Role::Dest, Some(17)))));
        let end = ev(r#"{"type":"StasisEnd","channel":{"id":"17.1"}}"#);
        assert_eq!(route(&ids, "inbound", end), Some((CallId("17.1".into()), CallEvent::Left(Role::Caller, None))));
    }

    #[test]
    fn all_roles_of_a_call_map_to_one_worker() {
        let ids = Ids::new("voicebot1");
        let (d, _rx) = Dispatcher::new(8);
        for n in 0..200 {
            let call = CallId(format!("1764000000.{n}"));
            let w = d.worker_of(&call);
            for role in [Role::Media, Role::Dest] {
                let (c, _) = ids.classify_channel(&ids.channel(&call, role));
                assert_eq!(d.worker_of(&c), w);
            }
        }
    }

    #[test]
    fn calls_spread_over_the_workers() {
        let (d, _rx) = Dispatcher::new(4);
        let mut seen = [0usize; 4];
        for n in 0..400 {
            seen[d.worker_of(&CallId(format!("1764000000.{n}")))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn a_captured_call_routes_every_event_it_needs_to_the_one_call() {
        // Every frame Asterisk 22 sent for one call that hung up during the media phase.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events/call_caller_hangs_up_during_media_phase.jsonl");
        let text = std::fs::read_to_string(path).unwrap();
        let ids = Ids::new("voicebot1");
        let mut routed = Vec::new();
        for line in text.lines() {
            if let Some((call, ev)) = route(&ids, "inbound", decode(line).unwrap()) {
                routed.push((call, ev));
            }
        }
        let call = &routed[0].0;
        assert!(routed.iter().all(|(c, _)| c == call), "{routed:?}");
        assert!(matches!(routed[0].1, CallEvent::Inbound(_)));
        assert!(routed.iter().any(|(_, e)| matches!(e, CallEvent::Started(Role::Media, _))));
        assert!(routed.iter().any(|(_, e)| *e == CallEvent::Left(Role::Caller, None)));
    }
}
