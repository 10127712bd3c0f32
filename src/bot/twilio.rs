//! Twilio Media Streams, bidirectional: voicebot1 speaks as Twilio does after `<Connect><Stream>`.
//!
//! Every message is a JSON text frame. voicebot1 sends `connected`, `start`, then `media` (one per
//! caller RTP packet), `dtmf`, `mark` and finally `stop`, with the shapes and key order of
//! Twilio's own messages; every message after `connected` carries `sequenceNumber`, a string
//! counting from "1" (so `start` is "1"), and every message after `start` the `streamSid`. In
//! `media`, `chunk` counts media messages from "1" and `timestamp` is the milliseconds of caller
//! audio sent before this chunk (the first is "0"), both strings; Twilio's own timestamps follow
//! its clock, these follow the audio.
//!
//! From the bot: `media` (base64 audio of any length), `mark`, `clear`, and voicebot1's extensions
//! `transfer` (`{"event":"transfer","transfer":{"to":"sales"}}`, `to` optional) and `hangup`.
//! `streamSid` may be left out (one connection carries one stream); a `streamSid` that is not
//! this stream's is refused, as Twilio refuses it (warning 31951). Unknown fields are ignored.
//!
//! Hot path: `encode(CallerAudio)` runs 50 times a second per call. It builds the `media`
//! message by hand into one `String` sized up front, base64 written straight into it; decoding
//! a bot's `media` borrows the payload from the frame's text and allocates only the audio.

use std::borrow::Cow;
use std::fmt::{self, Write};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::{to_json, Bad, Codec, Format, FromBot, Opening, Outgoing, Pairs, Snippet, ToBot};

/// Base64 as Twilio writes it (standard alphabet, padded); reading also takes it unpadded.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Per-stream state: the ids to echo and the counters of the messages sent so far.
pub struct TwilioCodec {
    format: Format,
    account_sid: String,
    call_sid: String,
    stream_sid: String,
    /// `streamSid` as a JSON string, quotes included, to paste into hand-built messages.
    stream_sid_json: String,
    /// The last `sequenceNumber` sent (0 before `start`).
    sequence: u64,
    /// The last `media.chunk` sent.
    chunk: u64,
    /// Caller samples sent so far, the clock of `media.timestamp`.
    samples: u64,
}

impl TwilioCodec {
    pub fn new(format: Format) -> TwilioCodec {
        TwilioCodec {
            format,
            account_sid: String::new(),
            call_sid: String::new(),
            stream_sid: String::new(),
            stream_sid_json: String::from("\"\""),
            sequence: 0,
            chunk: 0,
            samples: 0,
        }
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// `mediaFormat.encoding` and `sampleRate`. Twilio only ever says μ-law at 8000 Hz; the other
    /// two are voicebot1's own labels for configurations no Twilio bot expects (see
    /// `Dialect::supports`): a-law, and L16, whose MIME type is big-endian like RTP.
    fn media_format(&self) -> (&'static str, u32) {
        match self.format {
            Format::Ulaw => ("audio/x-mulaw", 8000),
            Format::Alaw => ("audio/x-alaw", 8000),
            Format::Slin16 => ("audio/x-l16", 16000),
        }
    }

    fn media(&mut self, payload: &[u8]) -> String {
        let sequence = self.next_sequence();
        self.chunk += 1;
        let timestamp_ms = self.samples * 1000 / u64::from(self.format.rate());
        self.samples += (payload.len() / self.format.sample_bytes()) as u64;

        let base64_len = payload.len().div_ceil(3) * 4;
        let mut text = String::with_capacity(140 + self.stream_sid_json.len() + base64_len);
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            r#"{{"event":"media","sequenceNumber":"{sequence}","media":{{"track":"inbound","chunk":"{}","timestamp":"{timestamp_ms}","payload":""#,
            self.chunk
        );
        BASE64.encode_string(payload, &mut text);
        text.push_str(r#""},"streamSid":"#);
        text.push_str(&self.stream_sid_json);
        text.push('}');
        text
    }

    fn mark(&mut self, name: &str) -> String {
        let sequence = self.next_sequence().to_string();
        to_json(&MarkOut {
            event: "mark",
            sequence_number: &sequence,
            stream_sid: &self.stream_sid,
            mark: NameOut { name },
        })
    }

    fn audio(&self, payload: &str) -> Result<FromBot, Bad> {
        let mut audio = Vec::with_capacity(payload.len() / 4 * 3 + 3);
        BASE64
            .decode_vec(payload, &mut audio)
            .map_err(|_| Bad::BadBase64)?;
        if audio.is_empty() {
            return Ok(FromBot::Ignored("media with an empty payload"));
        }
        if !audio.len().is_multiple_of(self.format.sample_bytes()) {
            return Err(Bad::PartialSample { bytes: audio.len() });
        }
        // μ-law and a-law bytes, or L16 already big-endian: RTP byte order as it is.
        Ok(FromBot::Audio(audio))
    }
}

impl Codec for TwilioCodec {
    fn opening(&mut self, o: &Opening) -> Vec<Outgoing> {
        self.account_sid = o.ids.account_sid.clone();
        self.call_sid = o.ids.call_sid.clone();
        self.stream_sid = o.ids.stream_sid.clone();
        self.stream_sid_json = to_json(&self.stream_sid);
        self.sequence = 0;
        self.chunk = 0;
        self.samples = 0;

        let connected = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
        let sequence = self.next_sequence().to_string();
        let (encoding, sample_rate) = self.media_format();
        let parameters = o.parameters();
        let start = to_json(&StartOut {
            event: "start",
            sequence_number: &sequence,
            start: StartBody {
                account_sid: &self.account_sid,
                stream_sid: &self.stream_sid,
                call_sid: &self.call_sid,
                tracks: ["inbound"],
                media_format: MediaFormat {
                    encoding,
                    sample_rate,
                    channels: 1,
                },
                custom_parameters: Pairs(&parameters),
            },
            stream_sid: &self.stream_sid,
        });
        vec![Outgoing::Text(connected.to_owned()), Outgoing::Text(start)]
    }

