//! Routing events to their calls, and running each call on whichever worker is free.
//!
//! `route` turns an ARI event into the call it is about (a pure function of the channel id, see
//! `ids`). The [`Scheduler`] then keeps one mailbox per call: the reader posts a call's events to
//! its mailbox in WebSocket order; a call with mail is put on one shared ready queue; any free
//! worker takes it, handles its mail in order, and puts it back if more came meanwhile.
//!
//! Invariants:
//! - A call is on at most one worker at a time (its `scheduled` flag), so its events and actions
//!   stay strictly ordered with no lock held while a call runs.
//! - A slow REST request holds only its own call: other calls go to the other workers (no
//!   head-of-line blocking behind a fixed call → worker hash).
//! - Timers are mail too: a timer that fires is posted behind the events already queued for its
//!   call, so a hang-up that arrived first is handled first.
//! - A call's state lives in its mailbox between turns; the mailbox goes when the call has ended
//!   and no mail is left.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::ari::events::parse_timestamp;
use crate::ari::{Channel, Event};
use crate::call::{Adopted, Timer};
use crate::ids::{CallId, Ids, Role};
use crate::media::BotEvent;

/// A caller who entered the application with the inbound argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCaller {
    pub channel: Channel,
    /// When, by Asterisk's clock (its StasisStart's timestamp); `None` for a caller found waiting.
    pub entered: Option<SystemTime>,
    /// The Stasis arguments after the inbound one (`bot=support`, `lang=fr`, …).
    pub args: Vec<String>,
}

impl NewCaller {
    /// A caller found waiting in the application (its StasisStart was not read): its arguments
    /// come from the dialplan application's data (`voicebot1,inbound,bot=support`).
    pub fn waiting(channel: Channel) -> NewCaller {
        let args = channel
            .dialplan
            .as_ref()
            .map(|d| d.app_data.split(',').skip(2).map(str::to_string).collect())
            .unwrap_or_default();
        NewCaller {
            channel,
            entered: None,
            args,
        }
    }
}

/// What a worker is told about one of its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A caller entered Stasis with the inbound argument: a new call.
    Inbound(Box<NewCaller>),
    /// A new call admission control lets in without the bot (`on_overload = "transfer"`).
    Overflow(Box<NewCaller>),
    /// Our externalMedia or destination channel entered Stasis.
    Started(Role, Box<Channel>),
    /// A party's channel left Stasis (`None`) or was destroyed (with its cause).
    Left(Role, Option<i64>),
    /// Progress of the origination to the destination (ringing, busy …), for the log.
    Dial(String),
    /// The caller pressed a key (ARI's `ChannelDtmfReceived`, at the key's end).
    Dtmf(char),
}

