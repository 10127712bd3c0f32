//! The bot protocols: what voicebot1 tells a voice bot over its WebSocket, what it understands
//! back, and the queue that plays the bot's audio to the caller.
//!
//! voicebot1 plays the telephony side, as Twilio Media Streams ([`Dialect::Twilio`]) or Asterisk's
//! chan_websocket in client mode ([`Dialect::Asterisk`]) would: a bot written for either works
//! unchanged, plus two extension messages (transfer, hangup). Each dialect's module says which
//! public source its rules come from (Twilio's docs, asterisk's `channels/chan_websocket.c`).
//!
//! One session thread per call owns the socket, the 20 ms RTP clock, one `Box<dyn Codec>` (from
//! [`codec`]) and one [`playout::Playout`]. Per call it:
//! - sends [`Codec::opening`] once connected, then `encode(ToBot::CallerAudio(rtp_payload))` for
//!   every RTP packet from Asterisk;
//! - feeds every frame it reads to `decode_text`/`decode_binary` and acts on the [`FromBot`]
//!   (audio and marks go to the playout; a [`Bad`] is logged and counted, and the call goes on);
//! - every 20 ms takes `Playout::next_frame` and sends what its [`playout::Tick`] reports
//!   (marks reached, XON, QUEUE_DRAINED) through `encode`; `encode` returns `None` for what the
//!   dialect has no message for, so the session never asks which dialect it speaks.
//!
//! Invariants:
//! - Pure: no I/O, no threads, no clock, no randomness (the caller supplies the seed of the ids).
//! - Imports nothing from the rest of the crate but `audio` (the layering test keeps it so:
//!   `bot` is in layer 1, above only the leaves).
//! - A bot is an untrusted remote service: nothing it sends can panic here. A message that cannot
//!   be used becomes a [`Bad`]: a closed set of [`Bad::kind`] labels for metrics and a one-line
//!   `Display` that quotes at most [`Snippet::MAX`] bytes of the bot's text, sanitized.
//! - Audio crosses this module in RTP byte order ([`FromBot::Audio`], [`ToBot::CallerAudio`],
//!   the playout): slin16 is big-endian there (RFC 3551 L16), as Asterisk's RTP stack sends and
//!   expects it; the codecs convert at the wire (chan_websocket's slin16 is little-endian).

pub mod chan_websocket;
pub mod playout;
pub mod twilio;

use std::fmt;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

pub use crate::audio::Format;

/// Which wire protocol a bot speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Twilio Media Streams, bidirectional (`<Connect><Stream>`): JSON text frames only.
    Twilio,
    /// Asterisk's chan_websocket (20.18/22.8 and later): binary audio, text control messages.
    Asterisk,
}

impl Dialect {
    /// The name used in voicebot1's configuration.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Twilio => "twilio",
            Dialect::Asterisk => "asterisk",
        }
    }

    pub fn from_name(name: &str) -> Option<Dialect> {
        match name {
            "twilio" => Some(Dialect::Twilio),
            "asterisk" => Some(Dialect::Asterisk),
            _ => None,
        }
    }

    /// Whether a bot of this dialect can expect this format. Twilio streams are always
    /// `audio/x-mulaw` at 8000 Hz (Twilio's docs, `start.mediaFormat`), and Twilio bots (Pipecat's
    /// serializer among them) decode μ-law whatever `start` says; configuration should refuse
    /// the other formats for twilio bots. chan_websocket carries any Asterisk format.
    pub fn supports(self, format: Format) -> bool {
        match self {
            Dialect::Twilio => format == Format::Ulaw,
            Dialect::Asterisk => true,
        }
    }
}

/// Twilio's three ids of a stream: two letters and 32 lowercase hex digits each (Twilio's REST
/// docs give the pattern `^MZ[0-9a-fA-F]{32}$`; Twilio itself writes lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIds {
    pub account_sid: String,
    pub call_sid: String,
    pub stream_sid: String,
}

impl StreamIds {
    /// Formats three ids from one seed the caller drew at random. Each id is a different bijective
    /// mix of the seed, so two seeds never give the same stream sid (nor call sid).
    pub fn from_seed(seed: u128) -> StreamIds {
        StreamIds {
            account_sid: sid("AC", mix(seed ^ 0x0AC0_0AC0_0AC0_0AC0_0AC0_0AC0_0AC0_0AC0)),
            call_sid: sid("CA", mix(seed ^ 0x0CA0_0CA0_0CA0_0CA0_0CA0_0CA0_0CA0_0CA0)),
            stream_sid: sid("MZ", mix(seed ^ 0x0A20_0A20_0A20_0A20_0A20_0A20_0A20_0A20)),
        }
    }
}