    fn encode(&mut self, m: ToBot) -> Option<Outgoing> {
        let text = match m {
            ToBot::CallerAudio([]) => return None,
            ToBot::CallerAudio(payload) => self.media(payload),
            ToBot::Dtmf(digit) => {
                let sequence = self.next_sequence().to_string();
                let mut buf = [0u8; 4];
                to_json(&DtmfOut {
                    event: "dtmf",
                    stream_sid: &self.stream_sid,
                    sequence_number: &sequence,
                    dtmf: DtmfBody {
                        track: "inbound_track",
                        digit: digit.encode_utf8(&mut buf),
                    },
                })
            }
            // Twilio answers the marks a `clear` dropped as it answers played ones.
            ToBot::MarkPlayed(name) | ToBot::MarkCleared(name) => self.mark(name),
            ToBot::Stop => {
                let sequence = self.next_sequence().to_string();
                to_json(&StopOut {
                    event: "stop",
                    sequence_number: &sequence,
                    stop: StopBody {
                        account_sid: &self.account_sid,
                        call_sid: &self.call_sid,
                    },
                    stream_sid: &self.stream_sid,
                })
            }
            ToBot::Xoff
            | ToBot::Xon
            | ToBot::QueueDrained
            | ToBot::Status(_)
            | ToBot::BufferingCompleted(_)
            | ToBot::Error(_) => return None,
        };
        Some(Outgoing::Text(text))
    }

    fn decode_text(&mut self, text: &str) -> Result<FromBot, Bad> {
        let message: BotMessage = serde_json::from_str(text).map_err(|_| diagnose(text))?;
        if let Some(Str(sid)) = &message.stream_sid {
            if *sid != self.stream_sid {
                return Err(Bad::WrongStreamSid(Snippet::of(sid)));
            }
        }
        match &*message.event.0 {
            "media" => match message.media.and_then(|m| m.payload) {
                Some(Str(payload)) => self.audio(&payload),
                None => Err(Bad::Malformed {
                    field: "media.payload",
                }),
            },
            "mark" => match message.mark.and_then(|m| m.name) {
                Some(Str(name)) => Ok(FromBot::Mark(name.into_owned())),
                None => Err(Bad::Malformed { field: "mark.name" }),
            },
            "clear" => Ok(FromBot::Clear),
            "transfer" => Ok(FromBot::Transfer(
                message
                    .transfer
                    .and_then(|t| t.to)
                    .map(|Str(to)| to.into_owned()),
            )),
            "hangup" => Ok(FromBot::Hangup),
            other => Err(Bad::UnknownEvent(Snippet::of(other))),
        }
    }

