//! Stream framing for SIP over TCP/TLS (RFC 3261 §18.3): a message ends
//! Content-Length bytes after its empty line, so Content-Length is
//! mandatory on streams. CRLFs before a start line are skipped (§7.5), and
//! the RFC 5626 §3.5.1 keep-alives are recognised: a client's "ping" is
//! CRLFCRLF, the server answers with one CRLF "pong" ([`PONG`]).
//!
//! Sans-IO: the runtime feeds received bytes with [`StreamDeframer::push`]
//! and drains [`StreamDeframer::next_frame`] until `Ok(None)`. An error is
//! final — the byte stream has lost sync — and the runtime should close the
//! connection (optionally answering 400/513 first).

/// What a server sends in answer to a [`Frame::KeepAlivePing`].
pub const PONG: &[u8] = b"\r\n";
/// The keep-alive a client sends on an idle flow.
pub const PING: &[u8] = b"\r\n\r\n";
/// Default cap on a message head (start line and headers).
pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message (head and exactly Content-Length body bytes), ready
    /// for [`crate::sip::message::SipMessage::parse`].
    Message(Vec<u8>),
    /// CRLFCRLF from the peer: answer with [`PONG`].
    KeepAlivePing,
    /// A lone CRLF while a pong was expected (see [`StreamDeframer::expect_pong`]).
    KeepAlivePong,
}

/// The stream cannot be framed any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("message head exceeds {limit} bytes")]
    HeadTooLong { limit: usize },
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    #[error("invalid Content-Length")]
    InvalidContentLength,
    #[error("message of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
}

/// Cuts a TCP/TLS byte stream into SIP messages and keep-alives.
#[derive(Debug)]
pub struct StreamDeframer {
    buf: Vec<u8>,
    max_message: usize,
    max_head: usize,
    /// How far the current head has been searched for its empty line, so a
    /// trickled head is scanned once overall, not once per byte.
    scanned: usize,
    /// Total length of the current message once its head is read.
    frame_len: Option<usize>,
    expect_pong: bool,
    failed: Option<FramingError>,
}

impl StreamDeframer {
    /// A deframer accepting messages of at most `max_message` bytes (head +
    /// body) and heads of at most [`DEFAULT_MAX_HEAD`].
    pub fn new(max_message: usize) -> StreamDeframer {
        StreamDeframer {
            buf: Vec::new(),
            max_message,
            max_head: DEFAULT_MAX_HEAD,
            scanned: 0,
            frame_len: None,
            expect_pong: false,
            failed: None,
        }
    }

    /// Overrides the head size cap.
    pub fn with_max_head(mut self, max_head: usize) -> StreamDeframer {
        self.max_head = max_head;
        self
    }

    /// Appends received bytes. Call [`StreamDeframer::next_frame`] until it
    /// returns `Ok(None)` after each push; the buffer holds at most one
    /// partial frame beyond what has been drained.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// We sent a [`PING`]: the next lone CRLF at a message boundary is the
    /// pong and is reported as [`Frame::KeepAlivePong`]. Otherwise a lone CRLF
    /// is skipped as §7.5 leading whitespace.
    pub fn expect_pong(&mut self) {
        self.expect_pong = true;
    }

    /// Bytes received but not yet returned in a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.step();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn step(&mut self) -> Result<Option<Frame>, FramingError> {
        if self.frame_len.is_none() && self.scanned == 0 {
            match self.boundary() {
                Boundary::Frame(f) => return Ok(Some(f)),
                Boundary::NeedMore => return Ok(None),
                Boundary::MessageStart => {}
            }
        }
        let total = match self.frame_len {
            Some(total) => total,
            None => {
                let Some(head_end) = self.find_head_end() else {
                    if self.buf.len() > self.max_head {
                        return Err(FramingError::HeadTooLong { limit: self.max_head });
                    }
                    return Ok(None);
                };
                if head_end > self.max_head {
                    return Err(FramingError::HeadTooLong { limit: self.max_head });
                }
                let body = content_length(self.buf.get(..head_end).unwrap_or_default())?;
                let total = head_end.saturating_add(body);
                if total > self.max_message {
                    return Err(FramingError::TooLarge { len: total, limit: self.max_message });
                }
                self.frame_len = Some(total);
                total
            }
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let message: Vec<u8> = self.buf.drain(..total).collect();
        self.frame_len = None;
        self.scanned = 0;
        Ok(Some(Frame::Message(message)))
    }

