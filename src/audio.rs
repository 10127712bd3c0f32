//! The audio formats a call's media can use with Asterisk's externalMedia channel and with a bot:
//! what each one's 20 ms frame looks like on the wire.
//!
//! Architecture invariant: `audio` imports nothing from the rest of the crate.

/// A media format, as ARI's externalMedia `format` and chan_websocket's `format` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// G.711 a-law, 8 kHz.
    Alaw,
    /// G.711 μ-law, 8 kHz.
    Ulaw,
    /// Signed linear 16-bit, 16 kHz (big-endian in RTP, as RFC 3551's L16).
    Slin16,
}

/// Every format, for parsing and listing.
pub const FORMATS: [Format; 3] = [Format::Alaw, Format::Ulaw, Format::Slin16];

/// The packet time voicebot1 uses for every format.
pub const PTIME_MS: u32 = 20;

impl Format {
    /// The name ARI's `format` parameter and chan_websocket's `format` take.
    pub fn name(self) -> &'static str {
        match self {
            Format::Alaw => "alaw",
            Format::Ulaw => "ulaw",
            Format::Slin16 => "slin16",
        }
    }

    /// The format named `name` (`alaw`, `ulaw`, `slin16`).
    pub fn parse(name: &str) -> Option<Format> {
        FORMATS.into_iter().find(|f| f.name() == name)
    }

    /// The RTP payload type Asterisk uses for it: static for G.711; for slin16 a dynamic one,
    /// 118 being Asterisk's default.
    pub fn payload_type(self) -> u8 {
        match self {
            Format::Alaw => 8,
            Format::Ulaw => 0,
            Format::Slin16 => 118,
        }
    }

    /// Bytes of one sample.
    pub fn sample_bytes(self) -> usize {
        match self {
            Format::Alaw | Format::Ulaw => 1,
            Format::Slin16 => 2,
        }
    }

    /// Samples per second (the RTP clock rate).
    pub fn rate(self) -> u32 {
        match self {
            Format::Alaw | Format::Ulaw => 8000,
            Format::Slin16 => 16000,
        }
    }

    /// Samples in one 20 ms frame: what an RTP timestamp advances by per frame.
    pub fn frame_samples(self) -> u32 {
        self.rate() / 1000 * PTIME_MS
    }

    /// Bytes of one 20 ms frame: 160 for G.711, 640 for slin16.
    pub fn frame_bytes(self) -> usize {
        self.frame_samples() as usize * self.sample_bytes()
    }

    /// The byte that fills a frame of silence (G.711's code for zero; zero for linear).
    pub fn silence_byte(self) -> u8 {
        match self {
            Format::Alaw => 0xd5,
            Format::Ulaw => 0xff,
            Format::Slin16 => 0,
        }
    }
}

/// Halves the sample rate of signed linear 16-bit audio (big-endian, as RTP carries it): a
/// low-pass FIR (windowed sinc, cut-off a little below the new Nyquist frequency) then every
/// other sample. The filter's state carries over from one frame to the next, so frames join
/// without a click.
///
/// Why: Asterisk's externalMedia channel sends slin16 with payload type 118, but reads a payload
/// type it has no mapping for only from its static table (types up to 34: rtp_engine.c,
/// `ast_rtp_codecs_get_payload`), so it drops slin16 sent back with 118; it reads type 11 as
/// 8 kHz linear. The caller's side is 8 kHz G.711 anyway: nothing audible is lost.
#[derive(Debug, Clone)]
pub struct Decimator {
    taps: Vec<f32>,
    /// The last `taps.len() - 1` input samples.
    history: Vec<f32>,
}

impl Default for Decimator {
    fn default() -> Decimator {
        Decimator::new()
    }
}

impl Decimator {
    /// Taps of the low-pass filter: odd, so it has a centre.
    const TAPS: usize = 47;

