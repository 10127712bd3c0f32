//! Connections that have nothing to do with what flows over them: TCP (every address tried,
//! keepalive), TLS client settings, WebSocket client connections and their liveness. Used by ARI
//! (REST and the event WebSocket) and by the bots' WebSockets alike.
//!
//! Architecture invariant: `net` imports nothing from the rest of the crate; it knows nothing
//! about Asterisk, calls or the configuration file.

pub mod liveness;
pub mod tcp;
pub mod tls;
pub mod ws;