    /// At a message boundary: keep-alives and §7.5 leading CRLFs.
    fn boundary(&mut self) -> Boundary {
        loop {
            let b = self.buf.as_slice();
            if b.starts_with(PING) {
                self.buf.drain(..PING.len());
                return Boundary::Frame(Frame::KeepAlivePing);
            }
            if b.starts_with(b"\r\n") && self.expect_pong {
                self.buf.drain(..2);
                self.expect_pong = false;
                return Boundary::Frame(Frame::KeepAlivePong);
            }
            // A prefix of CRLFCRLF may still become a ping.
            if b.is_empty() || PING.starts_with(b) {
                return Boundary::NeedMore;
            }
            match b.first() {
                Some(b'\r' | b'\n') => {
                    let skip = if b.starts_with(b"\r\n") { 2 } else { 1 };
                    self.buf.drain(..skip);
                }
                _ => return Boundary::MessageStart,
            }
        }
    }

    /// The index just past the empty line ending the head (CRLFCRLF, or
    /// LF LF / LF CR LF from a lenient sender), resuming where the last scan
    /// stopped.
    fn find_head_end(&mut self) -> Option<usize> {
        let from = self.scanned.saturating_sub(2).max(1);
        for i in from..self.buf.len() {
            if self.buf.get(i) != Some(&b'\n') {
                continue;
            }
            let prev = self.buf.get(i - 1).copied();
            let prev2 = i.checked_sub(2).and_then(|j| self.buf.get(j)).copied();
            if prev == Some(b'\n') || (prev == Some(b'\r') && prev2 == Some(b'\n')) {
                return Some(i + 1);
            }
        }
        self.scanned = self.buf.len();
        None
    }
}

enum Boundary {
    Frame(Frame),
    NeedMore,
    MessageStart,
}

/// The Content-Length (or compact `l`) value of a complete head.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = line.split_at(colon);
        let name = name.trim_ascii_end();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::InvalidContentLength);
        }
        let n = value.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(FramingError::InvalidContentLength);
        }
        found = Some(n);
    }
    found.ok_or(FramingError::MissingContentLength)
}

