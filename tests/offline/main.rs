//! Tests that need no ARI, real or fake: the binary's command line and configuration errors
//! (`cli_config`), the bot bridge against fake bots (`bot_bridge`), and property tests of the
//! decoders and of the call state machine (`properties`, whose regressions proptest keeps in
//! `tests/proptest-regressions/properties.txt`).

mod bot_bridge;
mod cli_config;
mod layering;
mod properties;
