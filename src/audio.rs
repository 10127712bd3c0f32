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

    #[test]
    fn names_parse_back_to_their_format() {
        for f in FORMATS {
            assert_eq!(Format::parse(f.name()), Some(f));
        }
        assert_eq!(Format::parse("g722"), None);
    }
}
