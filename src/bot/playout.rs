//! The bot's audio queue: what the bot sent, played to the caller one 20 ms RTP frame per tick.
//!
//! Bots send audio faster than real time (Pipecat sends at twice real time) and in any chunk
//! size; the queue absorbs the difference, the session's 20 ms clock sets the pace. The rules are
//! chan_websocket's (`channels/chan_websocket.c`), which also stand for Twilio's undocumented
//! queue:
//! - Audio is one byte stream in RTP byte order, bounded by `max_frames` frames (chan_websocket
//!   has 1000): what does not fit is dropped and counted, memory never grows past the cap.
//! - Each tick plays one frame. A tick that finds less than a frame plays it padded with
//!   silence, as chan_websocket plays its leftover bytes when nothing else is queued.
//! - Marks sit at a position in the stream and are reported at the first tick after the audio
//!   before them has been taken (chan_websocket sends a queued mark when the tick reaches it):
//!   a mark queued with no audio before it is reported at the next tick.
//! - Flow control (chan_websocket only): XOFF when a push brings the queue to `xoff_level` (900
//!   of 1000), XON at the first tick that finds it below `xon_level` (800), each once per crossing.
//! - QUEUE_DRAINED once, at the first tick that finds nothing queued after a request.
//! - PAUSE_MEDIA stops everything at the tick (no audio, marks, XON or QUEUE_DRAINED) and keeps
//!   the queue; CONTINUE_MEDIA resumes.
//! - Partial frames: Twilio keeps every byte. chan_websocket without media buffering drops the
//!   bytes after the last whole frame of each binary message; START_MEDIA_BUFFERING keeps them
//!   for the next message, and STOP_MEDIA_BUFFERING queues them (to play padded) followed by its
//!   MEDIA_BUFFERING_COMPLETED, positioned like a mark. Buffering never holds playing back.
//! - Clear (FLUSH_MEDIA) drops the audio and every pending mark, returns the names of the marks
//!   (Twilio answers them), ends media buffering, and leaves XOFF and a drained report pending
//!   for the next tick, as chan_websocket does.

use std::collections::VecDeque;

use super::{Dialect, Format, QueueStatus, ToBot};

/// Something positioned in the audio stream, reported when playing reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// A bot's mark (Twilio `mark.name`, chan_websocket MARK_MEDIA's correlation id).
    Mark(String),
    /// The end of the audio before a STOP_MEDIA_BUFFERING, with its correlation id.
    BufferingCompleted(Option<String>),
}

impl Marker {
    /// The message that reports this marker reached.
    pub fn to_bot(&self) -> ToBot<'_> {
        match self {
            Marker::Mark(name) => ToBot::MarkPlayed(name),
            Marker::BufferingCompleted(id) => ToBot::BufferingCompleted(id.as_deref()),
        }
    }
}

/// What a push did besides queueing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pushed {
    /// Bytes dropped because the queue was at its cap.
    pub dropped_bytes: usize,
    /// Bytes after the last whole frame, dropped by chan_websocket's rule without buffering.
    pub trimmed_bytes: usize,
    /// This push reached the XOFF level: tell the bot `ToBot::Xoff`.
    pub xoff: bool,
}

/// What one tick did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tick {
    /// A frame was written to `out` (false: nothing queued, or paused; `out` is untouched).
    pub played: bool,
    /// Markers reached, in stream order.
    pub marks: Vec<Marker>,
    /// The queue fell below the XON level after an XOFF: tell the bot `ToBot::Xon`.
    pub xon: bool,
    /// The queue is empty after a drained report was asked: tell the bot `ToBot::QueueDrained`.
    pub drained: bool,
}

/// How a push treats bytes after its last whole frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partial {
    /// Keep them: the next push or the tick completes them (Twilio).
    Keep,
    /// Drop them unless media buffering is on (chan_websocket).
    DropUnlessBuffering,
}

/// One call's queue of bot audio.
#[derive(Debug)]
pub struct Playout {
    format: Format,
    cap_bytes: usize,
    xoff_level: usize,
    xon_level: usize,
    partial: Partial,
    audio: VecDeque<u8>,
    /// Bytes ever taken from the front: the stream position of `audio[0]`.
    taken: u64,
    /// Markers and the stream position they follow, in order.
    marks: VecDeque<(u64, Marker)>,
    buffering: bool,
    paused: bool,
    xoff: bool,
    drained_wanted: bool,
}