/// Turns an event into the call it is about and what happened, or `None` for events no call
/// needs (other applications' arguments, event types the flow ignores).
pub fn route(ids: &Ids, inbound_arg: &str, event: Event) -> Option<(CallId, CallEvent)> {
    match event {
        Event::StasisStart {
            channel,
            args,
            timestamp,
        } => {
            let (call, role) = ids.classify_channel(&channel.id);
            match role {
                Role::Caller if args.first().map(String::as_str) == Some(inbound_arg) => {
                    let entered = parse_timestamp(&timestamp);
                    let args = args.into_iter().skip(1).collect();
                    Some((
                        call,
                        CallEvent::Inbound(Box::new(NewCaller {
                            channel,
                            entered,
                            args,
                        })),
                    ))
                }
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
            (call, Role::Dest) if !dialstatus.is_empty() => {
                Some((call, CallEvent::Dial(dialstatus)))
            }
            _ => None,
        },
        // Only the caller's keys reach a bot (a destination's are its own business).
        Event::ChannelDtmfReceived { channel, digit } => match ids.classify_channel(&channel.id) {
            (call, Role::Caller) => digit
                .chars()
                .next()
                .filter(|d| is_dtmf(*d))
                .map(|d| (call, CallEvent::Dtmf(d))),
            _ => None,
        },
        Event::Other => None,
    }
}

/// A DTMF digit: 0-9, *, #, A-D.
fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

/// Mail for one call.
#[derive(Debug, Clone)]
pub enum CallMsg {
    Event(CallEvent),
    /// A timer the call asked for fired.
    Timer(Timer),
    /// After a reconnect: the ids of every channel Asterisk has now. A call whose channels are
    /// missing lost their events while voicebot1 was disconnected.
    Reconcile(Arc<HashSet<String>>),
    /// voicebot1 is stopping.
    Shutdown,
    /// A handover stop began: no more bot for this call.
    Drain,
    /// A handover stop began while Asterisk is slow: the call is handed over as it is.
    Hold,
    /// A handover stop ends: a call the next instance can take over is forgotten here (left in
    /// Asterisk as it is); any other is ended.
    Handover,
    /// The call's WebSocket bot asked for something, or its session ended or failed.
    Bot(BotEvent),
    /// At start-up: the call was found in Asterisk, left by an earlier voicebot1, and goes on
    /// here (see `leftovers`).
    Adopt {
        how: Adopted,
        caller: Box<Channel>,
        media: bool,
        dest_name: Option<String>,
    },
}

/// One call's mailbox.
struct Mailbox<S> {
    mail: VecDeque<CallMsg>,
    /// On the ready queue or on a worker: nobody else may take it.
    scheduled: bool,
    /// The call's state between turns (`None` while a worker holds it, or when there is no call).
    state: Option<S>,
}

/// What a worker does with a call's mail. `state` is `None` when there is no such call (yet, or
/// any more); the handler sets it to start a call and clears it when the call is over.
pub trait Handler<S>: Send + Sync {
    fn handle(&self, call: &CallId, state: &mut Option<S>, msg: CallMsg);
    /// A `handle` panicked: the state it left (if any) must be ended and released.
    fn recover(&self, call: &CallId, state: Option<S>, panic: String);
}

/// Mailboxes for every call with mail or state, and the queue of calls ready to run.
pub struct Scheduler<S> {
    boxes: Mutex<HashMap<CallId, Mailbox<S>>>,
    /// `None` tells one worker to stop.
    ready: Sender<Option<CallId>>,
    ready_rx: Receiver<Option<CallId>>,
}

impl<S: Send> Scheduler<S> {
    pub fn new() -> Scheduler<S> {
        let (ready, ready_rx) = crossbeam_channel::unbounded();
        Scheduler {
            boxes: Mutex::new(HashMap::new()),
            ready,
            ready_rx,
        }
    }

    /// Queues `msg` for `call`, and the call for a worker unless it already is queued or running.
    pub fn post(&self, call: CallId, msg: CallMsg) {
        let mut boxes = self.boxes.lock();
        let mailbox = boxes.entry(call.clone()).or_insert_with(|| Mailbox {
            mail: VecDeque::new(),
            scheduled: false,
            state: None,
        });
        mailbox.mail.push_back(msg);
        if !mailbox.scheduled {
            mailbox.scheduled = true;
            // The receiver lives as long as `self`: sending cannot fail.
            let _ = self.ready.send(Some(call));
        }
    }

    /// Posts `msg` to every call that has a mailbox.
    pub fn post_all(&self, msg: &CallMsg) {
        let calls: Vec<CallId> = self.boxes.lock().keys().cloned().collect();
        for call in calls {
            self.post(call, msg.clone());
        }
    }

    /// Calls with a mailbox (running, waiting, or with mail).
    pub fn len(&self) -> usize {
        self.boxes.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells `n` workers to stop once they finish what they hold.
    pub fn stop_workers(&self, n: usize) {
        for _ in 0..n {
            let _ = self.ready.send(None);
        }
    }

    /// A worker: runs ready calls until told to stop.
    pub fn run_worker(&self, handler: &dyn Handler<S>) {
        while let Ok(Some(call)) = self.ready_rx.recv() {
            self.run_turn(&call, handler);
        }
    }

    /// Handles the mail `call` has now, then puts its state back (or drops the mailbox).
    fn run_turn(&self, call: &CallId, handler: &dyn Handler<S>) {
        let (mut state, mail) = {
            let mut boxes = self.boxes.lock();
            let Some(mailbox) = boxes.get_mut(call) else {
                return;
            };
            (mailbox.state.take(), std::mem::take(&mut mailbox.mail))
        };
        for msg in mail {
            let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handler.handle(call, &mut state, msg)
            }));
            if let Err(panic) = turn {
                handler.recover(call, state.take(), panic_message(panic.as_ref()));
            }
        }
        let mut boxes = self.boxes.lock();
        let Some(mailbox) = boxes.get_mut(call) else {
            return;
        };
        mailbox.state = state;
        if !mailbox.mail.is_empty() {
            let _ = self.ready.send(Some(call.clone()));
        } else if mailbox.state.is_none() {
            boxes.remove(call);
        } else {
            mailbox.scheduled = false;
        }
    }
}

