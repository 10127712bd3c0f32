//! When a WebSocket connection counts as dead (ARI's event stream, a bot's session).
//!
//! Asterisk never pings an ARI client, and a bot need not ping its client; each only answers the
//! client's pings. A connection whose other end vanished without a FIN or RST (NAT or firewall
//! state lost, a paused VM, a pulled cable, a hung process) therefore reads exactly like a quiet
//! peer, for ever. So the client pings after
//! `interval` without hearing anything (again every `interval` while unanswered), and gives the
//! connection up when `pong_timeout` has passed since the first unanswered ping with nothing at
//! all arriving: an event, a pong, any frame proves the peer is there. A busy connection is never
//! pinged, and time in which the client did not read (no ping went out) is never held against
//! the peer.
//!
//! Pure bookkeeping on instants the caller passes in: every case is a unit test with no clock and
//! no socket.

use std::time::{Duration, Instant};

/// The liveness of one connection.
#[derive(Debug, Clone)]
pub struct Liveness {
    interval: Duration,
    pong_timeout: Duration,
    last_heard: Instant,
    last_ping: Instant,
    /// The first ping sent since anything was heard.
    unanswered_since: Option<Instant>,
}

impl Liveness {
    /// A connection made at `now`: being connected counts as having just heard from the peer.
    pub fn new(now: Instant, interval: Duration, pong_timeout: Duration) -> Liveness {
        Liveness {
            interval,
            pong_timeout,
            last_heard: now,
            last_ping: now,
            unanswered_since: None,
        }
    }

    /// A frame of any kind arrived at `now`: it answers every ping sent so far.
    pub fn on_frame(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
        self.unanswered_since = None;
    }

    /// A ping was sent at `now`.
    pub fn on_ping(&mut self, now: Instant) {
        self.last_ping = self.last_ping.max(now);
        self.unanswered_since.get_or_insert(now);
    }

    /// True when a ping should go out: for `interval` nothing was heard and no ping was sent.
    pub fn due_ping(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heard.max(self.last_ping)) >= self.interval
    }

    /// When [`due_ping`](Self::due_ping) or [`dead`](Self::dead) may next change: for a caller
    /// that sleeps until then.
    pub fn next_check(&self, _now: Instant) -> Instant {
        let ping = self.last_heard.max(self.last_ping) + self.interval;
        match self.unanswered_since {
            Some(since) => ping.min(since + self.pong_timeout),
            None => ping,
        }
    }

    /// `Some(silence)`, how long nothing has been heard, once a ping has gone unanswered for
    /// `pong_timeout`: the connection is dead.
    pub fn dead(&self, now: Instant) -> Option<Duration> {
        let ping = self.unanswered_since?;
        (now.saturating_duration_since(ping) >= self.pong_timeout)
            .then(|| now.saturating_duration_since(self.last_heard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);
    const PONG_TIMEOUT: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_silent_connection_is_pinged_after_the_interval_and_not_before() {
        let t0 = Instant::now();
        let l = Liveness::new(t0, INTERVAL, PONG_TIMEOUT);
        assert!(!l.due_ping(t0));
        assert!(!l.due_ping(t0 + ms(4900)));
        assert!(l.due_ping(t0 + INTERVAL));
        assert_eq!(
            l.dead(t0 + ms(60_000)),
            None,
            "no ping went out, so none is unanswered"
        );
    }

    #[test]
    fn an_unanswered_ping_is_repeated_each_interval() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, ms(3000), PONG_TIMEOUT);
        l.on_ping(t0 + ms(3000));
        assert!(!l.due_ping(t0 + ms(5900)));
        assert!(l.due_ping(t0 + ms(6000)));
    }

    #[test]
    fn a_ping_unanswered_for_the_pong_timeout_means_dead_and_reports_the_whole_silence() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, INTERVAL, PONG_TIMEOUT);
        l.on_ping(t0 + ms(5000));
        assert_eq!(l.dead(t0 + ms(9900)), None);
        l.on_ping(t0 + ms(9900)); // a later ping does not restart the wait
        assert_eq!(l.dead(t0 + ms(10_000)), Some(ms(10_000)));
        assert_eq!(l.dead(t0 + ms(12_500)), Some(ms(12_500)));
    }

    #[test]
    fn any_frame_answers_the_ping_and_postpones_the_next_one() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, INTERVAL, PONG_TIMEOUT);
        l.on_ping(t0 + ms(5000));
        l.on_frame(t0 + ms(5100)); // the pong, or an event
        assert_eq!(l.dead(t0 + ms(20_000)), None);
        assert!(!l.due_ping(t0 + ms(10_000)));
        assert!(l.due_ping(t0 + ms(10_100)));
        l.on_ping(t0 + ms(10_100));
        assert_eq!(l.dead(t0 + ms(15_100)), Some(INTERVAL + PONG_TIMEOUT));
    }

    #[test]
    fn time_the_client_spent_not_reading_is_not_held_against_the_peer() {
        // Connected, then busy elsewhere (reconciling after a reconnect) for 30 s before the
        // first read: the peer gets a ping and its full pong timeout.
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, INTERVAL, PONG_TIMEOUT);
        let first_read = t0 + ms(30_000);
        assert_eq!(l.dead(first_read), None);
        assert!(l.due_ping(first_read));
        l.on_ping(first_read);
        assert_eq!(l.dead(first_read + ms(4900)), None);
    }

    #[test]
    fn a_busy_connection_is_never_pinged() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, INTERVAL, PONG_TIMEOUT);
        for s in 1..100 {
            let now = t0 + Duration::from_secs(s);
            l.on_frame(now);
            assert!(!l.due_ping(now) && l.dead(now).is_none(), "at {s} s");
        }
    }
}
