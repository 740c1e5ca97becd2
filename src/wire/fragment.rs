//! Fragmentation and reassembly (RFC 6940 §6.7).
//!
//! Any hop may fragment; only the destination reassembles. Every fragment
//! carries a full forwarding header; `offset` counts bytes after the
//! forwarding header of the unfragmented message. Reassembly buffers are
//! keyed by transaction id and dropped after 15 s (§6.7).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::codec::{Codec, Reader, WireError, Writer};
use super::header::{ForwardingHeader, Fragment};

/// How long a partial message is held (§6.7).
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(15);
/// §6.7: every fragment carries at least this much of the message.
pub const MIN_FRAGMENT_PAYLOAD: usize = 256;

/// Splits an encoded, unfragmented message into fragments of at most
/// `max_len` bytes each (header included), of equal size as §6.7 asks.
/// A message that already fits is returned unchanged.
pub fn fragment(message: &[u8], max_len: usize) -> Result<Vec<Vec<u8>>, WireError> {
    if message.len() <= max_len {
        return Ok(vec![message.to_vec()]);
    }
    let mut r = Reader::new(message);
    let header = ForwardingHeader::decode(&mut r)?;
    if !header.fragment.is_whole() {
        return Err(WireError::Malformed { what: "fragment", reason: "message is already a fragment" });
    }
    let header_len = r.position();
    let payload = r.rest();
    let room = max_len.saturating_sub(header_len);
    if room < MIN_FRAGMENT_PAYLOAD {
        return Err(WireError::Malformed {
            what: "fragment",
            reason: "fragment size leaves under 256 bytes of payload",
        });
    }
    let count = payload.len().div_ceil(room);
    let chunk = payload.len().div_ceil(count);
    let mut out = Vec::with_capacity(count);
    for (i, piece) in payload.chunks(chunk).enumerate() {
        let offset = u32::try_from(i * chunk)
            .map_err(|_| WireError::Invalid { what: "fragment offset", value: (i * chunk) as u64 })?;
        let frag = Fragment::new(offset, i + 1 == count)
            .ok_or(WireError::Invalid { what: "fragment offset", value: offset.into() })?;
        let h = ForwardingHeader { fragment: frag, ..header.clone() };
        let mut w = Writer::with_capacity(header_len + piece.len());
        h.encode_with_length(&mut w, u32::try_from(header_len + piece.len()).unwrap_or(u32::MAX));
        w.bytes(piece);
        out.push(w.finish()?);
    }
    Ok(out)
}

/// What a fragment did to the reassembly state.
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembly {
    /// The message is complete: its bytes, as if never fragmented.
    Complete(Vec<u8>),
    /// More fragments are needed.
    Pending,
}

/// Per-destination reassembly buffers, sans-IO (time is passed in).
#[derive(Debug)]
pub struct Reassembler {
    partial: BTreeMap<u64, Partial>,
    held: usize,
    max_message: usize,
    max_held: usize,
}

#[derive(Debug)]
struct Partial {
    header: ForwardingHeader,
    pieces: BTreeMap<u32, Vec<u8>>,
    total: Option<usize>,
    deadline: Instant,
    bytes: usize,
}

impl Reassembler {
    /// `max_message`: the largest reassembled payload accepted;
    /// `max_held`: bytes held over all partial messages (§6.7: drop when out of buffer).
    pub fn new(max_message: usize, max_held: usize) -> Self {
        Reassembler { partial: BTreeMap::new(), held: 0, max_message, max_held }
    }

    /// Accepts one message or fragment. Whole messages pass straight through.
    pub fn push(&mut self, now: Instant, bytes: &[u8]) -> Result<Reassembly, WireError> {
        let mut r = Reader::new(bytes);
        let header = ForwardingHeader::decode(&mut r)?;
        if header.fragment.is_whole() {
            return Ok(Reassembly::Complete(bytes.to_vec()));
        }
        let piece = r.rest();
        let offset = header.fragment.offset();
        let end = offset as usize + piece.len();
        if end > self.max_message {
            self.drop_partial(header.transaction_id);
            return Err(WireError::TooLong { what: "reassembled message", len: end, max: self.max_message });
        }
        if self.held + piece.len() > self.max_held {
            return Err(WireError::TooLong {
                what: "reassembly buffer",
                len: self.held + piece.len(),
                max: self.max_held,
            });
        }
        let txid = header.transaction_id;
        let last = header.fragment.is_last();
        let entry = self.partial.entry(txid).or_insert_with(|| Partial {
            header: header.clone(),
            pieces: BTreeMap::new(),
            total: None,
            deadline: now + REASSEMBLY_TIMEOUT,
            bytes: 0,
        });
        if offset == 0 {
            entry.header = header;
        }
        if last {
            entry.total = Some(end);
        }
        if let Some(old) = entry.pieces.insert(offset, piece.to_vec()) {
            entry.bytes -= old.len();
            self.held -= old.len();
        }
        entry.bytes += piece.len();
        self.held += piece.len();
        let Some(done) = entry.assemble() else { return Ok(Reassembly::Pending) };
        self.drop_partial(txid);
        Ok(Reassembly::Complete(done?))
    }