fn sid(prefix: &str, value: u128) -> String {
    format!("{prefix}{value:032x}")
}

/// A bijection of u128 that spreads every input bit over the output (xor-shifts and odd
/// multipliers are each invertible), so ids from counter-like seeds do not look alike.
fn mix(mut x: u128) -> u128 {
    x ^= x >> 67;
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    x ^= x >> 59;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9_94D0_49BB_1331_11EB);
    x ^= x >> 71;
    x
}

/// Everything the first messages tell the bot about its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// Asterisk's unique id of the caller's channel (voicebot1's call id).
    pub call_id: String,
    /// The bot's name in voicebot1's configuration. chan_websocket announces it as
    /// `connection_id`, where Asterisk announces the websocket_client.conf section it dialled.
    pub bot: String,
    /// The caller's channel name, e.g. `PJSIP/alice-00000001`.
    pub channel_name: String,
    pub caller_number: String,
    pub caller_name: String,
    /// The extension the caller dialled.
    pub exten: String,
    /// The `key=value` arguments of the dialplan's `Stasis(voicebot1,…)`, in order.
    pub params: Vec<(String, String)>,
    pub ids: StreamIds,
}

impl Opening {
    /// The string pairs a bot receives: Twilio's `start.customParameters`, chan_websocket's
    /// `channel_variables`. voicebot1's own keys come first and win over a dialplan argument of
    /// the same name (a dialplan cannot pass another `call_id`); among the arguments, the last of
    /// a repeated key wins, as in an assignment. `from_number`/`to_number` repeat the caller's
    /// number and the extension because Pipecat's runner promotes exactly those two parameters to
    /// `call_data.from_number`/`to_number` (pipecat `src/pipecat/runner/utils.py`).
    pub fn parameters(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = vec![
            ("call_id", &self.call_id),
            ("caller_number", &self.caller_number),
            ("caller_name", &self.caller_name),
            ("exten", &self.exten),
            ("from_number", &self.caller_number),
            ("to_number", &self.exten),
        ];
        let ours = out.len();
        for (key, value) in &self.params {
            if out[..ours].iter().any(|(k, _)| k == key) {
                continue;
            }
            match out[ours..].iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => out.push((key, value)),
            }
        }
        out
    }
}

/// One WebSocket message for the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
}

