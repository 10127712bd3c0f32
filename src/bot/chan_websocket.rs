//! Asterisk's chan_websocket: voicebot1 speaks as the WebSocket channel driver does when it dials
//! a bot (client mode, a `websocket_client.conf` connection), Asterisk 20.18/22.8 and later.
//!
//! Audio travels in BINARY frames of raw codec bytes, no header, both ways; slin16 is
//! little-endian on this wire (Asterisk's host order), big-endian in RTP, so the codec swaps.
//! Control travels in TEXT frames: events from voicebot1, commands from the bot, each either JSON
//! (`{"event":"…","channel_id":"…",…}`, `{"command":"…",…}`) or the older plain text
//! (`EVENT key:value …`, `COMMAND [argument]`). Asterisk reads commands only in the format it is
//! configured for; voicebot1 reads both and writes the one chosen for the bot.
//!
//! Rules kept from `channels/chan_websocket.c`: a text message over 128 bytes is skipped; blanks
//! (bytes below 33) around a command are stripped; commands are case-sensitive; a
//! MARK_MEDIA/STOP_MEDIA_BUFFERING `correlation_id` that is not a string counts as none; marks
//! that FLUSH_MEDIA drops are never answered; when the call ends the socket is closed, with no
//! event first. voicebot1 adds TRANSFER (`{"command":"TRANSFER","destination":"sales"}`, plain
//! `TRANSFER sales`, destination optional).

use serde::Serialize;
use serde_json::Value;

use super::{
    to_json, Bad, Codec, Format, FromBot, Opening, Outgoing, Pairs, QueueStatus, Snippet, ToBot,
};

/// chan_websocket skips a text message longer than this (`MAX_TEXT_MESSAGE_LEN`), JSON or not.
pub const MAX_TEXT_BYTES: usize = 128;

/// chan_websocket's `ptime` in MEDIA_START: the codec's default packet time.
const PTIME_MS: u32 = 20;

/// The driver's channel variables that MEDIA_START's `channel_variables` always carries.
const CONNECTION_ID_VARIABLE: &str = "MEDIA_WEBSOCKET_CONNECTION_ID";
const FRAME_SIZE_VARIABLE: &str = "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE";

/// Per-call state: the control format and the channel id every JSON event carries.
pub struct ChanWebsocketCodec {
    format: Format,
    json: bool,
    channel_id: String,
}

impl ChanWebsocketCodec {
    pub fn new(format: Format, json_control: bool) -> ChanWebsocketCodec {
        ChanWebsocketCodec {
            format,
            json: json_control,
            channel_id: String::new(),
        }
    }

    /// MEDIA_XOFF, MEDIA_XON and QUEUE_DRAINED: nothing but their name.
    fn bare_event(&self, event: &'static str) -> String {
        if self.json {
            to_json(&BareEvent {
                event,
                channel_id: &self.channel_id,
            })
        } else {
            event.to_owned()
        }
    }

    /// MEDIA_MARK_PROCESSED and MEDIA_BUFFERING_COMPLETED. JSON always has the id (empty when
    /// there was none); plain text adds ` id` only when there is one.
    fn correlated_event(&self, event: &'static str, id: Option<&str>) -> String {
        if self.json {
            to_json(&CorrelatedEvent {
                event,
                channel_id: &self.channel_id,
                correlation_id: id.unwrap_or(""),
            })
        } else {
            match id {
                Some(id) if !id.is_empty() => format!("{event} {id}"),
                _ => event.to_owned(),
            }
        }
    }

    fn status(&self, s: QueueStatus) -> String {
        if self.json {
            to_json(&StatusEvent {
                event: "STATUS",
                channel_id: &self.channel_id,
                queue_length: s.queue_length,
                xon_level: s.xon_level,
                xoff_level: s.xoff_level,
                queue_full: s.queue_full,
                bulk_media: s.bulk_media,
                media_paused: s.media_paused,
            })
        } else {
            format!(
                "STATUS channel_id:{} queue_length:{} xon_level:{} xoff_level:{} queue_full:{} bulk_media:{} media_paused:{}",
                self.channel_id, s.queue_length, s.xon_level, s.xoff_level, s.queue_full, s.bulk_media, s.media_paused
            )
        }
    }