    fn decode_binary(&mut self, data: &[u8]) -> Result<FromBot, Bad> {
        // Twilio: "WebSocket binary format is used" is warning 31950; the frame is dropped.
        Err(Bad::BinaryFrame { bytes: data.len() })
    }
}

/// Names the first field of `text` that does not fit [`BotMessage`]. Only runs once the typed
/// parse failed, so the usual message pays for no `Value`.
fn diagnose(text: &str) -> Bad {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => return Bad::NotJson(Snippet::of(text)),
    };
    let Some(message) = value.as_object() else {
        return Bad::NotJson(Snippet::of(text));
    };
    if !message.get("event").is_some_and(|e| e.is_string()) {
        return Bad::Malformed { field: "event" };
    }
    if present(message.get("streamSid")).is_some_and(|s| !s.is_string()) {
        return Bad::Malformed { field: "streamSid" };
    }
    fn present(v: Option<&serde_json::Value>) -> Option<&serde_json::Value> {
        v.filter(|v| !v.is_null())
    }
    for (object, inner, field) in [
        ("media", "payload", "media.payload"),
        ("mark", "name", "mark.name"),
        ("transfer", "to", "transfer.to"),
    ] {
        if let Some(found) = present(message.get(object)) {
            let Some(found) = found.as_object() else {
                return Bad::Malformed { field: object };
            };
            if present(found.get(inner)).is_some_and(|v| !v.is_string()) {
                return Bad::Malformed { field };
            }
        }
    }
    // What is left is what serde_json refuses and a Value takes, e.g. a repeated key.
    Bad::Malformed { field: "message" }
}

/// A JSON string borrowed from the message when it has no escapes, copied when it has: a
/// base64 payload may legally be written with `\/` for `/`, which a plain `&str` field cannot
/// take.
#[derive(Debug)]
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Str<'a>, D::Error> {
        struct StrVisitor;

        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(StrVisitor)
    }
}

/// A bot's message. Every field is optional here so that the one a given event needs is named
/// when it is missing; unknown fields are ignored.
#[derive(Deserialize)]
struct BotMessage<'a> {
    #[serde(borrow)]
    event: Str<'a>,
    #[serde(borrow, default, rename = "streamSid")]
    stream_sid: Option<Str<'a>>,
    #[serde(borrow, default)]
    media: Option<MediaIn<'a>>,
    #[serde(borrow, default)]
    mark: Option<MarkIn<'a>>,
    #[serde(borrow, default)]
    transfer: Option<TransferIn<'a>>,
}

#[derive(Deserialize)]
struct MediaIn<'a> {
    #[serde(borrow, default)]
    payload: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct MarkIn<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct TransferIn<'a> {
    #[serde(borrow, default)]
    to: Option<Str<'a>>,
}

// What voicebot1 sends, with the keys in the order of Twilio's own messages.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StartOut<'a> {
    event: &'static str,
    sequence_number: &'a str,
    start: StartBody<'a>,
    stream_sid: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StartBody<'a> {
    account_sid: &'a str,
    stream_sid: &'a str,
    call_sid: &'a str,
    tracks: [&'static str; 1],
    media_format: MediaFormat,
    custom_parameters: Pairs<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MediaFormat {
    encoding: &'static str,
    sample_rate: u32,
    channels: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DtmfOut<'a> {
    event: &'static str,
    stream_sid: &'a str,
    sequence_number: &'a str,
    dtmf: DtmfBody<'a>,
}

#[derive(Serialize)]
struct DtmfBody<'a> {
    track: &'static str,
    digit: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MarkOut<'a> {
    event: &'static str,
    sequence_number: &'a str,
    stream_sid: &'a str,
    mark: NameOut<'a>,
}

