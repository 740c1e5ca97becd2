//! Cutting §6.6.2 frames out of received bytes.

use super::DATA_FRAME_HEADER;
use crate::wire::framing::{FramedMessage, frame_len};
use crate::wire::{Codec, Reader};

/// Cuts whole frames off the front of `buf` (a TCP byte stream or one
/// DTLS record). A partial frame stays in `buf`. The error, if any, names
/// why the link must close (a frame type that is not §6.6.2's, or a DATA
/// frame longer than `max_message`, seen from its header before it is
/// buffered); the frames before the bad one are returned with it.
pub fn take_frames(buf: &mut Vec<u8>, max_message: usize) -> (Vec<FramedMessage>, Result<(), String>) {
    let mut out = Vec::new();
    let mut used = 0usize;
    let verdict = loop {
        let rest = buf.get(used..).unwrap_or_default();
        let len = match frame_len(rest) {
            Ok(Some(n)) => n,
            Ok(None) => break Ok(()),
            Err(_) => {
                let ty = rest.first().copied().unwrap_or_default();
                break Err(format!("unknown frame type {ty}"));
            }
        };
        if len > max_message.saturating_add(DATA_FRAME_HEADER) {
            break Err(format!("oversized frame {len} bytes"));
        }
        let Some(frame) = rest.get(..len) else { break Ok(()) };
        let mut r = Reader::new(frame);
        match FramedMessage::decode(&mut r) {
            Ok(f) => out.push(f),
            Err(e) => break Err(format!("malformed frame: {e}")),
        }
        used += len;
    };
    buf.drain(..used);
    (out, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seq: u32, len: usize) -> Vec<u8> {
        FramedMessage::Data { sequence: seq, message: vec![7; len] }.to_bytes().unwrap()
    }

    #[test]
    fn frames_are_cut_from_a_stream() {
        let mut stream = data(0, 10);
        stream.extend(FramedMessage::Ack { ack_sequence: 3, received: 1 }.to_bytes().unwrap());
        let second = data(1, 20);
        stream.extend(&second[..5]);
        let (got, ok) = take_frames(&mut stream, 100);
        assert_eq!(ok, Ok(()));
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], FramedMessage::Ack { ack_sequence: 3, received: 1 });
        assert_eq!(stream, second[..5].to_vec());
        stream.extend(&second[5..]);
        let (got, _) = take_frames(&mut stream, 100);
        assert_eq!(got, vec![FramedMessage::Data { sequence: 1, message: vec![7; 20] }]);
        assert!(stream.is_empty());
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused_from_the_header() {
        // Only the 8-byte header of a 1 MB frame is needed to refuse it.
        let mut head = data(0, 1 << 20)[..8].to_vec();
        assert_eq!(take_frames(&mut head, 5000).1, Err(format!("oversized frame {} bytes", 8 + (1 << 20))));
        let mut exact = data(0, 5000);
        assert_eq!(
            take_frames(&mut exact, 5000),
            (vec![FramedMessage::Data { sequence: 0, message: vec![7; 5000] }], Ok(()))
        );
        // A good frame, then garbage: the good one is still handed over.
        let mut mixed = data(4, 1);
        mixed.extend(b"GET / HTTP/1.1\r\n");
        let (got, verdict) = take_frames(&mut mixed, 5000);
        assert_eq!(got, vec![FramedMessage::Data { sequence: 4, message: vec![7] }]);
        assert_eq!(verdict, Err("unknown frame type 71".to_owned()));
    }
}