    pub fn new() -> Decimator {
        // Cut-off at 0.46 of the input's Nyquist frequency (3.7 kHz at 16 kHz), Hamming window:
        // flat to about 3.3 kHz (the telephone band), down over 40 dB from about 4.3 kHz.
        let n = Decimator::TAPS;
        let centre = (n / 2) as f32;
        let cutoff = 0.46f32 / 2.0;
        let mut taps: Vec<f32> = (0..n)
            .map(|i| {
                let x = i as f32 - centre;
                let sinc = if x == 0.0 {
                    2.0 * cutoff
                } else {
                    (2.0 * std::f32::consts::PI * cutoff * x).sin() / (std::f32::consts::PI * x)
                };
                let w = 2.0 * std::f32::consts::PI * i as f32 / (n - 1) as f32;
                sinc * (0.54 - 0.46 * w.cos())
            })
            .collect();
        let sum: f32 = taps.iter().sum();
        taps.iter_mut().for_each(|t| *t /= sum);
        Decimator {
            taps,
            history: vec![0.0; n - 1],
        }
    }

    /// `input`: big-endian 16-bit samples at the higher rate (an even number of them); writes
    /// half as many into `out`, big-endian. Returns the bytes written.
    pub fn process(&mut self, input: &[u8], out: &mut [u8]) -> usize {
        let samples: Vec<f32> = input
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_be_bytes([b[0], b[1]])))
            .collect();
        let keep = self.history.len();
        let mut buf = std::mem::take(&mut self.history);
        buf.extend_from_slice(&samples);
        let mut written = 0;
        for (k, chunk) in out.chunks_exact_mut(2).enumerate() {
            let end = keep + 2 * k + 1;
            if end > buf.len() {
                break;
            }
            let window = &buf[end - self.taps.len()..end];
            let y: f32 = window
                .iter()
                .zip(self.taps.iter().rev())
                .map(|(x, t)| x * t)
                .sum();
            let y = y.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
            chunk.copy_from_slice(&y.to_be_bytes());
            written += 2;
        }
        self.history = buf.split_off(buf.len() - keep);
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_20_ms_frame_is_160_bytes_of_g711_or_640_of_slin16() {
        assert_eq!(
            [
                Format::Alaw.frame_bytes(),
                Format::Ulaw.frame_bytes(),
                Format::Slin16.frame_bytes()
            ],
            [160, 160, 640]
        );
        assert_eq!(
            [Format::Alaw.frame_samples(), Format::Slin16.frame_samples()],
            [160, 320]
        );
    }

    /// A 16 kHz sine, big-endian.
    fn sine(hz: f32, samples: usize, from: usize) -> Vec<u8> {
        (from..from + samples)
            .flat_map(|i| {
                (((2.0 * std::f32::consts::PI * hz * i as f32 / 16000.0).sin() * 10000.0) as i16)
                    .to_be_bytes()
            })
            .collect()
    }

    fn rms(be: &[u8]) -> f32 {
        let s: Vec<f32> = be
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_be_bytes([b[0], b[1]])))
            .collect();
        (s.iter().map(|x| x * x).sum::<f32>() / s.len() as f32).sqrt()
    }

    #[test]
    fn decimating_keeps_speech_band_tones_and_drops_what_would_alias() {
        for (hz, kept) in [(1000.0, true), (3000.0, true), (6000.0, false)] {
            let mut d = Decimator::new();
            let mut out = vec![0u8; 320];
            // Ten 20 ms frames one after the other: the filter's state carries over.
            let mut last = 0.0;
            for f in 0..10 {
                assert_eq!(d.process(&sine(hz, 320, f * 320), &mut out), 320);
                last = rms(&out);
            }
            let input = rms(&sine(hz, 320, 0));
            if kept {
                assert!(
                    (last / input - 1.0).abs() < 0.1,
                    "{hz} Hz: {last} vs {input}"
                );
            } else {
                assert!(
                    last / input < 0.05,
                    "{hz} Hz leaks through: {last} vs {input}"
                );
            }
        }
    }

    #[test]
    fn names_parse_back_to_their_format() {
        for f in FORMATS {
            assert_eq!(Format::parse(f.name()), Some(f));
        }
        assert_eq!(Format::parse("g722"), None);
    }
}
