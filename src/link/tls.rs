//! TLS-TCP-FH-NO-ICE (RFC 6940 §6.6, §6.6.2) as a sans-IO machine: TLS
//! 1.2 or 1.3 over an in-memory byte stream, each RELOAD message in a
//! framed DATA message.
//!
//! The owner feeds the bytes its TCP connection read
//! ([`TlsLink::handle_bytes`], [`TlsLink::handle_eof`]) and writes what
//! [`TlsLink::poll_transmit`] yields. TCP is reliable, so nothing is
//! retransmitted (§6.6.2). The receiver still answers every DATA frame
//! with an ACK: the framing header exists so that a sender can time its
//! messages and notice a dead link, and deployed peers that wait for ACKs
//! on TLS links too would otherwise resend and finally drop the link. ACKs
//! we receive are accepted and ignored.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use openssl::ssl::{ErrorCode, SslContext, SslStream};

use super::verify::{VerifySlot, WallClock, base_context, handshake_error, new_ssl, peer_identity};
use super::{EVENT_QUEUE, Event, HANDSHAKE_TIMEOUT, LinkError, LinkKind, LinkSecurity, Role, take_frames};
use crate::wire::framing::{AckTracker, FramedMessage};
use crate::wire::{Codec, NodeId};

/// Encoded bytes waiting for the owner to write before `send` refuses
/// more and [`TlsLink::wants_input`] says stop reading.
pub const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Plaintext read from OpenSSL at once.
const READ_CHUNK: usize = 16 * 1024;

/// The OpenSSL context TLS links share.
pub fn tls_context(sec: &LinkSecurity) -> Result<SslContext, LinkError> {
    Ok(base_context(LinkKind::TlsTcpFhNoIce, sec)?.build())
}

/// The memory transport under OpenSSL: received bytes in, bytes to send out.
#[derive(Debug, Default)]
struct Bytes {
    inbound: Vec<u8>,
    read_at: usize,
    outbound: Vec<u8>,
}

impl Read for Bytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.inbound.get(self.read_at..).unwrap_or_default();
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.read_at += n;
        if self.read_at == self.inbound.len() {
            self.inbound.clear();
            self.read_at = 0;
        }
        Ok(n)
    }
}

impl Write for Bytes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Open,
    Done,
}

/// One TLS-TCP-FH link, from handshake to close.
pub struct TlsLink {
    stream: SslStream<Bytes>,
    role: Role,
    state: State,
    sec: Arc<LinkSecurity>,
    expected: Option<NodeId>,
    slot: VerifySlot,
    wall: WallClock,
    epoch: (Instant, u64),
    handshake_deadline: Instant,
    inbuf: Vec<u8>,
    acks: AckTracker,
    next_seq: u32,
    events: std::collections::VecDeque<Event>,
    held: usize,
    rbuf: Vec<u8>,
}

impl std::fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLink").field("role", &self.role).field("state", &self.state).finish_non_exhaustive()
    }
}

impl TlsLink {
    /// A dialing machine; its ClientHello is ready in `poll_transmit`.
    pub fn client(
        ctx: &SslContext,
        sec: &Arc<LinkSecurity>,
        now: Instant,
        wall_secs: u64,
        expected: Option<NodeId>,
    ) -> Result<Self, LinkError> {
        let mut link = Self::new(ctx, sec, now, wall_secs, Role::Client)?;
        link.expected = expected;
        link.drive_handshake(now);
        Ok(link)
    }

    /// An accepting machine; feed it what the connection receives.
    pub fn server(ctx: &SslContext, sec: &Arc<LinkSecurity>, now: Instant, wall_secs: u64) -> Result<Self, LinkError> {
        Self::new(ctx, sec, now, wall_secs, Role::Server)
    }