    fn json_command(&self, text: &str) -> Result<FromBot, Bad> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| Bad::NotJson(Snippet::of(text)))?;
        let Some(message) = value.as_object() else {
            return Err(Bad::NotJson(Snippet::of(text)));
        };
        let Some(command) = message.get("command").and_then(Value::as_str) else {
            return Err(Bad::Malformed { field: "command" });
        };
        // Asterisk reads correlation_id with ast_json_object_string_get: not a string, no id.
        let correlation_id = message.get("correlation_id").and_then(Value::as_str);
        let destination = match message.get("destination") {
            None | Some(Value::Null) => None,
            Some(Value::String(destination)) => Some(destination.as_str()),
            Some(_) => {
                return Err(Bad::Malformed {
                    field: "destination",
                })
            }
        };
        let argument = if command == "TRANSFER" {
            destination
        } else {
            correlation_id
        };
        command_of(command, argument)
    }
}

/// The request a command names. `argument` is the correlation id (MARK_MEDIA,
/// STOP_MEDIA_BUFFERING) or the destination (TRANSFER); the other commands ignore it, as
/// Asterisk does.
fn command_of(command: &str, argument: Option<&str>) -> Result<FromBot, Bad> {
    let owned = || argument.map(str::to_owned);
    Ok(match command {
        "ANSWER" => FromBot::Answer,
        "HANGUP" => FromBot::Hangup,
        "START_MEDIA_BUFFERING" => FromBot::StartBuffering,
        "STOP_MEDIA_BUFFERING" => FromBot::StopBuffering(owned()),
        "MARK_MEDIA" => FromBot::Mark(owned().unwrap_or_default()),
        "FLUSH_MEDIA" => FromBot::Clear,
        "REPORT_QUEUE_DRAINED" => FromBot::ReportQueueDrained,
        "GET_STATUS" => FromBot::GetStatus,
        "PAUSE_MEDIA" => FromBot::Pause,
        "CONTINUE_MEDIA" => FromBot::Continue,
        "SET_MEDIA_DIRECTION" => {
            FromBot::Ignored("SET_MEDIA_DIRECTION (Asterisk 20.19/22.9) is not supported")
        }
        "TRANSFER" => FromBot::Transfer(owned()),
        other => return Err(Bad::UnknownCommand(Snippet::of(other))),
    })
}

/// 16-bit samples with their two bytes swapped (between little-endian chan_websocket slin16 and
/// big-endian RTP L16). A trailing odd byte, half a sample, is left out.
fn swap16(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() & !1);
    for pair in bytes.chunks_exact(2) {
        out.push(pair[1]);
        out.push(pair[0]);
    }
    out
}

/// ast_strip's blanks: every byte below 33 (space and the control characters).
fn is_blank(c: char) -> bool {
    (c as u32) < 33
}

impl Codec for ChanWebsocketCodec {
    fn opening(&mut self, o: &Opening) -> Vec<Outgoing> {
        // A real chan_websocket names its own channel (`WebSocket/<connection>/0x…`) and that
        // channel's unique id; voicebot1 has no such channel and names the caller's.
        self.channel_id = o.call_id.clone();
        let frame = self.format.frame_bytes();
        let text = if self.json {
            let frame_size = frame.to_string();
            let mut variables = o.parameters();
            // The driver sets its own two variables last, over any of the same name.
            variables
                .retain(|(key, _)| *key != CONNECTION_ID_VARIABLE && *key != FRAME_SIZE_VARIABLE);
            variables.push((CONNECTION_ID_VARIABLE, &o.bot));
            variables.push((FRAME_SIZE_VARIABLE, &frame_size));
            to_json(&MediaStart {
                event: "MEDIA_START",
                connection_id: &o.bot,
                channel: &o.channel_name,
                channel_id: &self.channel_id,
                format: self.format.name(),
                optimal_frame_size: frame,
                ptime: PTIME_MS,
                channel_variables: Pairs(&variables),
            })
        } else {
            format!(
                "MEDIA_START connection_id:{} channel:{} channel_id:{} format:{} optimal_frame_size:{frame} ptime:{PTIME_MS}",
                o.bot,
                o.channel_name,
                self.channel_id,
                self.format.name()
            )
        };
        vec![Outgoing::Text(text)]
    }

