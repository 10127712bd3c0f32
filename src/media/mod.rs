//! UDP sockets for the calls' RTP, and the echo that stands in for the bot.
//!
//! Every port of the configured range is bound once, at start-up, into a [`SocketPool`], so a port
//! is listening before Asterisk is ever told to send to it (the Python original bound the port
//! after creating the externalMedia channel and lost the first packets, or the port).
//!
//! Ownership: a socket is either in the pool, or owned by exactly one [`SocketLease`]. A lease
//! goes back to the pool on `Drop`, whatever path the call took. While a call talks to the bot,
//! the lease is shared by an echo thread and the [`Echo`] handle that stays with the call;
//! dropping the handle stops the thread (at once: a wake-up datagram from the pool's waker socket
//! unblocks its `recv`), joins it, and the lease returns the socket. On the way back the socket
//! is disconnected and drained, so a late packet of one call is never echoed into the next.
//!
//! The echo answers only Asterisk: packets must come from the call's Asterisk RTP address (told by
//! the externalMedia channel's `UNICASTRTP_LOCAL_*` variables, or else learned from the first
//! packet from `asterisk_host`) and must look like RTP. Once that address is known the socket is
//! `connect()`ed to it and the kernel drops every other source; before, the echo drops and counts
//! them itself.
//!
//! Architecture invariant: `media` knows nothing about calls, ARI or the configuration file; it
//! imports only the leaf modules (`audio`, `net`, `bot`'s codecs).

pub mod bot;
mod echo;
mod pool;
mod rtp;

use std::net::SocketAddr;

pub use bot::{BotBridge, BotEvent, BotSpec};
pub use echo::{Echo, EchoCounts};
pub use pool::{BindFailure, SocketLease, SocketPool};
pub use rtp::looks_like_rtp;

use crate::audio::Format;

/// What sits behind a call's UDP port while the caller is with the bot: the echo, or a bridge to
/// a WebSocket bot. Its thread(s) own the socket lease; dropping the session (or [`finish`]ing
/// it) stops them and returns the socket to the pool.
///
/// [`finish`]: Session::finish
pub trait Session: Send {
    /// The UDP port Asterisk's externalMedia channel sends to.
    fn port(&self) -> u16;
    /// Asterisk's end of this call's RTP: the only address answered from now on.
    fn set_peer(&self, peer: SocketAddr);
    /// Sends RTP silence in `format` to Asterisk's end until the guard drops (Asterisk before
    /// 18.21/20.6, see `Echo::wake_asterisk`).
    fn wake_asterisk(&self, format: Format) -> Waking;
    /// The caller pressed a key (a bot hears of it; the echo does not care).
    fn dtmf(&self, _digit: char) {}
    /// The caller and the media channel are bridged: what the session plays reaches the caller
    /// from now on (a bot's audio is queued until then, not lost in an unbridged channel).
    fn caller_bridged(&self) {}
    /// Ends the session — a bot is told the call left it — and returns the socket; its line for
    /// the log (what went each way). The metrics are counted here.
    fn finish(self: Box<Self>) -> String;
}

/// Stops waking Asterisk when dropped (see [`Session::wake_asterisk`]).
#[must_use = "Asterisk is woken only while the guard lives"]
pub struct Waking(Option<Box<dyn FnOnce() + Send>>);

impl Waking {
    fn until_dropped(stop: impl FnOnce() + Send + 'static) -> Waking {
        Waking(Some(Box::new(stop)))
    }
}

impl Drop for Waking {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            stop();
        }
    }
}

#[cfg(test)]
mod testing {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    use super::SocketPool;

    pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// An a-law RTP packet as Asterisk sends it: 12 bytes of header, 20 ms of silence.
    pub fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![
            0x80,
            8,
            (seq >> 8) as u8,
            seq as u8,
            0,
            0,
            0,
            160,
            1,
            2,
            3,
            4,
        ];
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    /// A test port range: tests run in parallel, so each takes its own.
    pub fn pool(base: u16, n: u16) -> SocketPool {
        let (pool, failures) = SocketPool::bind(LOCAL, base, base + n - 1);
        assert!(failures.is_empty(), "ports {base}.. busy: {failures:?}");
        pool
    }

    pub fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