#[derive(Serialize)]
struct NameOut<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StopOut<'a> {
    event: &'static str,
    sequence_number: &'a str,
    stop: StopBody<'a>,
    stream_sid: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StopBody<'a> {
    account_sid: &'a str,
    call_sid: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::StreamIds;
    use serde_json::{json, Value};

    fn opening() -> Opening {
        Opening {
            call_id: "1764000000.17".into(),
            bot: "support".into(),
            channel_name: "PJSIP/alice-00000001".into(),
            caller_number: "+15551230000".into(),
            caller_name: "Alice".into(),
            exten: "100".into(),
            params: vec![
                ("bot".into(), "support".into()),
                ("lang".into(), "fr".into()),
            ],
            ids: StreamIds {
                account_sid: "AC00000000000000000000000000000001".into(),
                call_sid: "CA00000000000000000000000000000002".into(),
                stream_sid: "MZ00000000000000000000000000000003".into(),
            },
        }
    }

    const SID: &str = "MZ00000000000000000000000000000003";

    fn started() -> TwilioCodec {
        let mut codec = TwilioCodec::new(Format::Ulaw);
        codec.opening(&opening());
        codec
    }

    fn text(out: Option<Outgoing>) -> String {
        match out {
            Some(Outgoing::Text(text)) => text,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    fn json_of(out: Option<Outgoing>) -> Value {
        serde_json::from_str(&text(out)).expect("valid JSON")
    }

    #[test]
    fn opening_is_connected_then_start_with_sequence_number_one() {
        let out = TwilioCodec::new(Format::Ulaw).opening(&opening());
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            Outgoing::Text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into())
        );
        let Outgoing::Text(start) = &out[1] else {
            panic!("text")
        };
        assert!(
            start.starts_with(r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"#)
        );
        let start: Value = serde_json::from_str(start).expect("JSON");
        assert_eq!(
            start,
            json!({
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC00000000000000000000000000000001",
                    "streamSid": SID,
                    "callSid": "CA00000000000000000000000000000002",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {
                        "call_id": "1764000000.17",
                        "caller_number": "+15551230000",
                        "caller_name": "Alice",
                        "exten": "100",
                        "from_number": "+15551230000",
                        "to_number": "100",
                        "bot": "support",
                        "lang": "fr"
                    }
                },
                "streamSid": SID
            })
        );
    }

    #[test]
    fn custom_parameters_keep_the_dialplan_order_on_the_wire() {
        let out = TwilioCodec::new(Format::Ulaw).opening(&opening());
        let Outgoing::Text(start) = &out[1] else {
            panic!("text")
        };
        let at = |key: &str| start.find(&format!("\"{key}\"")).expect(key);
        assert!(
            at("call_id") < at("to_number")
                && at("to_number") < at("bot")
                && at("bot") < at("lang")
        );
    }

    #[test]
    fn caller_media_counts_sequence_chunk_and_milliseconds_as_strings() {
        let mut codec = started();
        let frame = [0x7Fu8; 160];
        for (n, timestamp) in [(1u64, "0"), (2, "20"), (3, "40")] {
            let media = json_of(codec.encode(ToBot::CallerAudio(&frame)));
            assert_eq!(media["event"], "media");
            assert_eq!(media["sequenceNumber"], (n + 1).to_string().as_str());
            assert_eq!(media["streamSid"], SID);
            assert_eq!(media["media"]["track"], "inbound");
            assert_eq!(media["media"]["chunk"], n.to_string().as_str());
            assert_eq!(media["media"]["timestamp"], timestamp);
            let payload = media["media"]["payload"].as_str().expect("payload");
            assert_eq!(BASE64.decode(payload).expect("base64"), frame);
        }
    }

    #[test]
    fn caller_media_keeps_twilios_key_order() {
        let mut codec = started();
        let media = text(codec.encode(ToBot::CallerAudio(&[0xFF, 0x00, 0x7F])));
        assert_eq!(
            media,
            format!(
                r#"{{"event":"media","sequenceNumber":"2","media":{{"track":"inbound","chunk":"1","timestamp":"0","payload":"/wB/"}},"streamSid":"{SID}"}}"#
            )
        );
    }

    #[test]
    fn media_timestamps_follow_the_audio_sent_not_the_message_count() {
        let mut codec = started();
        codec.encode(ToBot::CallerAudio(&[0; 240])); // 30 ms
        let media = json_of(codec.encode(ToBot::CallerAudio(&[0; 160])));
        assert_eq!(media["media"]["timestamp"], "30");
        assert_eq!(codec.encode(ToBot::CallerAudio(&[])), None);
    }

    #[test]
    fn dtmf_mark_and_stop_continue_the_sequence() {
        let mut codec = started();
        codec.encode(ToBot::CallerAudio(&[0; 160])); // 2
        let dtmf = json_of(codec.encode(ToBot::Dtmf('5')));
        assert_eq!(
            dtmf,
            json!({"event": "dtmf", "streamSid": SID, "sequenceNumber": "3",
                   "dtmf": {"track": "inbound_track", "digit": "5"}})
        );
        let mark = json_of(codec.encode(ToBot::MarkPlayed("greeting")));
        assert_eq!(
            mark,
            json!({"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "greeting"}})
        );
        let cleared = json_of(codec.encode(ToBot::MarkCleared("dropped")));
        assert_eq!(cleared["mark"]["name"], "dropped");
        assert_eq!(cleared["sequenceNumber"], "5");
        let stop = json_of(codec.encode(ToBot::Stop));
        assert_eq!(
            stop,
            json!({"event": "stop", "sequenceNumber": "6",
                   "stop": {"accountSid": "AC00000000000000000000000000000001",
                            "callSid": "CA00000000000000000000000000000002"},
                   "streamSid": SID})
        );
    }

    #[test]
    fn chan_websocket_events_have_no_twilio_message() {
        let mut codec = started();
        let status = crate::bot::QueueStatus {
            queue_length: 0,
            xon_level: 800,
            xoff_level: 900,
            queue_full: false,
            bulk_media: false,
            media_paused: false,
        };
        for m in [
            ToBot::Xoff,
            ToBot::Xon,
            ToBot::QueueDrained,
            ToBot::Status(status),
            ToBot::BufferingCompleted(Some("x")),
            ToBot::Error("e"),
        ] {
            assert_eq!(codec.encode(m), None, "{m:?}");
        }
        // Nothing was sent, so nothing was counted.
        assert_eq!(
            json_of(codec.encode(ToBot::Dtmf('1')))["sequenceNumber"],
            "2"
        );
    }

    #[test]
    fn bot_media_decodes_to_audio() {
        let mut codec = started();
        let message =
            format!(r#"{{"event":"media","streamSid":"{SID}","media":{{"payload":"/wB/"}}}}"#);
        assert_eq!(
            codec.decode_text(&message),
            Ok(FromBot::Audio(vec![0xFF, 0x00, 0x7F]))
        );
    }

    #[test]
    fn bot_media_as_pipecat_writes_it_decodes() {
        // Python's json.dumps: ", " and ": " separators, keys in insertion order.
        let mut codec = started();
        let message = format!(
            r#"{{"event": "media", "streamSid": "{SID}", "media": {{"payload": "AAECAw=="}}}}"#
        );
        assert_eq!(
            codec.decode_text(&message),
            Ok(FromBot::Audio(vec![0, 1, 2, 3]))
        );
    }

    #[test]
    fn a_payload_with_escaped_slashes_or_no_padding_still_decodes() {
        let mut codec = started();
        let escaped = r#"{"event":"media","media":{"payload":"\/wB\/"}}"#;
        assert_eq!(
            codec.decode_text(escaped),
            Ok(FromBot::Audio(vec![0xFF, 0x00, 0x7F]))
        );
        let unpadded = r#"{"event":"media","media":{"payload":"AAECAw"}}"#;
        assert_eq!(
            codec.decode_text(unpadded),
            Ok(FromBot::Audio(vec![0, 1, 2, 3]))
        );
    }

    #[test]
    fn a_message_without_stream_sid_is_accepted_and_a_foreign_one_refused() {
        let mut codec = started();
        assert_eq!(
            codec.decode_text(r#"{"event":"clear"}"#),
            Ok(FromBot::Clear)
        );
        let foreign = r#"{"event":"media","streamSid":"MZffffffffffffffffffffffffffffffff","media":{"payload":"AA=="}}"#;
        let bad = codec.decode_text(foreign).unwrap_err();
        assert_eq!(bad.kind(), "wrong_stream_sid");
        assert!(bad.to_string().contains("MZffff"), "{bad}");
    }

    #[test]
    fn mark_clear_transfer_and_hangup_decode() {
        let mut codec = started();
        let decode = |codec: &mut TwilioCodec, text: String| codec.decode_text(&text);
        assert_eq!(
            decode(
                &mut codec,
                format!(r#"{{"event":"mark","streamSid":"{SID}","mark":{{"name":"x"}}}}"#)
            ),
            Ok(FromBot::Mark("x".into()))
        );
        assert_eq!(
            decode(
                &mut codec,
                format!(r#"{{"event":"clear","streamSid":"{SID}"}}"#)
            ),
            Ok(FromBot::Clear)
        );
        assert_eq!(
            decode(
                &mut codec,
                r#"{"event":"transfer","transfer":{"to":"sales"}}"#.into()
            ),
            Ok(FromBot::Transfer(Some("sales".into())))
        );
        assert_eq!(
            decode(&mut codec, r#"{"event":"transfer"}"#.into()),
            Ok(FromBot::Transfer(None))
        );
        assert_eq!(
            decode(&mut codec, r#"{"event":"transfer","transfer":{}}"#.into()),
            Ok(FromBot::Transfer(None))
        );
        assert_eq!(
            decode(
                &mut codec,
                format!(r#"{{"event":"hangup","streamSid":"{SID}"}}"#)
            ),
            Ok(FromBot::Hangup)
        );
    }

    #[test]
    fn each_malformed_message_names_its_field() {
        let mut codec = started();
        for (message, field) in [
            (r#"{"streamSid":"x"}"#, "event"),
            (r#"{"event":5}"#, "event"),
            (r#"{"event":"media"}"#, "media.payload"),
            (r#"{"event":"media","media":{}}"#, "media.payload"),
            (r#"{"event":"media","media":"AAAA"}"#, "media"),
            (
                r#"{"event":"media","media":{"payload":7}}"#,
                "media.payload",
            ),
            (r#"{"event":"mark","mark":{}}"#, "mark.name"),
            (r#"{"event":"mark","mark":{"name":["x"]}}"#, "mark.name"),
            (r#"{"event":"clear","streamSid":12}"#, "streamSid"),
            (r#"{"event":"transfer","transfer":{"to":1}}"#, "transfer.to"),
            (r#"{"event":"transfer","transfer":"sales"}"#, "transfer"),
            (r#"{"event":"clear","event":"clear"}"#, "message"),
        ] {
            assert_eq!(
                codec.decode_text(message),
                Err(Bad::Malformed { field }),
                "{message}"
            );
        }
    }

    #[test]
    fn text_that_is_not_a_json_object_is_not_json() {
        let mut codec = started();
        for message in ["hello", "", "[1,2]", "\"media\"", "{\"event\":"] {
            assert_eq!(
                codec.decode_text(message).map_err(|b| b.kind()),
                Err("not_json"),
                "{message}"
            );
        }
    }

    #[test]
    fn unknown_events_bad_base64_and_binary_frames_are_refused() {
        let mut codec = started();
        let unknown = codec.decode_text(r#"{"event":"start"}"#).unwrap_err();
        assert_eq!(unknown, Bad::UnknownEvent(Snippet::of("start")));
        let base64 = codec.decode_text(r#"{"event":"media","media":{"payload":"not base64!"}}"#);
        assert_eq!(base64, Err(Bad::BadBase64));
        assert_eq!(
            codec.decode_binary(&[1, 2, 3]),
            Err(Bad::BinaryFrame { bytes: 3 })
        );
    }

    #[test]
    fn an_empty_payload_is_ignored() {
        let mut codec = started();
        let empty = codec.decode_text(r#"{"event":"media","media":{"payload":""}}"#);
        assert!(matches!(empty, Ok(FromBot::Ignored(_))), "{empty:?}");
    }

    #[test]
    fn l16_audio_must_be_whole_samples_and_stays_big_endian() {
        let mut codec = TwilioCodec::new(Format::Slin16);
        codec.opening(&opening());
        let odd = codec.decode_text(r#"{"event":"media","media":{"payload":"AAEC"}}"#);
        assert_eq!(odd, Err(Bad::PartialSample { bytes: 3 }));
        let even = codec.decode_text(r#"{"event":"media","media":{"payload":"AAECAw=="}}"#);
        assert_eq!(even, Ok(FromBot::Audio(vec![0, 1, 2, 3])));
        let start = match &codec.opening(&opening())[1] {
            Outgoing::Text(text) => serde_json::from_str::<Value>(text).expect("JSON"),
            other => panic!("{other:?}"),
        };
        assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-l16");
        assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 16000);
        let media = json_of(codec.encode(ToBot::CallerAudio(&[0u8; 640])));
        assert_eq!(media["media"]["timestamp"], "0");
        let media = json_of(codec.encode(ToBot::CallerAudio(&[0u8; 640])));
        assert_eq!(media["media"]["timestamp"], "20");
    }

    #[test]
    fn a_stream_sid_with_json_specials_is_escaped_in_media() {
        let mut codec = TwilioCodec::new(Format::Ulaw);
        let mut o = opening();
        o.ids.stream_sid = "MZ\"quoted\\".into();
        codec.opening(&o);
        let media = json_of(codec.encode(ToBot::CallerAudio(&[0; 160])));
        assert_eq!(media["streamSid"], "MZ\"quoted\\");
    }
}
