//! The framing header of DTLS-UDP-SR and TLS-TCP-FH links (RFC 6940 §6.6.2)
//! and the receiver's ACK bookkeeping.

use super::codec::{Codec, Reader, WireError, Writer};

/// `FramedMessage` (§6.6.2): data (128) or ack (129).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum FramedMessage {
    Data {
        sequence: u32,
        message: Vec<u8>,
    },
    /// `received` has one bit per earlier sequence number: the least
    /// significant bit is `ack_sequence − 1`, the most significant
    /// `ack_sequence − 32` (the reading Wireshark's dissector implements).
    Ack {
        ack_sequence: u32,
        received: u32,
    },
}

pub const FRAME_DATA: u8 = 128;
pub const FRAME_ACK: u8 = 129;

impl Codec for FramedMessage {
    fn encode(&self, w: &mut Writer) {
        match self {
            FramedMessage::Data { sequence, message } => {
                w.u8(FRAME_DATA);
                w.u32(*sequence);
                w.opaque(3, "framed message", message);
            }
            FramedMessage::Ack { ack_sequence, received } => {
                w.u8(FRAME_ACK);
                w.u32(*ack_sequence);
                w.u32(*received);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        match r.u8("framed message type")? {
            FRAME_DATA => Ok(FramedMessage::Data {
                sequence: r.u32("sequence")?,
                message: r.opaque(3, "framed message")?.to_vec(),
            }),
            FRAME_ACK => Ok(FramedMessage::Ack { ack_sequence: r.u32("ack_sequence")?, received: r.u32("received")? }),
            // No length follows the type, so an unknown type cannot be skipped.
            other => Err(WireError::Invalid { what: "framed message type", value: other.into() }),
        }
    }
}

/// How many bytes the next frame on a stream needs, once its first bytes
/// are in: lets a TCP reader cut frames out of the byte stream.
pub fn frame_len(prefix: &[u8]) -> Result<Option<usize>, WireError> {
    let mut r = Reader::new(prefix);
    let Ok(ty) = r.u8("framed message type") else { return Ok(None) };
    match ty {
        FRAME_DATA => {
            if r.u32("sequence").is_err() {
                return Ok(None);
            }
            match r.u24("framed message length") {
                Ok(n) => Ok(Some(1 + 4 + 3 + n as usize)),
                Err(_) => Ok(None),
            }
        }
        FRAME_ACK => Ok(Some(9)),
        other => Err(WireError::Invalid { what: "framed message type", value: other.into() }),
    }
}

/// Receiver side of §6.6.2/§6.6.3: remembers which of the last 32 sequence
/// numbers arrived and builds the ACK for each data frame.
#[derive(Clone, Debug, Default)]
pub struct AckTracker {
    /// Highest sequence seen so far and a bitmap of the 32 before it.
    highest: Option<u32>,
    window: u32,
}

impl AckTracker {
    /// Records a received data frame and returns the ACK to send at once.
    /// Returns `None` for a duplicate (still ACKed by the caller if wished).
    pub fn on_data(&mut self, sequence: u32) -> FramedMessage {
        match self.highest {
            None => {
                self.highest = Some(sequence);
                self.window = 0;
            }
            Some(h) if sequence.wrapping_sub(h) as i32 > 0 => {
                let shift = sequence.wrapping_sub(h);
                // Slide the window: the old highest becomes bit (shift − 1).
                self.window = if shift >= 32 { 0 } else { (self.window << shift) | (1 << (shift - 1)) };
                self.highest = Some(sequence);
            }
            Some(h) => {
                let back = h.wrapping_sub(sequence);
                if (1..=32).contains(&back) {
                    self.window |= 1 << (back - 1);
                }
            }
        }
        FramedMessage::Ack { ack_sequence: sequence, received: self.received_before(sequence) }
    }

    /// Bitmap of the 32 sequence numbers before `seq` that were received.
    fn received_before(&self, seq: u32) -> u32 {
        let Some(h) = self.highest else { return 0 };
        let mut out = 0u32;
        for i in 0..32u32 {
            let s = seq.wrapping_sub(i + 1);
            let back = h.wrapping_sub(s);
            let got = if back == 0 { true } else { (1..=32).contains(&back) && self.window & (1 << (back - 1)) != 0 };
            if got {
                out |= 1 << i;
            }
        }
        out
    }
}

/// Sender side: which sequence numbers an ACK confirms.
pub fn acked_sequences(ack_sequence: u32, received: u32) -> impl Iterator<Item = u32> {
    std::iter::once(ack_sequence)
        .chain((0..32u32).filter(move |i| received & (1 << i) != 0).map(move |i| ack_sequence.wrapping_sub(i + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let d = FramedMessage::Data { sequence: 7, message: vec![0xaa, 0xbb] };
        assert_eq!(d.to_bytes().unwrap(), vec![128, 0, 0, 0, 7, 0, 0, 2, 0xaa, 0xbb]);
        let a = FramedMessage::Ack { ack_sequence: 7, received: 0x8000_0001 };
        assert_eq!(a.to_bytes().unwrap(), vec![129, 0, 0, 0, 7, 0x80, 0, 0, 1]);
        for m in [d, a] {
            let b = m.to_bytes().unwrap();
            assert_eq!(frame_len(&b).unwrap(), Some(b.len()));
            assert_eq!(FramedMessage::from_bytes(&b).unwrap(), m);
        }
        assert!(FramedMessage::from_bytes(&[5]).is_err());
        assert_eq!(frame_len(&[128, 0]).unwrap(), None);
    }

    #[test]
    fn ack_bitmap_tracks_the_last_32() {
        let mut t = AckTracker::default();
        for s in [0u32, 1, 2, 4] {
            t.on_data(s);
        }
        // Seq 5 arrives: 4, 2, 1, 0 received (bits 0, 2, 3, 4); 3 missing.
        let FramedMessage::Ack { ack_sequence, received } = t.on_data(5) else { panic!() };
        assert_eq!(ack_sequence, 5);
        assert_eq!(received, 0b11101);
        let got: Vec<u32> = acked_sequences(ack_sequence, received).collect();
        assert_eq!(got, vec![5, 4, 2, 1, 0]);
        // The late 3 fills the hole; its own ACK covers 2, 1, 0 below it.
        let FramedMessage::Ack { received, .. } = t.on_data(3) else { panic!() };
        assert_eq!(received & 0b111, 0b111);
        // A jump beyond 32 forgets the old window.
        let FramedMessage::Ack { received, .. } = t.on_data(100) else { panic!() };
        assert_eq!(received, 0);
    }
}