    /// Drops partial messages whose 15 s have passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> = self.partial.iter().filter(|(_, p)| p.deadline <= now).map(|(k, _)| *k).collect();
        for k in expired {
            self.drop_partial(k);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partial.values().map(|p| p.deadline).min()
    }

    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn drop_partial(&mut self, txid: u64) {
        if let Some(p) = self.partial.remove(&txid) {
            self.held -= p.bytes;
        }
    }
}

impl Partial {
    /// The whole message once every byte up to the last fragment is here.
    fn assemble(&self) -> Option<Result<Vec<u8>, WireError>> {
        let total = self.total?;
        let mut covered = 0usize;
        for (off, piece) in &self.pieces {
            if *off as usize > covered {
                return None;
            }
            covered = covered.max(*off as usize + piece.len());
        }
        if covered < total {
            return None;
        }
        let mut payload = vec![0u8; total];
        for (off, piece) in &self.pieces {
            let start = *off as usize;
            let stop = (start + piece.len()).min(total);
            if let (Some(dst), Some(src)) = (payload.get_mut(start..stop), piece.get(..stop.saturating_sub(start))) {
                dst.copy_from_slice(src);
            }
        }
        let header = ForwardingHeader { fragment: Fragment::WHOLE, ..self.header.clone() };
        let mut w = Writer::with_capacity(total + 64);
        header.encode_with_length(&mut w, 0);
        let len = w.len() + total;
        w.bytes(&payload);
        w.patch_u32(16, u32::try_from(len).unwrap_or(u32::MAX));
        Some(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::types::{Destination, NodeId};

    fn big_message(payload: usize) -> Vec<u8> {
        let h = ForwardingHeader::new(1, 2, 77, vec![Destination::Node(NodeId::from_u128(9))]);
        let mut w = Writer::new();
        h.encode_with_length(&mut w, 0);
        let len = w.len() + payload;
        w.bytes(&(0..payload).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        w.patch_u32(16, len as u32);
        w.finish().unwrap()
    }

    #[test]
    fn split_equally_and_reassemble_in_any_order() {
        let msg = big_message(3000);
        let frags = fragment(&msg, 1200).unwrap();
        assert_eq!(frags.len(), 3);
        assert!(frags.iter().all(|f| f.len() <= 1200));
        let sizes: Vec<usize> = frags.iter().map(Vec::len).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        let now = Instant::now();
        let mut r = Reassembler::new(1 << 20, 1 << 22);
        assert_eq!(r.push(now, &frags[2]).unwrap(), Reassembly::Pending);
        assert_eq!(r.push(now, &frags[0]).unwrap(), Reassembly::Pending);
        assert_eq!(r.push(now, &frags[1]).unwrap(), Reassembly::Complete(msg));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn partial_messages_expire_after_15_s() {
        let msg = big_message(3000);
        let frags = fragment(&msg, 1200).unwrap();
        let now = Instant::now();
        let mut r = Reassembler::new(1 << 20, 1 << 22);
        r.push(now, &frags[0]).unwrap();
        assert_eq!(r.poll_timeout(), Some(now + REASSEMBLY_TIMEOUT));
        r.handle_timeout(now + Duration::from_secs(14));
        assert_eq!(r.pending(), 1);
        r.handle_timeout(now + REASSEMBLY_TIMEOUT);
        assert_eq!(r.pending(), 0);
        // The rest alone can no longer complete the message.
        assert_eq!(r.push(now, &frags[1]).unwrap(), Reassembly::Pending);
        assert_eq!(r.push(now, &frags[2]).unwrap(), Reassembly::Pending);
    }

    #[test]
    fn oversized_reassembly_is_refused() {
        let msg = big_message(3000);
        let frags = fragment(&msg, 1200).unwrap();
        let mut r = Reassembler::new(1000, 1 << 22);
        assert!(r.push(Instant::now(), &frags[2]).is_err());
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn tiny_fragments_are_refused() {
        assert!(fragment(&big_message(3000), 200).is_err());
    }
}