/// A UDP datagram of only CR/LF bytes: a keep-alive some phones send over
/// UDP; drop it (no answer is defined for UDP).
pub fn is_datagram_keepalive(datagram: &[u8]) -> bool {
    !datagram.is_empty() && datagram.iter().all(|b| matches!(b, b'\r' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::SipMessage;
    use proptest::prelude::*;

    fn msg(call_id: &str, body: &str) -> Vec<u8> {
        format!(
            "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.7:40123;branch=z9hG4bK{call_id}\r\n\
             From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn drain(d: &mut StreamDeframer) -> Result<Vec<Frame>, FramingError> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    fn pipeline() -> (Vec<u8>, Vec<Frame>) {
        let (a, b, c) = (msg("a", "hello"), msg("b", ""), msg("c", "x\r\n\r\ny"));
        let mut stream = b"\r\n".to_vec(); // leading CRLF (§7.5)
        stream.extend(&a);
        stream.extend(PING);
        stream.extend(&b);
        stream.extend(b"\r\n");
        stream.extend(&c);
        stream.extend(PING);
        let frames =
            vec![Frame::Message(a), Frame::KeepAlivePing, Frame::Message(b), Frame::Message(c), Frame::KeepAlivePing];
        (stream, frames)
    }

    #[test]
    fn pipelined_messages_and_pings() {
        let (stream, want) = pipeline();
        let mut d = StreamDeframer::new(64 * 1024);
        d.push(&stream);
        let got = drain(&mut d).unwrap();
        assert_eq!(got, want);
        assert_eq!(d.buffered(), 0);
        for f in got {
            if let Frame::Message(m) = f {
                assert!(SipMessage::parse(&m).is_ok());
            }
        }
    }

    #[test]
    fn ping_split_across_reads_is_one_ping() {
        let mut d = StreamDeframer::new(1024);
        d.push(b"\r\n");
        assert_eq!(d.next_frame(), Ok(None));
        d.push(b"\r");
        assert_eq!(d.next_frame(), Ok(None));
        d.push(b"\n");
        assert_eq!(d.next_frame(), Ok(Some(Frame::KeepAlivePing)));
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn lone_crlf_is_pong_only_when_expected() {
        let mut d = StreamDeframer::new(1024);
        d.push(b"\r\n");
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&msg("z", ""));
        assert!(matches!(d.next_frame(), Ok(Some(Frame::Message(_)))));
        d.expect_pong();
        d.push(b"\r\n");
        assert_eq!(d.next_frame(), Ok(Some(Frame::KeepAlivePong)));
        d.push(b"\r\n");
        assert_eq!(d.next_frame(), Ok(None), "only one pong was expected");
    }

    #[test]
    fn compact_and_lowercase_content_length() {
        let m = String::from_utf8(msg("q", "abc")).unwrap().replace("Content-Length: 3", "l:3");
        let mut d = StreamDeframer::new(1024);
        d.push(m.as_bytes());
        assert_eq!(drain(&mut d).unwrap(), vec![Frame::Message(m.into_bytes())]);
        let m = String::from_utf8(msg("q", "abc")).unwrap().replace("Content-Length", "content-length");
        let mut d = StreamDeframer::new(1024);
        d.push(m.as_bytes());
        assert_eq!(drain(&mut d).unwrap().len(), 1);
    }

    #[test]
    fn missing_or_bad_content_length_is_fatal() {
        let no_cl = String::from_utf8(msg("q", "")).unwrap().replace("Content-Length: 0\r\n", "");
        let mut d = StreamDeframer::new(1024);
        d.push(no_cl.as_bytes());
        assert_eq!(d.next_frame(), Err(FramingError::MissingContentLength));
        d.push(&msg("r", ""));
        assert_eq!(d.next_frame(), Err(FramingError::MissingContentLength), "errors are final");

        for bad in ["Content-Length: abc", "Content-Length: -1", "Content-Length: 99999999999", "Content-Length:"] {
            let m = String::from_utf8(msg("q", "")).unwrap().replace("Content-Length: 0", bad);
            let mut d = StreamDeframer::new(1024);
            d.push(m.as_bytes());
            assert_eq!(d.next_frame(), Err(FramingError::InvalidContentLength), "{bad}");
        }
        let twice = String::from_utf8(msg("q", "")).unwrap().replace("Content-Length: 0", "Content-Length: 0\r\nl: 4");
        let mut d = StreamDeframer::new(1024);
        d.push(twice.as_bytes());
        assert_eq!(d.next_frame(), Err(FramingError::InvalidContentLength));
    }

    #[test]
    fn oversized_head_and_body() {
        // A head that never ends is cut off at the cap.
        let mut d = StreamDeframer::new(1 << 20);
        d.push(b"INVITE sip:a@b SIP/2.0\r\n");
        let filler = vec![b'X'; 100];
        let mut result = Ok(None);
        for _ in 0..200 {
            d.push(&filler);
            result = d.next_frame();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(FramingError::HeadTooLong { limit: DEFAULT_MAX_HEAD }));
        assert!(d.buffered() <= DEFAULT_MAX_HEAD + 200);

        // A body over the limit is refused as soon as the head is read.
        let big = String::from_utf8(msg("q", "")).unwrap().replace("Content-Length: 0", "Content-Length: 5000");
        let mut d = StreamDeframer::new(4096);
        d.push(big.as_bytes());
        assert!(matches!(d.next_frame(), Err(FramingError::TooLarge { limit: 4096, .. })));
    }

    #[test]
    fn trickled_head_is_scanned_linearly() {
        let body = "b".repeat(10);
        let mut m = String::from_utf8(msg("slow", &body)).unwrap();
        m = m.replace("Content-Type", &format!("X-Pad: {}\r\nContent-Type", "p".repeat(15_000)));
        let mut d = StreamDeframer::new(64 * 1024);
        let mut frames = Vec::new();
        for b in m.as_bytes() {
            d.push(std::slice::from_ref(b));
            frames.extend(drain(&mut d).unwrap());
        }
        assert_eq!(frames, vec![Frame::Message(m.into_bytes())]);
    }

    #[test]
    fn datagram_keepalive() {
        assert!(is_datagram_keepalive(b"\r\n\r\n"));
        assert!(is_datagram_keepalive(b"\r\n"));
        assert!(!is_datagram_keepalive(b""));
        assert!(!is_datagram_keepalive(b"\r\nOPTIONS"));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_frames(cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12)) {
            let (stream, want) = pipeline();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut d = StreamDeframer::new(64 * 1024);
            let mut got = Vec::new();
            for w in points.windows(2) {
                d.push(&stream[w[0]..w[1]]);
                got.extend(drain(&mut d).unwrap());
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn never_panics(chunks in proptest::collection::vec(proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b'l'), Just(b'5'), any::<u8>()], 0..40), 0..10)) {
            let mut d = StreamDeframer::new(256).with_max_head(128);
            for c in chunks {
                d.push(&c);
                while let Ok(Some(_)) = d.next_frame() {}
            }
        }
    }

    #[test]
    fn every_single_split_point() {
        let (stream, want) = pipeline();
        for cut in 0..=stream.len() {
            let mut d = StreamDeframer::new(64 * 1024);
            d.push(&stream[..cut]);
            let mut got = drain(&mut d).unwrap();
            d.push(&stream[cut..]);
            got.extend(drain(&mut d).unwrap());
            assert_eq!(got, want, "split at {cut}");
        }
    }
}