/// What voicebot1 tells the bot. The codec of a dialect without such a message returns `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToBot<'a> {
    /// One RTP payload from Asterisk, in RTP byte order (slin16 big-endian).
    CallerAudio(&'a [u8]),
    /// The caller pressed a key (`0`-`9`, `*`, `#`, `A`-`D`).
    Dtmf(char),
    /// The audio queued before this mark has been played (chan_websocket: MARK_MEDIA's
    /// correlation id, empty when it had none).
    MarkPlayed(&'a str),
    /// A clear dropped the audio before this mark: Twilio answers such a mark as if played;
    /// chan_websocket's FLUSH_MEDIA drops it silently.
    MarkCleared(&'a str),
    /// The call leaves the bot. Twilio sends `stop` before closing; chan_websocket just closes.
    Stop,
    /// chan_websocket flow control: the queue reached its XOFF level.
    Xoff,
    /// chan_websocket flow control: the queue fell below its XON level.
    Xon,
    /// chan_websocket: the queue emptied after a REPORT_QUEUE_DRAINED.
    QueueDrained,
    /// chan_websocket: the answer to GET_STATUS.
    Status(QueueStatus),
    /// chan_websocket: the audio before a STOP_MEDIA_BUFFERING has been played.
    BufferingCompleted(Option<&'a str>),
    /// chan_websocket's ERROR event, e.g. "Unable to parse JSON command" (what Asterisk answers
    /// to unparseable JSON in its json mode).
    Error(&'a str),
}

/// chan_websocket's STATUS, read from the playout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatus {
    /// Frames queued (a trailing partial frame counts as one).
    pub queue_length: usize,
    pub xon_level: usize,
    pub xoff_level: usize,
    /// An XOFF was sent and its XON not yet.
    pub queue_full: bool,
    /// Between START_MEDIA_BUFFERING and STOP_MEDIA_BUFFERING (or FLUSH_MEDIA).
    pub bulk_media: bool,
    /// Between PAUSE_MEDIA and CONTINUE_MEDIA.
    pub media_paused: bool,
}

/// What the bot asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromBot {
    /// Audio to queue, in RTP byte order (slin16 converted to big-endian), any length.
    Audio(Vec<u8>),
    /// Answer this name once the audio queued before it has played (chan_websocket MARK_MEDIA:
    /// the correlation id, empty when it had none).
    Mark(String),
    /// Drop all queued audio (Twilio `clear`, chan_websocket FLUSH_MEDIA).
    Clear,
    /// Extension: transfer the caller to this destination name (`None`: the default one).
    Transfer(Option<String>),
    /// Hang the caller up (chan_websocket HANGUP; the twilio extension `hangup`).
    Hangup,
    /// chan_websocket ANSWER.
    Answer,
    /// chan_websocket START_MEDIA_BUFFERING.
    StartBuffering,
    /// chan_websocket STOP_MEDIA_BUFFERING, with its optional correlation id.
    StopBuffering(Option<String>),
    /// chan_websocket REPORT_QUEUE_DRAINED.
    ReportQueueDrained,
    /// chan_websocket GET_STATUS.
    GetStatus,
    /// chan_websocket PAUSE_MEDIA.
    Pause,
    /// chan_websocket CONTINUE_MEDIA.
    Continue,
    /// A valid message that asks for nothing (an empty audio frame, an unsupported command);
    /// the reason is for a debug log.
    Ignored(&'static str),
}

/// Why a bot's message was skipped. The call goes on: Twilio and Asterisk also skip what they
/// cannot use (Twilio warnings 31950/31951; chan_websocket logs and ignores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// The text is not a JSON object.
    NotJson(Snippet),
    /// A field is missing or has the wrong type; names the field as the protocol spells it.
    Malformed { field: &'static str },
    /// A Twilio `event` this dialect does not know.
    UnknownEvent(Snippet),
    /// A chan_websocket command this dialect does not know (commands are case-sensitive).
    UnknownCommand(Snippet),
    /// A Twilio message whose `streamSid` is not this stream's.
    WrongStreamSid(Snippet),
    /// A Twilio `media.payload` that is not base64.
    BadBase64,
    /// slin16 audio of an odd number of bytes.
    PartialSample { bytes: usize },
    /// A binary frame in the twilio dialect, which is JSON text only.
    BinaryFrame { bytes: usize },
    /// A chan_websocket text message over its 128-byte limit.
    TooLong { bytes: usize },
    /// An empty (or all-blank) chan_websocket text message.
    Empty,
}

impl Bad {
    /// Every value [`Bad::kind`] can return, to register a metric's label values up front.
    pub const KINDS: [&'static str; 10] = [
        "not_json",
        "malformed",
        "unknown_event",
        "unknown_command",
        "wrong_stream_sid",
        "bad_base64",
        "partial_sample",
        "binary_frame",
        "too_long",
        "empty",
    ];

    /// A short snake_case label from the closed set [`Bad::KINDS`], for a metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Bad::NotJson(_) => "not_json",
            Bad::Malformed { .. } => "malformed",
            Bad::UnknownEvent(_) => "unknown_event",
            Bad::UnknownCommand(_) => "unknown_command",
            Bad::WrongStreamSid(_) => "wrong_stream_sid",
            Bad::BadBase64 => "bad_base64",
            Bad::PartialSample { .. } => "partial_sample",
            Bad::BinaryFrame { .. } => "binary_frame",
            Bad::TooLong { .. } => "too_long",
            Bad::Empty => "empty",
        }
    }
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::NotJson(text) => write!(f, "not a JSON object: {text}"),
            Bad::Malformed { field } => {
                write!(f, "field `{field}` is missing or of the wrong type")
            }
            Bad::UnknownEvent(event) => write!(f, "unknown event {event}"),
            Bad::UnknownCommand(command) => write!(f, "unknown command {command}"),
            Bad::WrongStreamSid(sid) => write!(f, "streamSid {sid} is not this stream's"),
            Bad::BadBase64 => f.write_str("media.payload is not base64"),
            Bad::PartialSample { bytes } => {
                write!(
                    f,
                    "{bytes} bytes of slin16 audio is not a whole number of samples"
                )
            }
            Bad::BinaryFrame { bytes } => {
                write!(
                    f,
                    "binary frame of {bytes} bytes (twilio bots send JSON text only)"
                )
            }
            Bad::TooLong { bytes } => write!(
                f,
                "text message of {bytes} bytes is over chan_websocket's limit of {}",
                chan_websocket::MAX_TEXT_BYTES
            ),
            Bad::Empty => f.write_str("empty text message"),
        }
    }
}