impl Playout {
    /// A queue with Twilio's rule for partial frames (keep every byte). `max_frames` is the cap
    /// (1000 frames = 20 s, chan_websocket's); XOFF and XON sit at 9/10 and 8/10 of it.
    pub fn new(format: Format, max_frames: usize) -> Playout {
        let max_frames = max_frames.max(1);
        Playout {
            format,
            cap_bytes: max_frames * format.frame_bytes(),
            xoff_level: max_frames * 9 / 10,
            xon_level: max_frames * 8 / 10,
            partial: Partial::Keep,
            audio: VecDeque::new(),
            taken: 0,
            marks: VecDeque::new(),
            buffering: false,
            paused: false,
            xoff: false,
            drained_wanted: false,
        }
    }

    /// A queue with the rules of the bot's dialect: chan_websocket drops partial frames unless
    /// media buffering is on.
    pub fn for_dialect(dialect: Dialect, format: Format, max_frames: usize) -> Playout {
        let mut playout = Playout::new(format, max_frames);
        if dialect == Dialect::Asterisk {
            playout.partial = Partial::DropUnlessBuffering;
        }
        playout
    }

    /// Queues one message's audio (in RTP byte order).
    pub fn push_audio(&mut self, bytes: &[u8]) -> Pushed {
        let mut pushed = Pushed::default();
        let mut bytes = bytes;
        if self.partial == Partial::DropUnlessBuffering && !self.buffering {
            pushed.trimmed_bytes = bytes.len() % self.format.frame_bytes();
            bytes = &bytes[..bytes.len() - pushed.trimmed_bytes];
        }
        let room = self.cap_bytes - self.audio.len();
        let mut fits = bytes.len().min(room);
        // Never split a sample: the rest of the stream would play as noise.
        fits -= fits % self.format.sample_bytes();
        pushed.dropped_bytes = bytes.len() - fits;
        self.reserve(fits);
        self.audio.extend(&bytes[..fits]);
        if !self.xoff && self.frames_queued() >= self.xoff_level {
            self.xoff = true;
            pushed.xoff = true;
        }
        pushed
    }

    /// Grows the ring for `more` bytes, doubling as a Vec would but never past the cap.
    fn reserve(&mut self, more: usize) {
        let needed = self.audio.len() + more;
        if needed > self.audio.capacity() {
            let target = needed.max(self.audio.capacity() * 2).min(self.cap_bytes);
            self.audio.reserve_exact(target - self.audio.len());
        }
    }

    /// Queues a mark after the audio queued so far.
    pub fn push_mark(&mut self, name: String) {
        self.push_marker(Marker::Mark(name));
    }

    fn push_marker(&mut self, marker: Marker) {
        let position = self.taken + self.audio.len() as u64;
        self.marks.push_back((position, marker));
    }

    /// Drops all queued audio and markers; returns the names of the marks dropped (Twilio
    /// answers them, chan_websocket does not). Ends media buffering, as FLUSH_MEDIA does.
    pub fn clear(&mut self) -> Vec<String> {
        self.taken += self.audio.len() as u64;
        self.audio.clear();
        self.buffering = false;
        self.marks
            .drain(..)
            .filter_map(|(_, marker)| match marker {
                Marker::Mark(name) => Some(name),
                Marker::BufferingCompleted(_) => None,
            })
            .collect()
    }

    /// Plays one tick: writes the next frame into `out` (which should be `frame_bytes` long),
    /// padded with silence if less is queued, and reports what playing reached.
    pub fn next_frame(&mut self, out: &mut [u8]) -> Tick {
        let mut tick = Tick::default();
        if self.paused {
            return tick;
        }
        if self.xoff && self.frames_queued() < self.xon_level {
            self.xoff = false;
            tick.xon = true;
        }
        if self.audio.is_empty() && self.marks.is_empty() {
            tick.drained = std::mem::take(&mut self.drained_wanted);
            return tick;
        }
        while self
            .marks
            .front()
            .is_some_and(|(position, _)| *position <= self.taken)
        {
            if let Some((_, marker)) = self.marks.pop_front() {
                tick.marks.push(marker);
            }
        }
        let n = out.len().min(self.audio.len());
        if n > 0 {
            // The ring's two halves copied whole (a byte-by-byte drain cost ~2,000 instructions
            // per 160-byte frame, the most of any step of a session's tick).
            let (front, back) = self.audio.as_slices();
            let from_front = n.min(front.len());
            out[..from_front].copy_from_slice(&front[..from_front]);
            out[from_front..n].copy_from_slice(&back[..n - from_front]);
            self.audio.drain(..n);
            out[n..].fill(self.format.silence_byte());
            self.taken += n as u64;
            tick.played = true;
        }
        tick
    }