    fn new(
        ctx: &SslContext,
        sec: &Arc<LinkSecurity>,
        now: Instant,
        wall_secs: u64,
        role: Role,
    ) -> Result<Self, LinkError> {
        let wall = WallClock::new(wall_secs);
        let (mut ssl, slot) = new_ssl(ctx, sec, &wall)?;
        match role {
            Role::Client => ssl.set_connect_state(),
            Role::Server => ssl.set_accept_state(),
        }
        let stream = SslStream::new(ssl, Bytes::default())?;
        Ok(TlsLink {
            stream,
            role,
            state: State::Handshaking,
            sec: sec.clone(),
            expected: None,
            slot,
            wall,
            epoch: (now, wall_secs),
            handshake_deadline: now + HANDSHAKE_TIMEOUT,
            inbuf: Vec::new(),
            acks: AckTracker::default(),
            next_seq: 0,
            events: std::collections::VecDeque::new(),
            held: 0,
            rbuf: vec![0; READ_CHUNK],
        })
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The TLS version in use, for logs.
    pub fn version(&self) -> &'static str {
        self.stream.ssl().version_str()
    }

    /// Whether the owner should read more from the connection: not while
    /// it lags on events or the peer does not take our bytes (TCP then
    /// pushes back on the peer).
    pub fn wants_input(&self) -> bool {
        self.state != State::Done
            && self.held < EVENT_QUEUE
            && self.stream.get_ref().outbound.len() < 2 * WRITE_HIGH_WATER
    }

