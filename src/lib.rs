//! voicebot1: an Asterisk ARI Stasis application that puts each inbound caller in front of an RTP
//! "bot" (today an echo) for a while, then transfers the caller to a destination, and never leaves
//! a channel, a bridge or a UDP port behind.
//!
//! The map of the code is in ARCHITECTURE.md. In short: the reader thread (`app`) reads the
//! WebSocket (`ari::websocket`) and decodes its events (`ari::events`), `dispatch` routes each
//! event to its call's mailbox, which any free worker runs, `worker` performs what the pure state
//! machine in `call` decides, `media` owns the UDP sockets and the echo threads.

pub mod admission;
pub mod app;
pub mod ari;
pub mod audio;
pub mod backoff;
pub mod bot;
pub mod call;
pub mod config;
pub mod dispatch;
pub mod ids;
pub mod intake;
pub mod leftovers;
pub mod media;
pub mod metrics;
pub mod net;
pub mod preflight;
pub mod shared;
pub mod timer;
pub mod worker;