    /// Frames queued; a trailing partial frame counts as one (it plays as one).
    pub fn frames_queued(&self) -> usize {
        self.audio.len().div_ceil(self.format.frame_bytes())
    }

    /// START_MEDIA_BUFFERING: keep partial frames for the next message.
    pub fn start_buffering(&mut self) {
        self.buffering = true;
    }

    /// STOP_MEDIA_BUFFERING: the bytes kept so far stay queued (they play padded if nothing
    /// follows), then MEDIA_BUFFERING_COMPLETED is reported once they have played.
    pub fn stop_buffering(&mut self, correlation_id: Option<String>) {
        self.buffering = false;
        self.push_marker(Marker::BufferingCompleted(correlation_id));
    }

    /// REPORT_QUEUE_DRAINED: report once, at the first tick that finds the queue empty.
    pub fn report_drained(&mut self) {
        self.drained_wanted = true;
    }

    /// PAUSE_MEDIA.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// CONTINUE_MEDIA.
    pub fn resume(&mut self) {
        self.paused = false;
    }

    /// The answer to GET_STATUS.
    pub fn status(&self) -> QueueStatus {
        QueueStatus {
            queue_length: self.frames_queued(),
            xon_level: self.xon_level,
            xoff_level: self.xoff_level,
            queue_full: self.xoff,
            bulk_media: self.buffering,
            media_paused: self.paused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ULAW_FRAME: usize = 160;

    /// Ticks until nothing plays; returns every frame played and every marker reached.
    fn drain(p: &mut Playout) -> (Vec<Vec<u8>>, Vec<Marker>) {
        let mut frames = Vec::new();
        let mut marks = Vec::new();
        for _ in 0..100_000 {
            let mut out = vec![0u8; p.format.frame_bytes()];
            let tick = p.next_frame(&mut out);
            marks.extend(tick.marks);
            if !tick.played {
                break;
            }
            frames.push(out);
        }
        (frames, marks)
    }

    fn tick(p: &mut Playout) -> (Tick, Vec<u8>) {
        let mut out = vec![0u8; p.format.frame_bytes()];
        let t = p.next_frame(&mut out);
        (t, out)
    }

    /// Audio that never contains μ-law silence, so padding can be told from audio.
    fn speech(bytes: usize, from: usize) -> Vec<u8> {
        (from..from + bytes).map(|i| (i % 200) as u8).collect()
    }

    #[test]
    fn a_burst_of_three_seconds_plays_exactly_150_frames() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        let audio = speech(3 * 8000, 0);
        assert_eq!(p.push_audio(&audio), Pushed::default());
        assert_eq!(p.frames_queued(), 150);
        let (frames, _) = drain(&mut p);
        assert_eq!(frames.len(), 150);
        assert_eq!(frames.concat(), audio);
        assert_eq!(p.frames_queued(), 0);
    }

    #[test]
    fn thirty_millisecond_chunks_sent_ahead_play_as_whole_frames_without_loss() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        let audio = speech(240 * 10, 0);
        for chunk in audio.chunks(240) {
            p.push_audio(chunk);
        }
        let (frames, _) = drain(&mut p);
        assert_eq!(frames.len(), 15);
        assert_eq!(frames.concat(), audio);
    }

    #[test]
    fn thirty_millisecond_chunks_sent_in_real_time_play_every_byte_in_order() {
        // A chunk every 30 ms against a tick every 20 ms: two chunks per three ticks.
        let mut p = Playout::new(Format::Ulaw, 1000);
        let audio = speech(240 * 20, 0);
        let mut chunks = audio.chunks(240);
        let mut played = Vec::new();
        for t in 0..40 {
            if t % 3 != 2 {
                if let Some(chunk) = chunks.next() {
                    p.push_audio(chunk);
                }
            }
            let (tick, out) = tick(&mut p);
            if tick.played {
                played.extend(out);
            }
        }
        let (rest, _) = drain(&mut p);
        played.extend(rest.concat());
        let heard: Vec<u8> = played.into_iter().filter(|&b| b != 0xFF).collect();
        assert_eq!(heard, audio);
    }

