//! The timer thread: one heap of pending `(when, call, timer)`; each timer is posted to its call
//! when due, like an event, behind whatever the call has queued already.
//!
//! Timers are never cancelled: a timer for a call that ended finds no call, and one the call no
//! longer waits for is ignored by its state machine. The thread returns when every sender of
//! requests is gone (the workers' handler was dropped at shutdown).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::call::Timer;
use crate::dispatch::{CallMsg, Scheduler};
use crate::ids::CallId;

/// A timer request: at `Instant`, post `Timer` to the call.
pub type TimerRequest = (Instant, CallId, Timer);

/// The timer thread: holds every pending timer and posts each to its call when due. Returns
/// when every sender of `requests` is gone (the workers' handler was dropped at shutdown).
pub fn run_timers<S: Send>(requests: Receiver<TimerRequest>, calls: &Scheduler<S>) {
    let mut heap: BinaryHeap<Reverse<TimerRequest>> = BinaryHeap::new();
    loop {
        let next = match heap.peek() {
            Some(Reverse((at, _, _))) => requests.recv_deadline(*at),
            None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(request) => heap.push(Reverse(request)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Some(Reverse((_, call, timer))) = heap.pop() else {
                break;
            };
            // Behind whatever the call has queued already: a hang-up that came first wins.
            calls.post(call, CallMsg::Timer(timer));
        }
    }
}
