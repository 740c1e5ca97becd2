//! RFC 7983 §7: which protocol a datagram belongs to, from its first byte.
//!
//! One UDP socket can carry ICE connectivity checks (STUN), DTLS (overlay
//! links, DTLS-SRTP), TURN ChannelData and SRTP/SRTCP at once, because the
//! first byte of each falls in a disjoint range:
//!
//! ```text
//!   [0..3]     STUN                 [64..79]   TURN ChannelData
//!   [16..19]   ZRTP                 [128..191] RTP / RTCP
//!   [20..63]   DTLS                 anything else: drop
//! ```
//!
//! The classifier is pure and allocation-free: the socket owner calls it
//! once per datagram and routes on the answer.

/// The protocol a datagram's first byte names (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PacketClass {
    /// STUN (RFC 8489): the two top bits of a STUN message are zero and
    /// its method range leaves the first byte in 0..=3.
    Stun,
    /// ZRTP (RFC 6189).
    Zrtp,
    /// A DTLS record: the content type (20..=63 reserved for DTLS).
    Dtls,
    /// TURN ChannelData (RFC 8656 §12): channel numbers 0x4000..=0x4FFF.
    TurnChannel,
    /// RTP or RTCP (version 2: the top two bits are `10`).
    Rtp,
    /// Empty, or a first byte no range claims: RFC 7983 says drop it.
    Unknown,
}

/// Classifies a datagram by its first byte (RFC 7983 §7).
pub fn classify(datagram: &[u8]) -> PacketClass {
    match datagram.first() {
        Some(0..=3) => PacketClass::Stun,
        Some(16..=19) => PacketClass::Zrtp,
        Some(20..=63) => PacketClass::Dtls,
        Some(64..=79) => PacketClass::TurnChannel,
        Some(128..=191) => PacketClass::Rtp,
        _ => PacketClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_first_byte_falls_in_its_rfc_7983_range() {
        for b in 0u8..=255 {
            let want = match b {
                0..=3 => PacketClass::Stun,
                16..=19 => PacketClass::Zrtp,
                20..=63 => PacketClass::Dtls,
                64..=79 => PacketClass::TurnChannel,
                128..=191 => PacketClass::Rtp,
                _ => PacketClass::Unknown,
            };
            assert_eq!(classify(&[b, 0, 0, 0]), want, "first byte {b}");
        }
        assert_eq!(classify(&[]), PacketClass::Unknown);
    }

    #[test]
    fn real_packets_are_classified() {
        // A STUN Binding request header (RFC 8489 §5): type 0x0001, magic cookie.
        let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(classify(&stun), PacketClass::Stun);
        // A DTLS 1.2 handshake record (content type 22) and application data (23).
        assert_eq!(classify(&[22, 0xfe, 0xfd, 0, 0]), PacketClass::Dtls);
        assert_eq!(classify(&[23, 0xfe, 0xfd, 0, 1]), PacketClass::Dtls);
        // ChannelData on channel 0x4001.
        assert_eq!(classify(&[0x40, 0x01, 0x00, 0x04, 1, 2, 3, 4]), PacketClass::TurnChannel);
        // RTP v2 with payload type 111 (Opus), and RTCP sender report (200).
        assert_eq!(classify(&[0x80, 111, 0, 1]), PacketClass::Rtp);
        assert_eq!(classify(&[0x81, 200, 0, 6]), PacketClass::Rtp);
        // RELOAD framing (DATA 128, ACK 129) would read as RTP: it runs only
        // inside DTLS records or on its own TCP ports, never bare on a shared
        // socket.
        assert_eq!(classify(&[128, 0, 0, 0]), PacketClass::Rtp);
        assert_eq!(classify(b"hello"), PacketClass::Unknown);
    }
}