    /// Bytes the connection received. Never fails: a protocol violation
    /// ends the link with an event.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Done {
            return;
        }
        self.tick_wall(now);
        self.stream.get_mut().inbound.extend_from_slice(bytes);
        if self.state == State::Handshaking {
            self.drive_handshake(now);
        }
        if self.state == State::Open {
            self.read_plaintext();
        }
    }

    /// The connection reached end of stream.
    pub fn handle_eof(&mut self, _now: Instant) {
        match self.state {
            State::Handshaking => self.fail(LinkError::Handshake("connection closed during the handshake".into())),
            State::Open => self.end("peer closed the connection".into()),
            State::Done => {}
        }
    }

    /// Frames and queues one RELOAD message; refused while the owner has
    /// not written [`WRITE_HIGH_WATER`] bytes (the caller counts the drop).
    pub fn send(&mut self, _now: Instant, message: Vec<u8>) -> Result<(), LinkError> {
        if self.state != State::Open {
            return Err(LinkError::Closed);
        }
        if message.len() > self.sec.max_message_size {
            // The peer would close the link on it (§6.6.2 framing, max-message-size).
            return Err(LinkError::TooLarge(message.len()));
        }
        if self.stream.get_ref().outbound.len() >= WRITE_HIGH_WATER {
            return Err(LinkError::QueueFull);
        }
        let frame = FramedMessage::Data { sequence: self.next_seq, message };
        // §6.6.2: one sequence space per connection, +1 per frame.
        self.next_seq = self.next_seq.wrapping_add(1);
        self.write_frame(&frame);
        Ok(())
    }

    /// Bytes to write to the connection (all of them, in order).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let out = &mut self.stream.get_mut().outbound;
        (!out.is_empty()).then(|| std::mem::take(out))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if matches!(ev, Event::Message(_)) {
            self.held = self.held.saturating_sub(1);
        }
        Some(ev)
    }

    /// Only the handshake has a deadline: TCP retransmits for us.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state == State::Handshaking).then_some(self.handshake_deadline)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Handshaking && now >= self.handshake_deadline {
            self.fail(LinkError::Timeout);
        }
    }

    /// Sends close_notify; `Closed("closed locally")` follows. What was
    /// queued is already in `poll_transmit`, ahead of the close_notify.
    pub fn close(&mut self, _now: Instant) {
        self.abort("closed locally");
    }

    /// Ends the link at once with `reason`.
    pub fn abort(&mut self, reason: &str) {
        match self.state {
            State::Handshaking => self.fail(LinkError::Handshake(reason.to_owned())),
            State::Open => self.end(reason.to_owned()),
            State::Done => {}
        }
    }

    fn tick_wall(&self, now: Instant) {
        self.wall.set(self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs());
    }

    fn drive_handshake(&mut self, _now: Instant) {
        match self.stream.do_handshake() {
            Ok(()) => match peer_identity(self.stream.ssl(), &self.sec, self.expected, self.wall.get()) {
                Ok(peer) => {
                    self.state = State::Open;
                    self.events.push_back(Event::Connected(peer));
                }
                Err(e) => {
                    let _ = self.stream.shutdown();
                    self.fail(e);
                }
            },
            Err(e) if would_block(&e) => {}
            Err(e) => {
                let err = handshake_error(&e, &self.slot);
                self.fail(err);
            }
        }
    }

    fn read_plaintext(&mut self) {
        while self.state == State::Open {
            match self.stream.ssl_read(&mut self.rbuf) {
                Ok(0) => return self.end("peer closed the connection".into()),
                Ok(n) => {
                    self.inbuf.extend_from_slice(self.rbuf.get(..n).unwrap_or_default());
                    self.on_frames();
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return self.end("peer closed the connection".into()),
                Err(e) if would_block(&e) => return,
                Err(e) => return self.end(format!("read failed: {e}")),
            }
        }
    }

    fn on_frames(&mut self) {
        let (frames, verdict) = take_frames(&mut self.inbuf, self.sec.max_message_size);
        for f in frames {
            match f {
                FramedMessage::Data { sequence, message } => {
                    // §6.6.2: answer every DATA frame with an ACK.
                    let ack = self.acks.on_data(sequence);
                    self.write_frame(&ack);
                    self.held += 1;
                    self.events.push_back(Event::Message(message));
                }
                // No retransmission on TCP, so ACKs only tell us the peer lives.
                FramedMessage::Ack { .. } => {}
            }
        }
        if let Err(reason) = verdict {
            self.end(reason);
        }
    }

    fn write_frame(&mut self, frame: &FramedMessage) {
        let bytes = match frame.to_bytes() {
            Ok(b) => b,
            Err(e) => return self.end(format!("cannot encode frame: {e}")),
        };
        if let Err(e) = self.stream.ssl_write(&bytes) {
            self.end(format!("write failed: {e}"));
        }
    }

    fn end(&mut self, reason: String) {
        if self.state == State::Done {
            return;
        }
        let _ = self.stream.shutdown();
        self.state = State::Done;
        self.events.push_back(Event::Closed(reason));
    }

    fn fail(&mut self, e: LinkError) {
        self.state = State::Done;
        self.events.push_back(Event::Failed(e));
    }
}

