//! voicebot1 against the scripted fake ARI of `tests/support/`, for what a real Asterisk cannot be
//! made to do on demand (events before REST responses, 5xx and slow answers, dropped or malformed
//! frames, wrong credentials, leftovers of a crashed run). One test binary, one module per topic:
//! every test crate links the whole program, so they share one link.
//!
//! Tests run in parallel threads of this one process: each starts its own fake (a listener on
//! port 0) and its own voicebot1 (metrics on port 0, media ports from `free_port_range`, which
//! never hands out a range twice in a process), so nothing is shared between them.

#[path = "../support/mod.rs"]
mod support;

mod call_flow;
mod harness;
mod rest_failures;
mod startup;
mod websocket;