impl std::error::Error for Bad {}

/// At most [`Snippet::MAX`] bytes of a bot's text, safe to put in a log line: anything but
/// printable ASCII becomes `?` (no control characters, no bidi tricks), a cut shows as `…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet(String);

impl Snippet {
    pub const MAX: usize = 60;

    pub fn of(text: &str) -> Snippet {
        let mut out = String::with_capacity(text.len().min(Snippet::MAX) + 3);
        for (taken, c) in text.chars().enumerate() {
            if taken == Snippet::MAX {
                out.push('…');
                break;
            }
            out.push(if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            });
        }
        Snippet(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// One dialect's side of a call's WebSocket: formats what voicebot1 says, parses what the bot
/// says. Keeps the per-stream state the wire needs (Twilio's counters, the ids to echo).
pub trait Codec: Send {
    /// The first messages, sent once the WebSocket is open (Twilio: `connected` then `start`;
    /// chan_websocket: MEDIA_START).
    fn opening(&mut self, o: &Opening) -> Vec<Outgoing>;
    /// The message for `m`, or `None` when this dialect has no such message.
    fn encode(&mut self, m: ToBot) -> Option<Outgoing>;
    fn decode_text(&mut self, text: &str) -> Result<FromBot, Bad>;
    fn decode_binary(&mut self, data: &[u8]) -> Result<FromBot, Bad>;
}

/// The codec of one call. `json_control` picks chan_websocket's control format for what
/// voicebot1 sends (JSON, or the deprecated plain text that is Asterisk's own default); what the
/// bot sends is read in either form whatever it says, told apart by its first non-blank
/// character. Twilio ignores it. Audio is announced and carried in `format`.
pub fn codec(dialect: Dialect, format: Format, json_control: bool) -> Box<dyn Codec> {
    match dialect {
        Dialect::Twilio => Box::new(twilio::TwilioCodec::new(format)),
        Dialect::Asterisk => Box::new(chan_websocket::ChanWebsocketCodec::new(
            format,
            json_control,
        )),
    }
}

/// String pairs serialized as one JSON object, in their order (serde_json's own map sorts keys).
struct Pairs<'a>(&'a [(&'a str, &'a str)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// One message as JSON text. The structs given here have string keys only, which serde_json
/// always serializes; the empty object is never reached.
fn to_json<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ids: StreamIds::from_seed(7),
        }
    }

    #[test]
    fn formats_have_twenty_millisecond_frames_of_whole_samples() {
        for format in [Format::Ulaw, Format::Alaw, Format::Slin16] {
            let samples = format.frame_bytes() / format.sample_bytes();
            assert_eq!(samples as u32 * 50, format.rate(), "{format:?}");
            assert_eq!(Format::parse(format.name()), Some(format));
        }
        assert_eq!(Format::Ulaw.frame_bytes(), 160);
        assert_eq!(Format::Slin16.frame_bytes(), 640);
        assert_eq!(Format::Alaw.silence_byte(), 0xD5);
    }

    #[test]
    fn twilio_bots_are_offered_ulaw_only() {
        assert!(Dialect::Twilio.supports(Format::Ulaw));
        assert!(!Dialect::Twilio.supports(Format::Slin16));
        assert!(Dialect::Asterisk.supports(Format::Slin16));
        assert_eq!(Dialect::from_name("asterisk"), Some(Dialect::Asterisk));
        assert_eq!(Dialect::from_name("Twilio"), None);
    }