impl<S: Send> Default for Scheduler<S> {
    fn default() -> Self {
        Scheduler::new()
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
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
        assert!(
            matches!(route(&ids, "inbound", start), Some((CallId(c), CallEvent::Inbound(..))) if c == "17.1")
        );
        let other = ev(r#"{"type":"StasisStart","args":["other"],"channel":{"id":"17.2"}}"#);
        assert_eq!(route(&ids, "inbound", other), None);
        let none = ev(r#"{"type":"StasisStart","args":[],"channel":{"id":"17.3"}}"#);
        assert_eq!(route(&ids, "inbound", none), None);
    }

    #[test]
    fn our_channels_route_to_their_call_with_their_role() {
        let ids = Ids::new("voicebot1");
        let media =
            ev(r#"{"type":"StasisStart","args":[],"channel":{"id":"voicebot1-17.1-media"}}"#);
        assert!(
            matches!(route(&ids, "inbound", media), Some((CallId(c), CallEvent::Started(Role::Media, _))) if c == "17.1")
        );
        let gone = ev(
            r#"{"type":"ChannelDestroyed","cause":17,"cause_txt":"User busy","channel":{"id":"voicebot1-17.1-dest"}}"#,
        );
        assert_eq!(
            route(&ids, "inbound", gone),
            Some((CallId("17.1".into()), CallEvent::Left(Role::Dest, Some(17))))
        );
        let end = ev(r#"{"type":"StasisEnd","channel":{"id":"17.1"}}"#);
        assert_eq!(
            route(&ids, "inbound", end),
            Some((CallId("17.1".into()), CallEvent::Left(Role::Caller, None)))
        );
    }

    #[test]
    fn the_callers_keys_and_stasis_arguments_reach_its_call() {
        let ids = Ids::new("voicebot1");
        let start = ev(
            r#"{"type":"StasisStart","args":["inbound","bot=support","lang=fr"],"channel":{"id":"17.1"}}"#,
        );
        match route(&ids, "inbound", start) {
            Some((_, CallEvent::Inbound(caller))) => {
                assert_eq!(caller.args, ["bot=support", "lang=fr"])
            }
            other => panic!("{other:?}"),
        }
        let key = ev(r##"{"type":"ChannelDtmfReceived","digit":"#","channel":{"id":"17.1"}}"##);
        assert_eq!(
            route(&ids, "inbound", key),
            Some((CallId("17.1".into()), CallEvent::Dtmf('#')))
        );
        // A destination's keys, and anything that is no key, go nowhere.
        let dest = ev(
            r#"{"type":"ChannelDtmfReceived","digit":"1","channel":{"id":"voicebot1-17.1-dest"}}"#,
        );
        assert_eq!(route(&ids, "inbound", dest), None);
        let junk = ev(r#"{"type":"ChannelDtmfReceived","digit":"x","channel":{"id":"17.1"}}"#);
        assert_eq!(route(&ids, "inbound", junk), None);
    }

    #[test]
    fn a_caller_found_waiting_gets_its_arguments_from_the_dialplan() {
        let channel: Channel = serde_json::from_str(
            r#"{"id":"9","dialplan":{"context":"c","exten":"3308487","app_name":"Stasis","app_data":"voicebot1,inbound,bot=sales"}}"#,
        )
        .unwrap();
        assert_eq!(NewCaller::waiting(channel).args, ["bot=sales"]);
    }

    /// Records every turn; a call's state counts its messages.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(CallId, usize)>>,
        running: Mutex<HashSet<CallId>>,
        overlaps: std::sync::atomic::AtomicUsize,
        recovered: Mutex<Vec<(CallId, Option<usize>, String)>>,
    }

    impl Handler<usize> for Recorder {
        fn handle(&self, call: &CallId, state: &mut Option<usize>, msg: CallMsg) {
            if !self.running.lock().insert(call.clone()) {
                self.overlaps
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            std::thread::yield_now();
            let n = state.get_or_insert(0);
            *n += 1;
            let n = *n;
            self.seen.lock().push((call.clone(), n));
            self.running.lock().remove(call);
            if call.0 == "bad" && n == 2 {
                panic!("planted panic");
            }
            if matches!(msg, CallMsg::Shutdown) {
                *state = None;
            }
        }
        fn recover(&self, call: &CallId, state: Option<usize>, panic: String) {
            self.running.lock().remove(call);
            self.recovered.lock().push((call.clone(), state, panic));
        }
    }

    fn run_workers<S: Send + 'static>(
        sched: &Arc<Scheduler<S>>,
        handler: &Arc<dyn Handler<S>>,
        n: usize,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (sched, handler) = (Arc::clone(sched), Arc::clone(handler));
                std::thread::spawn(move || sched.run_worker(handler.as_ref()))
            })
            .collect()
    }

    fn wait_empty<S: Send>(sched: &Scheduler<S>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !sched.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} mailboxes left",
                sched.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn each_call_runs_on_one_worker_at_a_time_with_its_mail_in_order() {
        let sched = Arc::new(Scheduler::new());
        let rec = Arc::new(Recorder::default());
        let handler: Arc<dyn Handler<usize>> = rec.clone();
        let workers = run_workers(&sched, &handler, 4);
        for round in 0..20 {
            for c in 0..30 {
                let msg = if round == 19 {
                    CallMsg::Shutdown
                } else {
                    CallMsg::Timer(Timer::MediaPhaseOver)
                };
                sched.post(CallId(format!("c{c}")), msg);
            }
        }
        wait_empty(&sched);
        sched.stop_workers(4);
        workers.into_iter().for_each(|w| w.join().unwrap());
        assert_eq!(
            rec.overlaps.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "a call ran on two workers at once"
        );
        let seen = rec.seen.lock();
        for c in 0..30 {
            let counts: Vec<usize> = seen
                .iter()
                .filter(|(id, _)| id.0 == format!("c{c}"))
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(counts, (1..=20).collect::<Vec<_>>(), "call c{c}");
        }
    }

    /// Blocks call "slow" until call "fast" has been handled (or 5 s pass).
    struct SlowAndFast {
        fast_done: (Sender<()>, Receiver<()>),
        slow_waited: Mutex<Option<bool>>,
    }

    impl Handler<()> for SlowAndFast {
        fn handle(&self, call: &CallId, _: &mut Option<()>, _: CallMsg) {
            if call.0 == "slow" {
                let got = self
                    .fast_done
                    .1
                    .recv_timeout(std::time::Duration::from_secs(5))
                    .is_ok();
                *self.slow_waited.lock() = Some(got);
            } else {
                let _ = self.fast_done.0.send(());
            }
        }
        fn recover(&self, _: &CallId, _: Option<()>, _: String) {}
    }

    #[test]
    fn a_call_blocked_in_a_request_does_not_hold_up_other_calls() {
        let sched = Arc::new(Scheduler::new());
        let h = Arc::new(SlowAndFast {
            fast_done: crossbeam_channel::unbounded(),
            slow_waited: Mutex::new(None),
        });
        let handler: Arc<dyn Handler<()>> = h.clone();
        let workers = run_workers(&sched, &handler, 2);
        sched.post(CallId("slow".into()), CallMsg::Shutdown);
        sched.post(CallId("fast".into()), CallMsg::Shutdown);
        wait_empty(&sched);
        sched.stop_workers(2);
        workers.into_iter().for_each(|w| w.join().unwrap());
        assert_eq!(
            *h.slow_waited.lock(),
            Some(true),
            "the other call was not handled while one call was blocked"
        );
    }

    #[test]
    fn a_panic_in_one_call_is_recovered_and_the_worker_goes_on_with_other_calls() {
        let sched = Arc::new(Scheduler::new());
        let rec = Arc::new(Recorder::default());
        let handler: Arc<dyn Handler<usize>> = rec.clone();
        // One worker: if the panic killed it, nothing after it would run.
        let workers = run_workers(&sched, &handler, 1);
        let bad = CallId("bad".into());
        sched.post(bad.clone(), CallMsg::Timer(Timer::SetupGuard));
        sched.post(bad.clone(), CallMsg::Timer(Timer::SetupGuard));
        sched.post(bad.clone(), CallMsg::Shutdown);
        sched.post(CallId("good".into()), CallMsg::Shutdown);
        wait_empty(&sched);
        sched.stop_workers(1);
        workers.into_iter().for_each(|w| w.join().unwrap());
        let recovered = rec.recovered.lock();
        assert_eq!(recovered.len(), 1, "{:?}", *recovered);
        assert_eq!((&recovered[0].0, recovered[0].1), (&bad, Some(2)));
        assert!(recovered[0].2.contains("planted panic"));
        let seen = rec.seen.lock();
        // After the recovery the call has no state: its third message starts from nothing.
        assert!(
            seen.contains(&(bad.clone(), 1)) && seen.iter().filter(|(c, _)| *c == bad).count() == 3,
            "{:?}",
            *seen
        );
        assert!(seen.iter().any(|(c, _)| c.0 == "good"), "{:?}", *seen);
    }

    #[test]
    fn a_captured_call_routes_every_event_it_needs_to_the_one_call() {
        // Every frame Asterisk 22 sent for one call that hung up during the media phase.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/events/call_caller_hangs_up_during_media_phase.jsonl"
        );
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
        assert!(matches!(routed[0].1, CallEvent::Inbound(..)));
        assert!(routed
            .iter()
            .any(|(_, e)| matches!(e, CallEvent::Started(Role::Media, _))));
        assert!(routed
            .iter()
            .any(|(_, e)| *e == CallEvent::Left(Role::Caller, None)));
    }
}
