//! The TLS presentation language (RFC 6940 §6.3.1) as two small tools:
//! a bounds-checked [`Reader`] and a [`Writer`] that records, rather than
//! panics on, a vector that outgrows its length prefix.
//!
//! Every read is checked before it happens: a length read from the wire is
//! compared with what is left before it bounds another read, so a decoder
//! built from these calls cannot index out of range.

use thiserror::Error;

/// Why bytes could not be decoded (or a value could not be encoded).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The input ended before `what` was complete.
    #[error("truncated {what}: need {need} bytes, {have} left")]
    Truncated { what: &'static str, need: usize, have: usize },
    /// Bytes were left over after a structure that must fill its container.
    #[error("{count} trailing bytes after {what}")]
    Trailing { what: &'static str, count: usize },
    /// A field holds a value the RFC forbids here.
    #[error("invalid {what}: {value:#x}")]
    Invalid { what: &'static str, value: u64 },
    /// A field holds a value the RFC forbids here (described).
    #[error("invalid {what}: {reason}")]
    Malformed { what: &'static str, reason: &'static str },
    /// A value is too long for the length prefix the RFC gives it (encoding).
    #[error("{what} is {len} bytes, more than its {max}-byte limit")]
    TooLong { what: &'static str, len: usize, max: usize },
}

/// Width, in bytes, of a vector's length prefix (`<0..2^8-1>` is 1, …).
pub type LenWidth = usize;

const fn max_for(width: LenWidth) -> usize {
    match width {
        1 => 0xff,
        2 => 0xffff,
        3 => 0xff_ffff,
        _ => 0xffff_ffff,
    }
}

/// A cursor over a byte slice whose reads never go past its end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The unread part, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Fails unless everything was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(WireError::Trailing { what, count }),
        }
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let have = self.remaining();
        if n > have {
            return Err(WireError::Truncated { what, need: n, have });
        }
        let out = self.buf.get(self.pos..self.pos + n).ok_or(WireError::Truncated { what, need: n, have })?;
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u24(&mut self, what: &'static str) -> Result<u32, WireError> {
        let [a, b, c] = self.array::<3>(what)?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// `Boolean` (RFC 6940 §6.3.1): a byte that must be 0 or 1.
    pub fn boolean(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::Invalid { what, value: v.into() }),
        }
    }

    /// Reads a length prefix of `width` bytes.
    pub fn len(&mut self, width: LenWidth, what: &'static str) -> Result<usize, WireError> {
        let n = match width {
            1 => self.u8(what)?.into(),
            2 => self.u16(what)?.into(),
            3 => self.u24(what)?,
            _ => self.u32(what)?,
        };
        usize::try_from(n).map_err(|_| WireError::Invalid { what, value: n.into() })
    }

    /// `opaque x<0..2^(8*width)-1>`: a length prefix, then that many bytes.
    pub fn opaque(&mut self, width: LenWidth, what: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.len(width, what)?;
        self.bytes(n, what)
    }

    /// A length-prefixed vector read as its own sub-reader.
    pub fn sub(&mut self, width: LenWidth, what: &'static str) -> Result<Reader<'a>, WireError> {
        Ok(Reader::new(self.opaque(width, what)?))
    }

    /// A length-prefixed vector of structures, each decoded by `item`; the
    /// items must fill the vector exactly.
    pub fn vec<T>(
        &mut self,
        width: LenWidth,
        what: &'static str,
        mut item: impl FnMut(&mut Reader<'a>) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let mut sub = self.sub(width, what)?;
        let mut out = Vec::new();
        while !sub.is_empty() {
            out.push(item(&mut sub)?);
        }
        Ok(out)
    }
}

/// An output buffer. Writing never fails on the spot; a vector longer than
/// its prefix allows is remembered and reported by [`Writer::finish`].
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    error: Option<WireError>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer { buf: Vec::with_capacity(n), error: None }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn finish(self) -> Result<Vec<u8>, WireError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.buf),
        }
    }

    /// Records an encoding error (the first one wins).
    pub fn fail(&mut self, e: WireError) {
        self.error.get_or_insert(e);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    pub fn u24(&mut self, v: u32, what: &'static str) {
        if v > 0xff_ffff {
            self.fail(WireError::TooLong { what, len: v as usize, max: 0xff_ffff });
        }
        self.bytes(&v.to_be_bytes()[1..]);
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }

    pub fn boolean(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// `opaque x<0..2^(8*width)-1>`.
    pub fn opaque(&mut self, width: LenWidth, what: &'static str, data: &[u8]) {
        self.vec(width, what, |w| w.bytes(data));
    }

    /// A vector whose contents `body` writes; its length prefix is filled
    /// in afterwards and checked against the prefix's maximum.
    pub fn vec(&mut self, width: LenWidth, what: &'static str, body: impl FnOnce(&mut Writer)) {
        let at = self.buf.len();
        self.buf.resize(at + width, 0);
        body(self);
        let len = self.buf.len() - at - width;
        let max = max_for(width);
        if len > max {
            self.fail(WireError::TooLong { what, len, max });
        }
        let be = (len as u64).to_be_bytes();
        if let (Some(dst), Some(src)) = (self.buf.get_mut(at..at + width), be.get(8 - width..)) {
            dst.copy_from_slice(src);
        }
    }

    /// Overwrites four bytes already written at `at` (used to backpatch
    /// lengths known only at the end, such as the forwarding header's).
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        if let Some(dst) = self.buf.get_mut(at..at + 4) {
            dst.copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// A value with a wire form.
pub trait Codec: Sized {
    fn encode(&self, w: &mut Writer);
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError>;

    fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }

    /// Decodes a value that must fill `bytes` exactly.
    fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let v = Self::decode(&mut r)?;
        r.finish(std::any::type_name::<Self>())?;
        Ok(v)
    }
}

/// Writes a vector of encodable items.
pub fn put_vec<T: Codec>(w: &mut Writer, width: LenWidth, what: &'static str, items: &[T]) {
    w.vec(width, what, |w| items.iter().for_each(|i| i.encode(w)));
}

/// Reads a vector of decodable items.
pub fn get_vec<T: Codec>(r: &mut Reader<'_>, width: LenWidth, what: &'static str) -> Result<Vec<T>, WireError> {
    r.vec(width, what, |r| T::decode(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_length_is_checked_before_the_read() {
        // Claims 5 bytes, carries 2.
        let mut r = Reader::new(&[5, 1, 2]);
        assert_eq!(r.opaque(1, "x"), Err(WireError::Truncated { what: "x", need: 5, have: 2 }));
    }

    #[test]
    fn oversized_vector_is_an_encoding_error_not_a_silent_wrap() {
        let mut w = Writer::new();
        w.opaque(1, "small", &[0u8; 256]);
        assert!(matches!(w.finish(), Err(WireError::TooLong { len: 256, max: 255, .. })));
    }

    #[test]
    fn u24_round_trip_and_boolean_strictness() {
        let mut w = Writer::new();
        w.u24(0x12_3456, "n");
        let b = w.finish().unwrap_or_default();
        assert_eq!(b, [0x12, 0x34, 0x56]);
        assert_eq!(Reader::new(&b).u24("n"), Ok(0x12_3456));
        assert!(Reader::new(&[2]).boolean("flag").is_err());
    }
}