fn would_block(e: &openssl::ssl::Error) -> bool {
    e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testing::{new_ca, node, security, start, wall};

    fn pair(sa: &Arc<LinkSecurity>, sb: &Arc<LinkSecurity>) -> (TlsLink, TlsLink, Vec<Event>, Vec<Event>) {
        let now = start();
        let a = TlsLink::client(&tls_context(sa).unwrap(), sa, now, wall(), Some(node(2))).unwrap();
        let b = TlsLink::server(&tls_context(sb).unwrap(), sb, now, wall()).unwrap();
        (a, b, Vec::new(), Vec::new())
    }

    fn shuttle(a: &mut TlsLink, b: &mut TlsLink, ea: &mut Vec<Event>, eb: &mut Vec<Event>) {
        let now = start();
        loop {
            let mut moved = false;
            while let Some(d) = a.poll_transmit() {
                moved = true;
                b.handle_bytes(now, &d);
            }
            while let Some(d) = b.poll_transmit() {
                moved = true;
                a.handle_bytes(now, &d);
            }
            ea.extend(std::iter::from_fn(|| a.poll_event()));
            eb.extend(std::iter::from_fn(|| b.poll_event()));
            if !moved {
                return;
            }
        }
    }

    fn messages(ev: &[Event]) -> Vec<Vec<u8>> {
        ev.iter().filter_map(|e| if let Event::Message(m) = e { Some(m.clone()) } else { None }).collect()
    }

    #[test]
    fn two_machines_handshake_exchange_and_close() {
        let ca = new_ca();
        let (sa, sb) = (security(&ca, node(1)), security(&ca, node(2)));
        let (mut a, mut b, mut ea, mut eb) = pair(&sa, &sb);
        shuttle(&mut a, &mut b, &mut ea, &mut eb);
        assert!(matches!(&ea[0], Event::Connected(p) if p.node_ids == vec![node(2)]), "{ea:?}");
        assert!(matches!(&eb[0], Event::Connected(p) if p.node_ids == vec![node(1)]), "{eb:?}");
        for i in 0..50u8 {
            a.send(start(), vec![i; 10 + usize::from(i) * 70]).unwrap();
            b.send(start(), vec![i; 3]).unwrap();
        }
        shuttle(&mut a, &mut b, &mut ea, &mut eb);
        assert_eq!(messages(&eb), (0..50u8).map(|i| vec![i; 10 + usize::from(i) * 70]).collect::<Vec<_>>());
        assert_eq!(messages(&ea), (0..50u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
        a.close(start());
        shuttle(&mut a, &mut b, &mut ea, &mut eb);
        assert!(matches!(ea.last(), Some(Event::Closed(r)) if r == "closed locally"));
        assert!(matches!(eb.last(), Some(Event::Closed(r)) if r == "peer closed the connection"));
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let (ca, other) = (new_ca(), new_ca());
        let (stranger, sb) = (security(&other, node(1)), security(&ca, node(2)));
        let (mut a, mut b, mut ea, mut eb) = pair(&stranger, &sb);
        shuttle(&mut a, &mut b, &mut ea, &mut eb);
        // The dialer refuses the listener's certificate; the listener hears the alert.
        assert!(matches!(ea.last(), Some(Event::Failed(LinkError::Certificate(_)))), "{ea:?}");
        assert!(matches!(eb.last(), Some(Event::Failed(_))), "{eb:?}");
        assert!(!ea.iter().chain(&eb).any(|e| matches!(e, Event::Connected(_))));
        assert!(a.is_done() && b.is_done());
    }

    #[test]
    fn a_bad_frame_closes_the_link_after_acking_the_good_one() {
        let ca = new_ca();
        let (sa, sb) = (security(&ca, node(1)), security(&ca, node(2)));
        let (mut a, mut b, mut ea, mut eb) = pair(&sa, &sb);
        shuttle(&mut a, &mut b, &mut ea, &mut eb);
        // Raw plaintext through A's TLS: a DATA frame, then frame type 5.
        a.stream.ssl_write(&[128, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 0x05, 1, 2, 3]).unwrap();
        shuttle(&mut a, &mut b, &mut ea, &mut eb);
        assert_eq!(messages(&eb), vec![vec![1, 2, 3]]);
        assert!(matches!(eb.last(), Some(Event::Closed(r)) if r == "unknown frame type 5"), "{eb:?}");
        assert!(matches!(ea.last(), Some(Event::Closed(r)) if r == "peer closed the connection"), "{ea:?}");
    }

    #[test]
    fn end_of_stream_during_the_handshake_fails_it() {
        let ca = new_ca();
        let sa = security(&ca, node(1));
        let mut a = TlsLink::client(&tls_context(&sa).unwrap(), &sa, start(), wall(), None).unwrap();
        assert!(a.poll_transmit().is_some());
        a.handle_eof(start());
        assert!(matches!(a.poll_event(), Some(Event::Failed(LinkError::Handshake(_)))));
        let due = a.poll_timeout();
        assert_eq!(due, None);
    }
}
