//! The forwarding header (RFC 6940 §6.3.2) and forwarding options (§6.3.2.3).

use super::codec::{Codec, Reader, WireError, Writer};
use super::types::Destination;

/// `relo_token`: "RELO" with the high bit set (§6.3.2).
pub const RELO_TOKEN: u32 = 0xd245_4c4f;
/// `version` 1.0 (§6.3.2); receivers MUST reject other versions.
pub const VERSION: u8 = 0x0a;
/// Recommended initial TTL (§6.3.2, configuration `initial-ttl`).
pub const DEFAULT_TTL: u8 = 100;
/// Size of the header before the three variable lists.
pub const FIXED_HEADER_LEN: usize = 38;

/// The `fragment` field (§6.3.2, §6.7): bit 31 is always set, bit 30 marks
/// the last fragment, bits 29–24 are reserved and the low 24 bits carry the
/// offset of this fragment's data after the forwarding header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fragment(u32);

impl Fragment {
    /// A whole (unfragmented) message: `0xC0000000`.
    pub const WHOLE: Fragment = Fragment(0xC000_0000);

    /// A fragment at `offset` bytes into the message body; offsets above
    /// 2^24 − 1 do not fit and are refused.
    pub fn new(offset: u32, last: bool) -> Option<Fragment> {
        (offset <= 0xff_ffff).then_some(Fragment(0x8000_0000 | if last { 0x4000_0000 } else { 0 } | offset))
    }

    pub fn offset(self) -> u32 {
        self.0 & 0x00ff_ffff
    }

    pub fn is_last(self) -> bool {
        self.0 & 0x4000_0000 != 0
    }

    pub fn is_whole(self) -> bool {
        self.offset() == 0 && self.is_last()
    }

    pub fn raw(self) -> u32 {
        self.0
    }
}

/// Flags of a forwarding option (§6.3.2.3).
pub mod option_flags {
    /// A forwarder that does not understand the option must reject it.
    pub const FORWARD_CRITICAL: u8 = 0x01;
    /// The destination must understand the option.
    pub const DESTINATION_CRITICAL: u8 = 0x02;
    /// Copy the option into the response (flags cleared).
    pub const RESPONSE_COPY: u8 = 0x04;
}

/// A forwarding option (§6.3.2.3). RFC 6940 registers no option type of
/// its own beyond the reserved ones, so every option is kept as it arrived.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ForwardingOption {
    pub option_type: u8,
    pub flags: u8,
    pub value: Vec<u8>,
}

impl ForwardingOption {
    pub fn forward_critical(&self) -> bool {
        self.flags & option_flags::FORWARD_CRITICAL != 0
    }
    pub fn destination_critical(&self) -> bool {
        self.flags & option_flags::DESTINATION_CRITICAL != 0
    }
    pub fn response_copy(&self) -> bool {
        self.flags & option_flags::RESPONSE_COPY != 0
    }
}

impl Codec for ForwardingOption {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.option_type);
        w.u8(self.flags);
        w.opaque(2, "forwarding option", &self.value);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ForwardingOption {
            option_type: r.u8("option type")?,
            flags: r.u8("option flags")?,
            value: r.opaque(2, "forwarding option")?.to_vec(),
        })
    }
}

/// The forwarding header (§6.3.2). `length` is the length of the whole
/// message (or fragment) as it was on the wire; encoders fill it in.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ForwardingHeader {
    pub overlay: u32,
    pub configuration_sequence: u16,
    pub version: u8,
    pub ttl: u8,
    pub fragment: Fragment,
    pub length: u32,
    pub transaction_id: u64,
    pub max_response_length: u32,
    pub via_list: Vec<Destination>,
    pub destination_list: Vec<Destination>,
    pub options: Vec<ForwardingOption>,
}

impl ForwardingHeader {
    /// A fresh request header toward `destination_list`.
    pub fn new(
        overlay: u32,
        configuration_sequence: u16,
        transaction_id: u64,
        destination_list: Vec<Destination>,
    ) -> Self {
        ForwardingHeader {
            overlay,
            configuration_sequence,
            version: VERSION,
            ttl: DEFAULT_TTL,
            fragment: Fragment::WHOLE,
            length: 0,
            transaction_id,
            max_response_length: 0,
            via_list: Vec::new(),
            destination_list,
            options: Vec::new(),
        }
    }

    /// Encodes the header; `length` is written as given (see
    /// [`crate::wire::message::Message::encode`], which backpatches it).
    pub fn encode_with_length(&self, w: &mut Writer, length: u32) {
        w.u32(RELO_TOKEN);
        w.u32(self.overlay);
        w.u16(self.configuration_sequence);
        w.u8(self.version);
        w.u8(self.ttl);
        w.u32(self.fragment.raw());
        w.u32(length);
        w.u64(self.transaction_id);
        w.u32(self.max_response_length);
        let via = list_bytes(w, &self.via_list);
        let dest = list_bytes(w, &self.destination_list);
        let opts = list_bytes(w, &self.options);
        for (bytes, what) in [(&via, "via list"), (&dest, "destination list"), (&opts, "forwarding options")] {
            match u16::try_from(bytes.len()) {
                Ok(n) => w.u16(n),
                Err(_) => w.fail(WireError::TooLong { what, len: bytes.len(), max: 0xffff }),
            }
        }
        w.bytes(&via);
        w.bytes(&dest);
        w.bytes(&opts);
    }

