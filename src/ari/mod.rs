//! Asterisk's REST Interface: typed events, the REST client and the event WebSocket.
//!
//! Architecture invariant: `ari` knows nothing about calls. It speaks ARI's vocabulary (channels,
//! bridges, hang-up reasons, events) and imports only `net` and `config`; what its requests mean
//! for a call is the caller's business, and what they cost is told to an [`rest::Observer`].

pub mod events;
pub mod rest;
pub mod version;
pub mod websocket;

pub use events::{Bridge, Channel, Event};
pub use rest::{AriClient, AriError, ErrorKind, HangupReason};
pub use version::{AsteriskVersion, Support};
