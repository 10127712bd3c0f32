//! Which Asterisk voicebot1 is talking to, and what that version does differently.
//!
//! voicebot1 reads `GET /asterisk/info` at every connect. The version decides two things: whether
//! voicebot1 can run at all (it needs `POST /channels/externalMedia` answering with a bare
//! Channel, i.e. 16.7 / 17.2 and later), and which known differences to expect. Every difference
//! an operator can see is listed in README.md ("Supported Asterisk versions") with the code that
//! handles it; the ones decided by version live here, so a grep for the version number finds them.

use std::fmt;

/// An Asterisk version as `GET /asterisk/info` reports it (`system.version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsteriskVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The string Asterisk sent, e.g. `16.28.0~dfsg-0+deb11u4` (Debian) or `certified/18.9-cert5`.
    pub raw: String,
}

/// Whether voicebot1 runs on a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// Known not to work, with the reason for the operator.
    Unsupported(String),
}

impl AsteriskVersion {
    /// Reads the leading `MAJOR.MINOR[.PATCH]` of a version string; `None` when there is none (a
    /// git build, a vendor string). Such a build is run with a warning: refusing it would stop a
    /// box for no known reason.
    pub fn parse(raw: &str) -> Option<AsteriskVersion> {
        let s = raw.trim();
        let s = s.strip_prefix("certified/").unwrap_or(s);
        let mut numbers = [0u32; 3];
        let mut count = 0;
        for (i, part) in s.splitn(3, '.').enumerate() {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                break;
            }
            numbers[i] = digits.parse().ok()?;
            count = i + 1;
            // "18.9-cert5": the minor ends at the first non-digit; nothing after it is a number.
            if digits.len() != part.len() && i < 2 {
                break;
            }
        }
        (count >= 2).then(|| AsteriskVersion {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
            raw: s.to_string(),
        })
    }

    fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// Whether voicebot1 can run on this version.
    pub fn support(&self) -> Support {
        let needs = "voicebot1 needs 16.7, 17.2 or later";
        match self.major {
            0..=15 => Support::Unsupported(format!("it has no externalMedia channels; {needs}")),
            16 if !self.at_least(16, 7) => {
                Support::Unsupported(unsupported_external_media(self, needs))
            }
            17 if !self.at_least(17, 2) => {
                Support::Unsupported(unsupported_external_media(self, needs))
            }
            _ => Support::Supported,
        }
    }

    /// Before 18.21 / 20.6 / 21.1 Asterisk runs an ARI command queued on a channel only when that
    /// channel's Stasis loop wakes up: on a frame from the channel, or after up to 200 ms
    /// (asterisk/asterisk #362). voicebot1 then wakes the channels itself (see `media::Echo`).
    pub fn runs_commands_late(&self) -> bool {
        match self.major {
            0..=17 | 19 => true,
            18 => !self.at_least(18, 21),
            20 => !self.at_least(20, 6),
            21 => !self.at_least(21, 1),
            _ => false,
        }
    }

    /// Before 20.18 / 22.8 a destination that did not answer within the dial timeout is destroyed
    /// with cause 0 ("Unknown") instead of 19 ("No answer") (asterisk/asterisk #1660).
    pub fn reports_dial_timeout_as_cause_0(&self) -> bool {
        match self.major {
            0..=19 | 21 => true,
            20 => !self.at_least(20, 18),
            22 => !self.at_least(22, 8),
            _ => false,
        }
    }
}

fn unsupported_external_media(v: &AsteriskVersion, needs: &str) -> String {
    if v.at_least(16, 6) && v.major == 16 || v.at_least(17, 1) && v.major == 17 {
        format!("its externalMedia answers with a different body; {needs}")
    } else {
        format!("it has no externalMedia channels; {needs}")
    }
}

impl fmt::Display for AsteriskVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> AsteriskVersion {
        AsteriskVersion::parse(s).unwrap_or_else(|| panic!("{s} did not parse"))
    }

    #[test]
    fn distribution_and_certified_version_strings_parse() {
        assert_eq!(
            (
                v("16.28.0~dfsg-0+deb11u4").major,
                v("16.28.0~dfsg-0+deb11u4").minor
            ),
            (16, 28)
        );
        let sid = v("22.10.1+dfsg+~cs6.15.60671435-1");
        assert_eq!((sid.major, sid.minor, sid.patch), (22, 10, 1));
        let cert = v("certified/18.9-cert5");
        assert_eq!((cert.major, cert.minor, cert.patch), (18, 9, 0));
        assert_eq!(v("18.10.0~dfsg+~cs6.10.40431411-1").minor, 10);
        assert_eq!(v(" 20.6.0 ").patch, 0);
    }

    #[test]
    fn strings_without_a_release_number_do_not_parse() {
        for s in ["", "GIT-master-4a1c2b", "unknown", "16", "x.y.z"] {
            assert_eq!(AsteriskVersion::parse(s), None, "{s}");
        }
    }

    #[test]
    fn versions_before_16_7_and_17_2_are_refused_with_the_reason() {
        for s in ["16.6.2", "17.1.0", "16.5.0", "13.38.3", "15.7.4"] {
            assert!(matches!(v(s).support(), Support::Unsupported(_)), "{s}");
        }
        let Support::Unsupported(why) = v("16.6.2").support() else {
            unreachable!()
        };
        assert!(
            why.contains("different body") && why.contains("16.7"),
            "{why}"
        );
        let Support::Unsupported(why) = v("13.38.3").support() else {
            unreachable!()
        };
        assert!(why.contains("no externalMedia"), "{why}");
        for s in [
            "16.7.0", "16.28.0", "17.2.0", "18.10.0", "20.5.0", "21.4.1", "22.10.1", "23.0.0",
        ] {
            assert_eq!(v(s).support(), Support::Supported, "{s}");
        }
    }

    #[test]
    fn late_command_wake_up_is_known_by_branch() {
        for s in [
            "16.28.0", "18.10.0", "18.20.2", "19.8.0", "20.5.2", "21.0.0",
        ] {
            assert!(v(s).runs_commands_late(), "{s}");
        }
        for s in ["18.21.0", "20.6.0", "21.1.0", "22.0.0", "22.10.1"] {
            assert!(!v(s).runs_commands_late(), "{s}");
        }
    }

    #[test]
    fn dial_timeout_cause_0_is_known_by_branch() {
        for s in ["16.28.0", "18.26.0", "20.17.0", "22.7.0"] {
            assert!(v(s).reports_dial_timeout_as_cause_0(), "{s}");
        }
        for s in ["20.18.0", "22.8.0", "22.10.1", "23.1.0"] {
            assert!(!v(s).reports_dial_timeout_as_cause_0(), "{s}");
        }
    }
}
