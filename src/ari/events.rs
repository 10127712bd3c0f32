//! Typed ARI events, decoded from WebSocket text frames.
//!
//! Only the fields the call flow reads are typed; everything else in a frame is ignored, and event
//! types the flow does not use decode to [`Event::Other`]. A frame that is not JSON, has no
//! `type`, or lacks a field a typed event needs is a [`DecodeError`] naming the event type and
//! the problem, so the reader can log it and go on.

use std::fmt;
use std::time::{Duration, SystemTime};

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
        /// When Asterisk put the channel into the application (`2026-11-24T04:12:52.001+0000`).
        #[serde(default)]
        timestamp: String,
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
    /// A key the caller pressed, at its end (passed on to a bot).
    ChannelDtmfReceived {
        channel: Channel,
        #[serde(default)]
        digit: String,
    },
    /// Every event type the flow has no use for.
    #[serde(other)]
    Other,
}

/// An ARI event timestamp (`2026-11-24T04:12:52.001+0000`: any number of fraction digits, a
/// `+hhmm`/`-hhmm` offset) as a point in time; `None` for anything else.
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 24
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(19) != Some(&b'.')
    {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let digits = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let fraction = num(20, digits.min(9))?;
    let nanos = fraction * 10i64.pow(9 - digits.min(9) as u32);
    let zone = 20 + digits;
    let sign = match b.get(zone) {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return None,
    };
    if b.len() != zone + 5 {
        return None;
    }
    let offset = sign * (num(zone + 1, 2)? * 3600 + num(zone + 3, 2)? * 60);
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos as u32))
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
    let value: serde_json::Value = serde_json::from_str(frame).map_err(|e| DecodeError {
        event_type: None,
        reason: format!("not JSON ({e})"),
    })?;
    let event_type = match value.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(DecodeError {
                event_type: None,
                reason: "\"type\" is not a string".into(),
            })
        }
        None => {
            return Err(DecodeError {
                event_type: None,
                reason: "JSON without a \"type\"".into(),
            })
        }
    };
    Event::deserialize(value).map_err(|e| DecodeError {
        event_type: Some(truncate(&event_type, 64)),
        reason: e.to_string(),
    })
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
        let path = format!(
            "{}/tests/fixtures/events/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn inbound_stasis_start_fixture_decodes_with_args_and_dialplan() {
        match decode(&fixture("stasis_start_inbound.json")).unwrap() {
            Event::StasisStart { channel, args, .. } => {
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
            Event::StasisStart { channel, args, .. } => {
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
            Event::ChannelDestroyed {
                cause, cause_txt, ..
            } => {
                assert!(cause > 0);
                assert!(!cause_txt.is_empty());
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn stasis_end_fixture_decodes() {
        assert!(matches!(
            decode(&fixture("stasis_end.json")).unwrap(),
            Event::StasisEnd { .. }
        ));
    }

    #[test]
    fn unused_event_types_fall_into_other() {
        assert_eq!(
            decode(&fixture("channel_varset.json")).unwrap(),
            Event::Other
        );
        assert_eq!(
            decode(r#"{"type":"ChannelStateChange","channel":{"id":"1"}}"#).unwrap(),
            Event::Other
        );
    }

    #[test]
    fn a_key_the_caller_pressed_is_decoded_with_its_channel() {
        let frame = r#"{"type":"ChannelDtmfReceived","timestamp":"2026-12-06T21:20:00.100+0000","digit":"5","duration_ms":120,"channel":{"id":"1765055000.7","name":"PJSIP/callers-00000007"},"asterisk_id":"x","application":"voicebot1"}"#;
        match decode(frame).unwrap() {
            Event::ChannelDtmfReceived { channel, digit } => {
                assert_eq!((channel.id.as_str(), digit.as_str()), ("1765055000.7", "5"))
            }
            other => panic!("{other:?}"),
        }
        // Without its channel it names the event.
        let e = decode(r#"{"type":"ChannelDtmfReceived","digit":"5"}"#).unwrap_err();
        assert_eq!(e.event_type.as_deref(), Some("ChannelDtmfReceived"));
    }

    #[test]
    fn garbage_is_an_error_naming_what_is_wrong() {
        let e = decode("not json").unwrap_err();
        assert_eq!(e.event_type, None);
        assert!(e.to_string().contains("not JSON"));
        assert!(decode("[1,2]")
            .unwrap_err()
            .to_string()
            .contains("without a \"type\""));
        assert!(decode(r#"{"type":7}"#)
            .unwrap_err()
            .to_string()
            .contains("not a string"));
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

    #[test]
    fn event_timestamps_parse_with_their_offset() {
        let t = parse_timestamp("2026-11-24T04:12:52.001+0000").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::new(1_795_493_572, 1_000_000)
        );
        let shifted = parse_timestamp("2026-11-24T05:12:52.001+0100").unwrap();
        assert_eq!(shifted, t);
        let micros = parse_timestamp("2026-11-24T04:12:52.001500-0000").unwrap();
        assert_eq!(
            micros.duration_since(t).unwrap(),
            Duration::from_micros(500)
        );
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00.000+0000"),
            Some(SystemTime::UNIX_EPOCH)
        );
        for bad in [
            "",
            "2026-11-24 04:12:52.001+0000",
            "2026-13-24T04:12:52.001+0000",
            "2026-11-24T04:12:52+0000",
            "2026-11-24T04:12:52.001Z",
            "2026-11-24T04:12:52.0x1+0000",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
