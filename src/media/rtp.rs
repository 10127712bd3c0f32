//! What the echo and the bot bridge need to know about RTP: whether a datagram looks like a
//! packet, where its payload is, and how to write a header (or a packet of silence).

/// Size of the fixed RTP header.
pub const HEADER: usize = 12;

/// Whether `packet` looks like an RTP packet: version 2 and at least the fixed header plus the
/// CSRC list and extension header it announces.
pub fn looks_like_rtp(packet: &[u8]) -> bool {
    if packet.len() < HEADER || packet[0] >> 6 != 2 {
        return false;
    }
    let csrc = usize::from(packet[0] & 0x0f) * 4;
    let mut needed = HEADER + csrc;
    if packet[0] & 0x10 != 0 {
        // Header extension: 4 bytes of profile + length, then length 32-bit words.
        let Some(ext) = packet.get(needed..needed + 4) else {
            return false;
        };
        needed += 4 + usize::from(u16::from_be_bytes([ext[2], ext[3]])) * 4;
    }
    packet.len() >= needed
}

/// Writes into `buf` an RTP packet of `len` bytes of `fill` after the header, and returns its
/// length (at most `buf.len()`).
pub fn write_packet(
    buf: &mut [u8],
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    fill: u8,
    len: usize,
) -> usize {
    let total = (HEADER + len).min(buf.len());
    write_header(buf, payload_type, false, seq, timestamp, ssrc);
    buf[HEADER..total].fill(fill);
    total
}

/// Writes the fixed RTP header (version 2, no padding, extension or CSRC) into `buf[..12]`;
/// `marker` flags the first packet of a talk spurt.
pub fn write_header(
    buf: &mut [u8],
    payload_type: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
) {
    buf[0] = 0x80;
    buf[1] = (payload_type & 0x7f) | if marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// The payload of a packet that passed [`looks_like_rtp`]: after the CSRCs and any header
/// extension, before any padding; `None` when the padding claims more than there is.
pub fn payload(p: &[u8]) -> Option<&[u8]> {
    let csrc = usize::from(p.first()? & 0x0f);
    let mut start = HEADER + 4 * csrc;
    if p[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([*p.get(start + 2)?, *p.get(start + 3)?]));
        start += 4 + 4 * words;
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*p.last()?))?;
    }
    p.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testing::rtp;

    #[test]
    fn rtp_check_accepts_rtp_and_refuses_the_rest() {
        assert!(looks_like_rtp(&rtp(1)));
        assert!(!looks_like_rtp(&[]));
        assert!(!looks_like_rtp(b"hello world!"));
        let mut v1 = rtp(1);
        v1[0] = 0x40;
        assert!(!looks_like_rtp(&v1));
        // Announces 15 CSRCs it does not carry.
        let mut csrc = rtp(1)[..12].to_vec();
        csrc[0] = 0x8f;
        assert!(!looks_like_rtp(&csrc));
        // Announces an extension it does not carry.
        let mut ext = rtp(1)[..12].to_vec();
        ext[0] = 0x90;
        assert!(!looks_like_rtp(&ext));
        ext.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]);
        assert!(looks_like_rtp(&ext));
    }

    #[test]
    fn rtp_check_never_panics_on_arbitrary_bytes() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..64usize {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                let _ = looks_like_rtp(&bytes);
            }
        }
    }

    #[test]
    fn the_payload_skips_csrcs_and_extension_and_drops_padding() {
        let p = rtp(1);
        assert_eq!(payload(&p), Some(&p[12..]));
        let mut ext = rtp(1)[..12].to_vec();
        ext[0] = 0x91; // extension, one CSRC
        ext.extend_from_slice(&[0, 0, 0, 9, 0xbe, 0xde, 0, 1, 7, 7, 7, 7, 1, 2, 3]);
        assert_eq!(payload(&ext), Some(&[1u8, 2, 3][..]));
        let mut padded = rtp(1);
        padded[0] |= 0x20;
        *padded.last_mut().unwrap() = 4;
        assert_eq!(payload(&padded).map(<[u8]>::len), Some(156));
        *padded.last_mut().unwrap() = 255;
        assert_eq!(payload(&padded), None, "padding longer than the payload");
    }

    #[test]
    fn a_written_packet_is_rtp_with_the_given_fields() {
        let mut buf = [0u8; 2048];
        let n = write_packet(&mut buf, 0x88, 7, 1120, 0xdead_beef, 0xd5, 160);
        assert_eq!(n, 172);
        assert!(looks_like_rtp(&buf[..n]));
        assert_eq!(
            &buf[..12],
            &[0x80, 8, 0, 7, 0, 0, 4, 0x60, 0xde, 0xad, 0xbe, 0xef]
        );
        assert!(buf[12..n].iter().all(|b| *b == 0xd5));
        // A payload larger than the buffer is cut, not a panic.
        assert_eq!(write_packet(&mut buf[..100], 8, 0, 0, 1, 0, 640), 100);
    }
}