    fn encode(&mut self, m: ToBot) -> Option<Outgoing> {
        let text = match m {
            ToBot::CallerAudio([]) => return None,
            ToBot::CallerAudio(payload) => {
                return Some(Outgoing::Binary(match self.format {
                    Format::Slin16 => swap16(payload),
                    Format::Ulaw | Format::Alaw => payload.to_vec(),
                }))
            }
            ToBot::Dtmf(digit) => {
                if self.json {
                    let mut buf = [0u8; 4];
                    to_json(&DtmfEvent {
                        event: "DTMF_END",
                        channel_id: &self.channel_id,
                        digit: digit.encode_utf8(&mut buf),
                    })
                } else {
                    format!("DTMF_END digit:{digit} channel_id:{}", self.channel_id)
                }
            }
            ToBot::MarkPlayed(id) => self.correlated_event("MEDIA_MARK_PROCESSED", Some(id)),
            ToBot::BufferingCompleted(id) => self.correlated_event("MEDIA_BUFFERING_COMPLETED", id),
            ToBot::Xoff => self.bare_event("MEDIA_XOFF"),
            ToBot::Xon => self.bare_event("MEDIA_XON"),
            ToBot::QueueDrained => self.bare_event("QUEUE_DRAINED"),
            ToBot::Status(status) => self.status(status),
            ToBot::Error(error_text) => {
                if self.json {
                    to_json(&ErrorEvent {
                        event: "ERROR",
                        channel_id: &self.channel_id,
                        error_text,
                    })
                } else {
                    format!(
                        "ERROR channel_id:{} error_text:{error_text}",
                        self.channel_id
                    )
                }
            }
            // FLUSH_MEDIA frees queued marks without a word; hanging up closes the socket.
            ToBot::MarkCleared(_) | ToBot::Stop => return None,
        };
        Some(Outgoing::Text(text))
    }

    fn decode_text(&mut self, text: &str) -> Result<FromBot, Bad> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(Bad::TooLong { bytes: text.len() });
        }
        let text = text.trim_matches(is_blank);
        if text.is_empty() {
            return Err(Bad::Empty);
        }
        if text.starts_with('{') {
            return self.json_command(text);
        }
        match text.split_once(' ') {
            Some((command, argument)) => command_of(command, Some(argument)),
            None => command_of(text, None),
        }
    }

    fn decode_binary(&mut self, data: &[u8]) -> Result<FromBot, Bad> {
        if data.is_empty() {
            return Ok(FromBot::Ignored("empty binary frame"));
        }
        match self.format {
            Format::Slin16 if !data.len().is_multiple_of(2) => {
                Err(Bad::PartialSample { bytes: data.len() })
            }
            Format::Slin16 => Ok(FromBot::Audio(swap16(data))),
            Format::Ulaw | Format::Alaw => Ok(FromBot::Audio(data.to_vec())),
        }
    }
}

// The JSON events, keys in the order Asterisk packs them.

#[derive(Serialize)]
struct MediaStart<'a> {
    event: &'static str,
    connection_id: &'a str,
    channel: &'a str,
    channel_id: &'a str,
    format: &'static str,
    optimal_frame_size: usize,
    ptime: u32,
    channel_variables: Pairs<'a>,
}

#[derive(Serialize)]
struct BareEvent<'a> {
    event: &'static str,
    channel_id: &'a str,
}

#[derive(Serialize)]
struct CorrelatedEvent<'a> {
    event: &'static str,
    channel_id: &'a str,
    correlation_id: &'a str,
}