    /// Bytes the header occupies when encoded.
    pub fn encoded_len(&self) -> Result<usize, WireError> {
        let mut w = Writer::new();
        self.encode_with_length(&mut w, 0);
        Ok(w.finish()?.len())
    }
}

/// Encodes a list whose length prefix is written separately (the three
/// list lengths precede all three lists in §6.3.2).
fn list_bytes<T: Codec>(outer: &mut Writer, items: &[T]) -> Vec<u8> {
    let mut w = Writer::new();
    items.iter().for_each(|i| i.encode(&mut w));
    w.finish().unwrap_or_else(|e| {
        outer.fail(e);
        Vec::new()
    })
}

impl Codec for ForwardingHeader {
    fn encode(&self, w: &mut Writer) {
        self.encode_with_length(w, self.length);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let token = r.u32("relo_token")?;
        if token != RELO_TOKEN {
            return Err(WireError::Invalid { what: "relo_token", value: token.into() });
        }
        let overlay = r.u32("overlay")?;
        let configuration_sequence = r.u16("configuration_sequence")?;
        let version = r.u8("version")?;
        let ttl = r.u8("ttl")?;
        let raw_fragment = r.u32("fragment")?;
        // §6.7: a fragment field with the high bit clear is not RELOAD 1.0.
        if raw_fragment & 0x8000_0000 == 0 {
            return Err(WireError::Invalid { what: "fragment", value: raw_fragment.into() });
        }
        let length = r.u32("length")?;
        let transaction_id = r.u64("transaction_id")?;
        let max_response_length = r.u32("max_response_length")?;
        let via_len = usize::from(r.u16("via_list_length")?);
        let dest_len = usize::from(r.u16("destination_list_length")?);
        let opt_len = usize::from(r.u16("options_length")?);
        let via_list = decode_list(r.bytes(via_len, "via list")?)?;
        let destination_list = decode_list(r.bytes(dest_len, "destination list")?)?;
        let options = decode_list(r.bytes(opt_len, "forwarding options")?)?;
        Ok(ForwardingHeader {
            overlay,
            configuration_sequence,
            version,
            ttl,
            fragment: Fragment(raw_fragment),
            length,
            transaction_id,
            max_response_length,
            via_list,
            destination_list,
            options,
        })
    }
}

fn decode_list<T: Codec>(bytes: &[u8]) -> Result<Vec<T>, WireError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(T::decode(&mut r)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::types::{NodeId, ResourceId};

    fn sample() -> ForwardingHeader {
        let mut h = ForwardingHeader::new(
            0x9aa3_2b8d,
            1,
            0x0102_0304_0506_0708,
            vec![Destination::Node(NodeId::from_u128(5)), Destination::Resource(ResourceId(vec![9; 16]))],
        );
        h.via_list.push(Destination::Node(NodeId::from_u128(3)));
        h.options.push(ForwardingOption { option_type: 1, flags: option_flags::FORWARD_CRITICAL, value: vec![1, 2] });
        h
    }

    #[test]
    fn fixed_part_layout() {
        let mut w = Writer::new();
        sample().encode_with_length(&mut w, 0x1234);
        let b = w.finish().unwrap();
        assert_eq!(&b[0..4], &[0xd2, 0x45, 0x4c, 0x4f]);
        assert_eq!(&b[4..8], &[0x9a, 0xa3, 0x2b, 0x8d]);
        assert_eq!(b[10], VERSION);
        assert_eq!(b[11], DEFAULT_TTL);
        assert_eq!(&b[12..16], &[0xc0, 0, 0, 0]);
        assert_eq!(&b[16..20], &[0, 0, 0x12, 0x34]);
        // via: one node entry = 18 bytes; dest: 18 + 19; options: 6.
        assert_eq!(&b[32..38], &[0, 18, 0, 37, 0, 6]);
        assert_eq!(b.len(), FIXED_HEADER_LEN + 18 + 37 + 6);
    }

    #[test]
    fn round_trip_and_bad_token() {
        let mut h = sample();
        h.length = 99;
        let b = h.to_bytes().unwrap();
        assert_eq!(ForwardingHeader::from_bytes(&b).unwrap(), h);
        let mut bad = b.clone();
        bad[0] = 0;
        assert!(ForwardingHeader::from_bytes(&bad).is_err());
        let mut bad = b;
        bad[12] = 0x40;
        assert!(ForwardingHeader::from_bytes(&bad).is_err());
    }

    #[test]
    fn fragment_bits() {
        let f = Fragment::new(300, true).unwrap();
        assert_eq!(f.raw(), 0xC000_012C);
        assert!(f.is_last() && !f.is_whole());
        assert!(Fragment::WHOLE.is_whole());
        assert!(Fragment::new(1 << 24, false).is_none());
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let b = sample().to_bytes().unwrap();
        for n in 0..b.len() {
            assert!(ForwardingHeader::from_bytes(&b[..n]).is_err(), "prefix {n}");
        }
    }
}
