//! Typed ARI events, decoded from WebSocket text frames.
//!
//! Only the fields the call flow reads are typed; everything else in a frame is ignored, and event
//! types the flow does not use decode to [`Event::Other`]. A frame that is not JSON, has no
//! `type`, or lacks a field a typed event needs is a [`DecodeError`] naming the event type and
//! the problem, so the reader can log it and go on.

use std::fmt;

use serde::Deserialize;

/// A channel as events and REST responses describe it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Channel {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub caller: CallerId,
    #[serde(default)]
    pub dialplan: Option<DialplanCep>,
    /// Channel variables Asterisk chose to include (externalMedia reports its RTP address here).
    #[serde(default)]
    pub channelvars: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct CallerId {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub number: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DialplanCep {
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub exten: String,
    #[serde(default)]
    pub app_name: String,
    #[serde(default)]
    pub app_data: String,
}

/// A bridge as REST responses describe it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Bridge {
    pub id: String,
    #[serde(default)]
    pub channels: Vec<String>,
}

/// The events the call flow acts on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum Event {
    /// A channel entered the application (an inbound caller, our externalMedia channel, or our
    /// originated channel once answered).
    StasisStart {
        channel: Channel,
        #[serde(default)]
        args: Vec<String>,
    },
    /// A channel left the application (for our channels: it hung up).
    StasisEnd { channel: Channel },
    /// A channel is gone; for an originated channel that never answered this is the only sign of
    /// busy / no answer / failure, with the cause.
    ChannelDestroyed {
        channel: Channel,
        #[serde(default)]
        cause: i64,
        #[serde(default)]
        cause_txt: String,
    },
    /// The origination to the destination progressed (ringing, busy …); logged only.
    Dial {
        peer: Channel,
        #[serde(default)]
        dialstatus: String,
    },
    /// Every event type the flow has no use for.
    #[serde(other)]
    Other,
}

/// Why a frame was not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The frame's `type`, when it had one.
    pub event_type: Option<String>,
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.event_type {
            Some(t) => write!(f, "undecodable {t} event: {}", self.reason),
            None => write!(f, "undecodable frame: {}", self.reason),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one WebSocket text frame.
pub fn decode(frame: &str) -> Result<Event, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_str(frame).map_err(|e| DecodeError { event_type: None, reason: format!("not JSON ({e})") })?;
    let event_type = match value.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(_) => return Err(DecodeError { event_type: None, reason: "\"type\" is not a string".into() }),
        None => return Err(DecodeError { event_type: None, reason: "JSON without a \"type\"".into() }),
    };
    Event::deserialize(value).map_err(|e| DecodeError { event_type: Some(truncate(&event_type, 64)), reason: e.to_string() })
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/events/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn inbound_stasis_start_fixture_decodes_with_args_and_dialplan() {
        match decode(&fixture("stasis_start_inbound.json")).unwrap() {
            Event::StasisStart { channel, args } => {
                assert_eq!(args, vec!["inbound".to_string()]);
                assert!(channel.name.starts_with("PJSIP/"), "{channel:?}");
                let dp = channel.dialplan.unwrap();
                assert_eq!(dp.exten, "3308487");
                assert_eq!(dp.app_name, "Stasis");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn external_media_stasis_start_fixture_has_no_args() {
        match decode(&fixture("stasis_start_external_media.json")).unwrap() {
            Event::StasisStart { channel, args } => {
                assert!(args.is_empty());
                assert!(channel.name.starts_with("UnicastRTP/"), "{channel:?}");
                assert!(channel.id.ends_with("-media"));
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn channel_destroyed_fixture_carries_cause() {
        match decode(&fixture("channel_destroyed.json")).unwrap() {
            Event::ChannelDestroyed { cause, cause_txt, .. } => {
                assert!(cause > 0);
                assert!(!cause_txt.is_empty());
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn stasis_end_fixture_decodes() {
        assert!(matches!(decode(&fixture("stasis_end.json")).unwrap(), Event::StasisEnd { .. }));
    }

    #[test]
    fn unused_event_types_fall_into_other() {
        assert_eq!(decode(&fixture("channel_varset.json")).unwrap(), Event::Other);
        assert_eq!(decode(r#"{"type":"ChannelDtmfReceived","digit":"1"}"#).unwrap(), Event::Other);
    }

    #[test]
    fn garbage_is_an_error_naming_what_is_wrong() {
        let e = decode("not json").unwrap_err();
        assert_eq!(e.event_type, None);
        assert!(e.to_string().contains("not JSON"));
        assert!(decode("[1,2]").unwrap_err().to_string().contains("without a \"type\""));
        assert!(decode(r#"{"type":7}"#).unwrap_err().to_string().contains("not a string"));
    }

    #[test]
    fn event_missing_its_channel_is_an_error_naming_the_event() {
        let e = decode(r#"{"type":"StasisStart","args":["inbound"]}"#).unwrap_err();
        assert_eq!(e.event_type.as_deref(), Some("StasisStart"));
        assert!(e.to_string().contains("channel"), "{e}");
        let e = decode(r#"{"type":"StasisEnd","channel":{"name":"x"}}"#).unwrap_err();
        assert!(e.to_string().contains("id"), "{e}");
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        // A small deterministic fuzz: mutations of a real frame, truncations and random bytes.
        let base = fixture("stasis_start_inbound.json").into_bytes();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let mut bytes = base.clone();
            let cut = (next() as usize) % (bytes.len() + 1);
            bytes.truncate(cut);
            for _ in 0..(next() % 8) {
                if bytes.is_empty() {
                    break;
                }
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            let _ = decode(&String::from_utf8_lossy(&bytes));
        }
    }
}