#[derive(Serialize)]
struct DtmfEvent<'a> {
    event: &'static str,
    channel_id: &'a str,
    digit: &'a str,
}

#[derive(Serialize)]
struct StatusEvent<'a> {
    event: &'static str,
    channel_id: &'a str,
    queue_length: usize,
    xon_level: usize,
    xoff_level: usize,
    queue_full: bool,
    bulk_media: bool,
    media_paused: bool,
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    event: &'static str,
    channel_id: &'a str,
    error_text: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::StreamIds;
    use serde_json::json;

    fn opening() -> Opening {
        Opening {
            call_id: "1764000000.17".into(),
            bot: "support".into(),
            channel_name: "PJSIP/alice-00000001".into(),
            caller_number: "+15551230000".into(),
            caller_name: "Alice".into(),
            exten: "100".into(),
            params: vec![("lang".into(), "fr".into())],
            ids: StreamIds::from_seed(1),
        }
    }

    fn started(format: Format, json: bool) -> ChanWebsocketCodec {
        let mut codec = ChanWebsocketCodec::new(format, json);
        codec.opening(&opening());
        codec
    }

    fn text(out: Option<Outgoing>) -> String {
        match out {
            Some(Outgoing::Text(text)) => text,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[test]
    fn media_start_in_json_carries_the_call_and_the_driver_variables() {
        let out = ChanWebsocketCodec::new(Format::Slin16, true).opening(&opening());
        let [Outgoing::Text(start)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(start.starts_with(r#"{"event":"MEDIA_START","connection_id":"support","channel":"#));
        let start: Value = serde_json::from_str(start).expect("JSON");
        assert_eq!(
            start,
            json!({
                "event": "MEDIA_START",
                "connection_id": "support",
                "channel": "PJSIP/alice-00000001",
                "channel_id": "1764000000.17",
                "format": "slin16",
                "optimal_frame_size": 640,
                "ptime": 20,
                "channel_variables": {
                    "call_id": "1764000000.17",
                    "caller_number": "+15551230000",
                    "caller_name": "Alice",
                    "exten": "100",
                    "from_number": "+15551230000",
                    "to_number": "100",
                    "lang": "fr",
                    "MEDIA_WEBSOCKET_CONNECTION_ID": "support",
                    "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "640"
                }
            })
        );
    }

    #[test]
    fn the_driver_variables_cannot_be_replaced_from_the_dialplan() {
        let mut o = opening();
        o.params
            .push(("MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE".into(), "1".into()));
        let out = ChanWebsocketCodec::new(Format::Ulaw, true).opening(&o);
        let [Outgoing::Text(start)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            start.matches("MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE").count(),
            1
        );
        let start: Value = serde_json::from_str(start).expect("JSON");
        assert_eq!(
            start["channel_variables"]["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"],
            "160"
        );
    }

    #[test]
    fn media_start_in_plain_text_is_one_line_without_variables() {
        let out = ChanWebsocketCodec::new(Format::Ulaw, false).opening(&opening());
        assert_eq!(
            out,
            [Outgoing::Text(
                "MEDIA_START connection_id:support channel:PJSIP/alice-00000001 channel_id:1764000000.17 \
                 format:ulaw optimal_frame_size:160 ptime:20"
                    .into()
            )]
        );
    }

    #[test]
    fn caller_slin16_goes_out_little_endian_and_ulaw_as_it_is() {
        let mut slin = started(Format::Slin16, true);
        assert_eq!(
            slin.encode(ToBot::CallerAudio(&[0x12, 0x34, 0xAB, 0xCD])),
            Some(Outgoing::Binary(vec![0x34, 0x12, 0xCD, 0xAB]))
        );
        let mut ulaw = started(Format::Ulaw, true);
        assert_eq!(
            ulaw.encode(ToBot::CallerAudio(&[1, 2, 3])),
            Some(Outgoing::Binary(vec![1, 2, 3]))
        );
        assert_eq!(ulaw.encode(ToBot::CallerAudio(&[])), None);
    }

    #[test]
    fn events_in_json_carry_the_channel_id() {
        let mut c = started(Format::Ulaw, true);
        let status = QueueStatus {
            queue_length: 12,
            xon_level: 800,
            xoff_level: 900,
            queue_full: false,
            bulk_media: true,
            media_paused: false,
        };
        let id = "1764000000.17";
        for (m, expected) in [
            (
                ToBot::Dtmf('#'),
                format!(r##"{{"event":"DTMF_END","channel_id":"{id}","digit":"#"}}"##),
            ),
            (
                ToBot::MarkPlayed("m1"),
                format!(
                    r#"{{"event":"MEDIA_MARK_PROCESSED","channel_id":"{id}","correlation_id":"m1"}}"#
                ),
            ),
            (
                ToBot::MarkPlayed(""),
                format!(
                    r#"{{"event":"MEDIA_MARK_PROCESSED","channel_id":"{id}","correlation_id":""}}"#
                ),
            ),
            (
                ToBot::BufferingCompleted(None),
                format!(
                    r#"{{"event":"MEDIA_BUFFERING_COMPLETED","channel_id":"{id}","correlation_id":""}}"#
                ),
            ),
            (
                ToBot::Xoff,
                format!(r#"{{"event":"MEDIA_XOFF","channel_id":"{id}"}}"#),
            ),
            (
                ToBot::Xon,
                format!(r#"{{"event":"MEDIA_XON","channel_id":"{id}"}}"#),
            ),
            (
                ToBot::QueueDrained,
                format!(r#"{{"event":"QUEUE_DRAINED","channel_id":"{id}"}}"#),
            ),
            (
                ToBot::Status(status),
                format!(
                    r#"{{"event":"STATUS","channel_id":"{id}","queue_length":12,"xon_level":800,"xoff_level":900,"queue_full":false,"bulk_media":true,"media_paused":false}}"#
                ),
            ),
            (
                ToBot::Error("Unable to parse JSON command"),
                format!(
                    r#"{{"event":"ERROR","channel_id":"{id}","error_text":"Unable to parse JSON command"}}"#
                ),
            ),
        ] {
            assert_eq!(text(c.encode(m)), expected, "{m:?}");
        }
    }

    #[test]
    fn events_in_plain_text_are_asterisks_single_lines() {
        let mut c = started(Format::Ulaw, false);
        let status = QueueStatus {
            queue_length: 3,
            xon_level: 800,
            xoff_level: 900,
            queue_full: true,
            bulk_media: false,
            media_paused: true,
        };
        for (m, expected) in [
            (
                ToBot::Dtmf('7'),
                "DTMF_END digit:7 channel_id:1764000000.17",
            ),
            (ToBot::MarkPlayed("m1"), "MEDIA_MARK_PROCESSED m1"),
            (ToBot::MarkPlayed(""), "MEDIA_MARK_PROCESSED"),
            (
                ToBot::BufferingCompleted(Some("b")),
                "MEDIA_BUFFERING_COMPLETED b",
            ),
            (ToBot::BufferingCompleted(None), "MEDIA_BUFFERING_COMPLETED"),
            (ToBot::Xoff, "MEDIA_XOFF"),
            (ToBot::Xon, "MEDIA_XON"),
            (ToBot::QueueDrained, "QUEUE_DRAINED"),
            (
                ToBot::Status(status),
                "STATUS channel_id:1764000000.17 queue_length:3 xon_level:800 xoff_level:900 \
                 queue_full:true bulk_media:false media_paused:true",
            ),
            (
                ToBot::Error("oops"),
                "ERROR channel_id:1764000000.17 error_text:oops",
            ),
        ] {
            assert_eq!(text(c.encode(m)), expected, "{m:?}");
        }
    }

    #[test]
    fn cleared_marks_and_stop_have_no_message() {
        let mut c = started(Format::Ulaw, true);
        assert_eq!(c.encode(ToBot::MarkCleared("m")), None);
        assert_eq!(c.encode(ToBot::Stop), None);
    }

    #[test]
    fn every_command_decodes_in_both_forms_whatever_the_configured_format() {
        for json_control in [true, false] {
            let mut c = started(Format::Ulaw, json_control);
            for (plain, json, expected) in [
                ("ANSWER", r#"{"command":"ANSWER"}"#, FromBot::Answer),
                ("HANGUP", r#"{"command":"HANGUP"}"#, FromBot::Hangup),
                (
                    "START_MEDIA_BUFFERING",
                    r#"{"command":"START_MEDIA_BUFFERING"}"#,
                    FromBot::StartBuffering,
                ),
                (
                    "STOP_MEDIA_BUFFERING",
                    r#"{"command":"STOP_MEDIA_BUFFERING"}"#,
                    FromBot::StopBuffering(None),
                ),
                (
                    "STOP_MEDIA_BUFFERING b1",
                    r#"{"command":"STOP_MEDIA_BUFFERING","correlation_id":"b1"}"#,
                    FromBot::StopBuffering(Some("b1".into())),
                ),
                (
                    "MARK_MEDIA m1",
                    r#"{"command":"MARK_MEDIA","correlation_id":"m1"}"#,
                    FromBot::Mark("m1".into()),
                ),
                (
                    "MARK_MEDIA",
                    r#"{"command":"MARK_MEDIA"}"#,
                    FromBot::Mark(String::new()),
                ),
                (
                    "FLUSH_MEDIA",
                    r#"{"command":"FLUSH_MEDIA"}"#,
                    FromBot::Clear,
                ),
                (
                    "REPORT_QUEUE_DRAINED",
                    r#"{"command":"REPORT_QUEUE_DRAINED"}"#,
                    FromBot::ReportQueueDrained,
                ),
                (
                    "GET_STATUS",
                    r#"{"command":"GET_STATUS"}"#,
                    FromBot::GetStatus,
                ),
                (
                    "PAUSE_MEDIA",
                    r#"{"command":"PAUSE_MEDIA"}"#,
                    FromBot::Pause,
                ),
                (
                    "CONTINUE_MEDIA",
                    r#"{"command":"CONTINUE_MEDIA"}"#,
                    FromBot::Continue,
                ),
                (
                    "TRANSFER sales",
                    r#"{"command":"TRANSFER","destination":"sales"}"#,
                    FromBot::Transfer(Some("sales".into())),
                ),
                (
                    "TRANSFER",
                    r#"{"command":"TRANSFER"}"#,
                    FromBot::Transfer(None),
                ),
            ] {
                assert_eq!(c.decode_text(plain), Ok(expected.clone()), "{plain}");
                assert_eq!(c.decode_text(json), Ok(expected), "{json}");
            }
        }
    }

    #[test]
    fn a_plain_argument_is_everything_after_the_first_space() {
        let mut c = started(Format::Ulaw, false);
        assert_eq!(
            c.decode_text("MARK_MEDIA end of answer"),
            Ok(FromBot::Mark("end of answer".into()))
        );
        assert_eq!(c.decode_text("ANSWER please"), Ok(FromBot::Answer));
    }

    #[test]
    fn blanks_around_a_command_are_stripped() {
        let mut c = started(Format::Ulaw, true);
        assert_eq!(c.decode_text("  HANGUP\r\n"), Ok(FromBot::Hangup));
        assert_eq!(
            c.decode_text("\t {\"command\":\"HANGUP\"}\n"),
            Ok(FromBot::Hangup)
        );
        assert_eq!(c.decode_text(""), Err(Bad::Empty));
        assert_eq!(c.decode_text(" \r\n"), Err(Bad::Empty));
    }

    #[test]
    fn commands_are_case_sensitive() {
        let mut c = started(Format::Ulaw, true);
        assert_eq!(
            c.decode_text("hangup"),
            Err(Bad::UnknownCommand(Snippet::of("hangup")))
        );
        assert_eq!(
            c.decode_text(r#"{"command":"Answer"}"#),
            Err(Bad::UnknownCommand(Snippet::of("Answer")))
        );
    }

    #[test]
    fn a_text_message_over_128_bytes_is_skipped_even_as_json() {
        let mut c = started(Format::Ulaw, true);
        let at_limit = format!("MARK_MEDIA {}", "x".repeat(MAX_TEXT_BYTES - 11));
        assert_eq!(at_limit.len(), 128);
        assert!(matches!(c.decode_text(&at_limit), Ok(FromBot::Mark(_))));
        let over = format!("{at_limit}y");
        assert_eq!(c.decode_text(&over), Err(Bad::TooLong { bytes: 129 }));
        let json = format!(
            r#"{{"command":"MARK_MEDIA","correlation_id":"{}"}}"#,
            "x".repeat(100)
        );
        assert_eq!(c.decode_text(&json).map_err(|b| b.kind()), Err("too_long"));
    }

    #[test]
    fn a_correlation_id_that_is_not_a_string_counts_as_none() {
        let mut c = started(Format::Ulaw, true);
        assert_eq!(
            c.decode_text(r#"{"command":"MARK_MEDIA","correlation_id":5}"#),
            Ok(FromBot::Mark(String::new()))
        );
        assert_eq!(
            c.decode_text(r#"{"command":"STOP_MEDIA_BUFFERING","correlation_id":null}"#),
            Ok(FromBot::StopBuffering(None))
        );
    }

    #[test]
    fn broken_json_commands_are_refused_with_their_reason() {
        let mut c = started(Format::Ulaw, true);
        assert_eq!(
            c.decode_text(r#"{"command":"ANSWER""#)
                .map_err(|b| b.kind()),
            Err("not_json")
        );
        assert_eq!(
            c.decode_text(r#"{"cmd":"ANSWER"}"#),
            Err(Bad::Malformed { field: "command" })
        );
        assert_eq!(
            c.decode_text(r#"{"command":7}"#),
            Err(Bad::Malformed { field: "command" })
        );
        assert_eq!(
            c.decode_text(r#"{"command":"TRANSFER","destination":["a"]}"#),
            Err(Bad::Malformed {
                field: "destination"
            })
        );
        assert_eq!(
            c.decode_text(r#"{"command":"TRANSFER","destination":null}"#),
            Ok(FromBot::Transfer(None))
        );
    }

    #[test]
    fn set_media_direction_is_understood_but_not_supported() {
        let mut c = started(Format::Ulaw, true);
        let ignored = c.decode_text(r#"{"command":"SET_MEDIA_DIRECTION","direction":"in"}"#);
        assert!(matches!(ignored, Ok(FromBot::Ignored(_))), "{ignored:?}");
    }

    #[test]
    fn swapping_sample_bytes_twice_gives_back_the_audio_and_drops_a_half_sample() {
        let le = [0x01, 0x02, 0x03, 0x04, 0x05];
        assert_eq!(swap16(&le), [0x02, 0x01, 0x04, 0x03]);
        assert_eq!(swap16(&swap16(&le[..4])), &le[..4]);
    }

    #[test]
    fn bot_slin16_comes_in_little_endian_and_leaves_big_endian() {
        let mut c = started(Format::Slin16, true);
        assert_eq!(
            c.decode_binary(&[0x34, 0x12, 0xCD, 0xAB]),
            Ok(FromBot::Audio(vec![0x12, 0x34, 0xAB, 0xCD]))
        );
        assert_eq!(
            c.decode_binary(&[1, 2, 3]),
            Err(Bad::PartialSample { bytes: 3 })
        );
        assert!(matches!(c.decode_binary(&[]), Ok(FromBot::Ignored(_))));
        let mut a = started(Format::Alaw, true);
        assert_eq!(
            a.decode_binary(&[1, 2, 3]),
            Ok(FromBot::Audio(vec![1, 2, 3]))
        );
    }
}