    #[test]
    fn stream_ids_have_twilio_shapes() {
        let ids = StreamIds::from_seed(0);
        for (sid, prefix) in [
            (&ids.account_sid, "AC"),
            (&ids.call_sid, "CA"),
            (&ids.stream_sid, "MZ"),
        ] {
            assert_eq!(sid.len(), 34, "{sid}");
            assert!(sid.starts_with(prefix), "{sid}");
            assert!(sid[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }

    #[test]
    fn stream_ids_are_a_function_of_the_seed_and_differ_between_seeds() {
        assert_eq!(StreamIds::from_seed(42), StreamIds::from_seed(42));
        let sids: std::collections::HashSet<String> = (0..1000u128)
            .map(|seed| StreamIds::from_seed(seed).stream_sid)
            .collect();
        assert_eq!(sids.len(), 1000);
        let ids = StreamIds::from_seed(1);
        assert_ne!(ids.call_sid[2..], ids.stream_sid[2..]);
    }

    #[test]
    fn parameters_put_voicebot1_keys_first_and_keep_dialplan_order() {
        let o = opening();
        let keys: Vec<&str> = o.parameters().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "call_id",
                "caller_number",
                "caller_name",
                "exten",
                "from_number",
                "to_number",
                "bot",
                "lang"
            ]
        );
        assert!(o.parameters().contains(&("from_number", "+15551230000")));
        assert!(o.parameters().contains(&("to_number", "100")));
    }

    #[test]
    fn a_dialplan_argument_cannot_replace_the_call_id_and_the_last_repeat_wins() {
        let mut o = opening();
        o.params = vec![
            ("call_id".into(), "spoofed".into()),
            ("lang".into(), "fr".into()),
            ("lang".into(), "de".into()),
        ];
        let params = o.parameters();
        assert!(params.contains(&("call_id", "1764000000.17")));
        assert!(!params.iter().any(|(_, v)| *v == "spoofed"));
        assert_eq!(params.iter().filter(|(k, _)| *k == "lang").count(), 1);
        assert!(params.contains(&("lang", "de")));
    }

    #[test]
    fn every_bad_has_a_kind_from_the_closed_set() {
        let snippet = Snippet::of("x");
        let all = [
            Bad::NotJson(snippet.clone()),
            Bad::Malformed {
                field: "media.payload",
            },
            Bad::UnknownEvent(snippet.clone()),
            Bad::UnknownCommand(snippet.clone()),
            Bad::WrongStreamSid(snippet),
            Bad::BadBase64,
            Bad::PartialSample { bytes: 3 },
            Bad::BinaryFrame { bytes: 3 },
            Bad::TooLong { bytes: 200 },
            Bad::Empty,
        ];
        let kinds: Vec<&str> = all.iter().map(Bad::kind).collect();
        assert_eq!(kinds, Bad::KINDS);
        for bad in &all {
            let line = bad.to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(bad
                .kind()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
    }

    #[test]
    fn a_bad_message_quotes_at_most_sixty_sanitized_bytes_of_the_bot_text() {
        let hostile = format!("\u{202e}evil\r\n\x1b[31m{}", "A".repeat(500));
        let line = Bad::UnknownEvent(Snippet::of(&hostile)).to_string();
        assert!(line.len() < 100, "{line}");
        assert!(
            line.chars()
                .all(|c| c == '…' || c == ' ' || c.is_ascii_graphic()),
            "{line}"
        );
        assert!(line.contains("?evil??"), "{line}");
        assert!(line.ends_with("…\""), "{line}");
        assert_eq!(Snippet::of("short").as_str(), "short");
    }

    #[test]
    fn ten_thousand_caller_frames_and_bot_frames_run_through_both_codecs() {
        // A sanity run of the hot path, not a benchmark: timing belongs in scripts/bench.
        let o = opening();
        for (dialect, format) in [
            (Dialect::Twilio, Format::Ulaw),
            (Dialect::Asterisk, Format::Slin16),
        ] {
            let mut c = codec(dialect, format, true);
            c.opening(&o);
            let frame = vec![0x55u8; format.frame_bytes()];
            let mut played = 0usize;
            for _ in 0..10_000 {
                let out = c.encode(ToBot::CallerAudio(&frame));
                let decoded = match out {
                    Some(Outgoing::Text(text)) => {
                        // Echo the media back as a bot would: same payload, bot-side shape.
                        let payload = text
                            .split("\"payload\":\"")
                            .nth(1)
                            .and_then(|rest| rest.split('"').next());
                        let reply = format!(
                            r#"{{"event":"media","streamSid":"{}","media":{{"payload":"{}"}}}}"#,
                            o.ids.stream_sid,
                            payload.expect("media has a payload")
                        );
                        c.decode_text(&reply)
                    }
                    Some(Outgoing::Binary(bytes)) => c.decode_binary(&bytes),
                    None => panic!("caller audio always has a message"),
                };
                match decoded {
                    Ok(FromBot::Audio(audio)) => {
                        assert_eq!(audio, frame);
                        played += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(played, 10_000);
        }
    }
}
