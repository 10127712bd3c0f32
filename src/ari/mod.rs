//! Asterisk's REST Interface: typed events, the REST client, the event WebSocket, and the TCP and
//! TLS set-up they share.

pub mod events;
pub mod liveness;
pub mod rest;
pub mod tcp;
pub mod tls;
pub mod version;
pub mod websocket;

pub use events::{Bridge, Channel, Event};
pub use rest::{AriClient, AriError, ErrorKind};
pub use version::{AsteriskVersion, Support};