    #[test]
    fn a_frame_split_across_the_end_of_the_ring_plays_in_order() {
        // A frame and a half ahead, then a frame per tick: the ring stops growing, and its head
        // runs round its end half a frame off the frames.
        let mut p = Playout::new(Format::Ulaw, 1000);
        let audio = speech(ULAW_FRAME * 100, 0);
        let (ahead, rest) = audio.split_at(ULAW_FRAME * 3 / 2);
        let mut played = Vec::new();
        let mut straddled = 0;
        for chunk in std::iter::once(ahead).chain(rest.chunks(ULAW_FRAME)) {
            p.push_audio(chunk);
            let (front, back) = p.audio.as_slices();
            if front.len() < ULAW_FRAME && !back.is_empty() {
                straddled += 1;
            }
            let (_, out) = tick(&mut p);
            played.extend(out);
        }
        played.extend(drain(&mut p).0.concat());
        assert!(straddled > 0, "no frame straddled the ring's end");
        assert!(played == audio, "the audio played is not the audio sent");
    }

    #[test]
    fn a_partial_frame_alone_at_a_tick_plays_padded_with_silence() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        p.push_audio(&[1, 2, 3]);
        let (t, out) = tick(&mut p);
        assert!(t.played);
        assert_eq!(&out[..3], [1, 2, 3]);
        assert!(out[3..].iter().all(|&b| b == 0xFF));
        let (t, _) = tick(&mut p);
        assert!(!t.played);
    }

    #[test]
    fn slin16_frames_are_640_bytes_padded_with_zero() {
        let mut p = Playout::new(Format::Slin16, 1000);
        p.push_audio(&[0x7F; 700]);
        let (_, first) = tick(&mut p);
        assert_eq!(first, vec![0x7F; 640]);
        let (_, second) = tick(&mut p);
        assert_eq!(&second[..60], &[0x7F; 60][..]);
        assert!(second[60..].iter().all(|&b| b == 0));
    }

    #[test]
    fn an_empty_queue_plays_nothing_and_leaves_out_untouched() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        let mut out = [7u8; ULAW_FRAME];
        assert_eq!(p.next_frame(&mut out), Tick::default());
        assert_eq!(out, [7u8; ULAW_FRAME]);
    }

    #[test]
    fn a_mark_before_any_audio_is_reported_at_the_next_tick() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        p.push_mark("hello".into());
        let (t, _) = tick(&mut p);
        assert_eq!(t.marks, [Marker::Mark("hello".into())]);
        assert!(!t.played);
    }

    #[test]
    fn a_mark_is_reported_at_the_tick_after_the_audio_before_it_was_taken() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        p.push_audio(&speech(2 * ULAW_FRAME, 0));
        p.push_mark("two frames".into());
        p.push_audio(&speech(ULAW_FRAME, 0));
        p.push_mark("three frames".into());
        let reported: Vec<Vec<Marker>> = (0..5).map(|_| tick(&mut p).0.marks).collect();
        assert_eq!(
            reported,
            [
                vec![],
                vec![],
                vec![Marker::Mark("two frames".into())],
                vec![Marker::Mark("three frames".into())],
                vec![],
            ]
        );
    }

    #[test]
    fn a_mark_after_a_partial_frame_waits_for_that_frame_to_play() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        p.push_audio(&speech(200, 0));
        p.push_mark("m".into());
        assert!(tick(&mut p).0.marks.is_empty()); // 160
        assert!(tick(&mut p).0.marks.is_empty()); // 40, padded
        assert_eq!(tick(&mut p).0.marks, [Marker::Mark("m".into())]);
    }

    #[test]
    fn marks_in_a_row_are_reported_together_in_order() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        p.push_audio(&speech(ULAW_FRAME, 0));
        p.push_mark("a".into());
        p.push_mark("b".into());
        tick(&mut p);
        assert_eq!(
            tick(&mut p).0.marks,
            [Marker::Mark("a".into()), Marker::Mark("b".into())]
        );
    }

    #[test]
    fn clear_drops_everything_and_returns_the_pending_marks() {
        let mut p = Playout::for_dialect(Dialect::Asterisk, Format::Ulaw, 1000);
        p.push_audio(&speech(10 * ULAW_FRAME, 0));
        p.push_mark("a".into());
        p.start_buffering();
        p.push_audio(&speech(50, 0));
        p.stop_buffering(Some("b".into()));
        p.push_mark("c".into());
        assert_eq!(p.clear(), ["a", "c"]);
        assert_eq!(p.frames_queued(), 0);
        assert_eq!(tick(&mut p).0, Tick::default());
    }

    #[test]
    fn audio_queued_after_a_clear_plays_and_marks_again_line_up() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        p.push_audio(&speech(5 * ULAW_FRAME, 0));
        tick(&mut p);
        p.clear();
        p.push_audio(&speech(ULAW_FRAME, 0));
        p.push_mark("after".into());
        let (t, _) = tick(&mut p);
        assert!(t.played && t.marks.is_empty());
        assert_eq!(tick(&mut p).0.marks, [Marker::Mark("after".into())]);
    }

    #[test]
    fn audio_beyond_the_cap_is_dropped_and_counted_and_memory_stays_bounded() {
        let mut p = Playout::new(Format::Ulaw, 100);
        let cap = 100 * ULAW_FRAME;
        let pushed = p.push_audio(&speech(cap + 1000, 0));
        assert_eq!(pushed.dropped_bytes, 1000);
        assert_eq!(p.frames_queued(), 100);
        for _ in 0..50 {
            assert_eq!(
                p.push_audio(&speech(3 * ULAW_FRAME, 0)).dropped_bytes,
                3 * ULAW_FRAME
            );
        }
        assert!(p.audio.capacity() <= cap, "{} > {cap}", p.audio.capacity());
        tick(&mut p);
        assert_eq!(
            p.push_audio(&speech(2 * ULAW_FRAME, 0)).dropped_bytes,
            ULAW_FRAME
        );
        assert!(p.audio.capacity() <= cap);
    }

    #[test]
    fn the_ring_grows_only_as_audio_arrives() {
        let mut p = Playout::new(Format::Slin16, 1000);
        assert_eq!(p.audio.capacity(), 0);
        p.push_audio(&[0; 1280]);
        assert!(p.audio.capacity() < 640 * 1000);
    }

    #[test]
    fn the_cap_never_splits_a_slin16_sample() {
        let mut p = Playout::new(Format::Slin16, 1);
        // 636 bytes fit of 637: the odd byte would shift every later sample.
        assert_eq!(p.push_audio(&[1; 637]).dropped_bytes, 1);
        assert_eq!(p.push_audio(&[2; 6]).dropped_bytes, 2);
        let (_, out) = tick(&mut p);
        assert_eq!(&out[634..], [1, 1, 2, 2, 2, 2]);
    }

    #[test]
    fn xoff_and_xon_are_reported_once_each_at_900_and_below_800() {
        let mut p = Playout::for_dialect(Dialect::Asterisk, Format::Ulaw, 1000);
        assert!(!p.push_audio(&speech(899 * ULAW_FRAME, 0)).xoff);
        assert!(p.push_audio(&speech(ULAW_FRAME, 0)).xoff);
        assert!(!p.push_audio(&speech(ULAW_FRAME, 0)).xoff);
        assert!(p.status().queue_full);
        let mut xons = Vec::new();
        for n in 0..200 {
            let queued_before = p.frames_queued();
            if tick(&mut p).0.xon {
                xons.push((n, queued_before));
            }
        }
        // 901 queued: the tick that finds 799 is the 103rd (n = 102).
        assert_eq!(xons, [(102, 799)]);
        assert!(!p.status().queue_full);
        assert!(p.push_audio(&speech(200 * ULAW_FRAME, 0)).xoff);
    }

    #[test]
    fn xon_follows_a_clear_at_the_next_tick() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        assert!(p.push_audio(&speech(950 * ULAW_FRAME, 0)).xoff);
        p.clear();
        assert!(p.status().queue_full);
        assert!(tick(&mut p).0.xon);
    }

    #[test]
    fn flow_levels_scale_with_the_cap() {
        let p = Playout::new(Format::Ulaw, 500);
        assert_eq!((p.status().xoff_level, p.status().xon_level), (450, 400));
        let p = Playout::new(Format::Ulaw, 1000);
        assert_eq!((p.status().xoff_level, p.status().xon_level), (900, 800));
    }

    #[test]
    fn queue_drained_is_reported_once_after_the_last_frame_played() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        p.push_audio(&speech(2 * ULAW_FRAME, 0));
        p.report_drained();
        let drained: Vec<bool> = (0..5).map(|_| tick(&mut p).0.drained).collect();
        assert_eq!(drained, [false, false, true, false, false]);
    }

    #[test]
    fn queue_drained_asked_with_an_empty_queue_comes_at_the_next_tick() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        p.report_drained();
        assert!(tick(&mut p).0.drained);
    }

    #[test]
    fn queue_drained_waits_for_marks_still_queued() {
        let mut p = Playout::new(Format::Ulaw, 1000);
        p.push_mark("m".into());
        p.report_drained();
        let (t, _) = tick(&mut p);
        assert_eq!((t.marks.len(), t.drained), (1, false));
        assert!(tick(&mut p).0.drained);
    }

    #[test]
    fn pause_holds_audio_marks_and_reports_and_continue_resumes() {
        let mut p = Playout::for_dialect(Dialect::Asterisk, Format::Ulaw, 1000);
        p.push_mark("m".into());
        p.push_audio(&speech(ULAW_FRAME, 0));
        p.report_drained();
        p.pause();
        assert!(p.status().media_paused);
        for _ in 0..10 {
            assert_eq!(tick(&mut p).0, Tick::default());
        }
        assert_eq!(p.frames_queued(), 1);
        p.resume();
        let (t, _) = tick(&mut p);
        assert!(t.played);
        assert_eq!(t.marks, [Marker::Mark("m".into())]);
        assert!(tick(&mut p).0.drained);
    }

    #[test]
    fn chan_websocket_drops_the_partial_frame_of_each_message_without_buffering() {
        let mut p = Playout::for_dialect(Dialect::Asterisk, Format::Ulaw, 1000);
        let pushed = p.push_audio(&speech(400, 0));
        assert_eq!(pushed.trimmed_bytes, 80);
        assert_eq!(p.frames_queued(), 2);
        assert_eq!(p.push_audio(&speech(100, 0)).trimmed_bytes, 100);
        assert_eq!(p.frames_queued(), 2);
    }

    #[test]
    fn twilio_keeps_the_partial_frame_of_each_message() {
        let mut p = Playout::for_dialect(Dialect::Twilio, Format::Ulaw, 1000);
        assert_eq!(p.push_audio(&speech(400, 0)), Pushed::default());
        assert_eq!(p.frames_queued(), 3);
    }

    #[test]
    fn media_buffering_carries_partial_frames_to_the_next_message() {
        let mut p = Playout::for_dialect(Dialect::Asterisk, Format::Ulaw, 1000);
        p.start_buffering();
        assert!(p.status().bulk_media);
        let audio = speech(240 * 4, 0);
        for chunk in audio.chunks(240) {
            assert_eq!(p.push_audio(chunk).trimmed_bytes, 0);
        }
        let (frames, _) = drain(&mut p);
        assert_eq!(frames.concat(), audio);
    }

    #[test]
    fn stop_buffering_plays_the_leftover_then_reports_completion() {
        let mut p = Playout::for_dialect(Dialect::Asterisk, Format::Ulaw, 1000);
        p.start_buffering();
        p.push_audio(&speech(200, 0));
        p.stop_buffering(Some("done".into()));
        assert!(!p.status().bulk_media);
        let (frames, marks) = drain(&mut p);
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[1][..40], &speech(200, 0)[160..]);
        assert_eq!(marks, [Marker::BufferingCompleted(Some("done".into()))]);
        assert_eq!(marks[0].to_bot(), ToBot::BufferingCompleted(Some("done")));
        // After the stop, partial frames are dropped again.
        assert_eq!(p.push_audio(&speech(100, 0)).trimmed_bytes, 100);
    }

    #[test]
    fn clear_ends_media_buffering() {
        let mut p = Playout::for_dialect(Dialect::Asterisk, Format::Ulaw, 1000);
        p.start_buffering();
        p.clear();
        assert!(!p.status().bulk_media);
        assert_eq!(p.push_audio(&speech(100, 0)).trimmed_bytes, 100);
    }

    #[test]
    fn status_reports_the_queue_as_chan_websocket_does() {
        let mut p = Playout::for_dialect(Dialect::Asterisk, Format::Ulaw, 1000);
        p.push_audio(&speech(12 * ULAW_FRAME, 0));
        p.pause();
        assert_eq!(
            p.status(),
            QueueStatus {
                queue_length: 12,
                xon_level: 800,
                xoff_level: 900,
                queue_full: false,
                bulk_media: false,
                media_paused: true,
            }
        );
    }

    #[test]
    fn a_mark_reached_reports_as_mark_played() {
        assert_eq!(Marker::Mark("x".into()).to_bot(), ToBot::MarkPlayed("x"));
    }
}
