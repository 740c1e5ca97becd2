//! DTLS-UDP-SR-NO-ICE (RFC 6940 §6.6, §6.6.2, §6.6.3.2) as a sans-IO
//! machine: DTLS 1.2 over an in-memory datagram queue, framed messages,
//! Simple Reliability.
//!
//! The owner hands in each datagram the socket received for this link
//! ([`DtlsLink::handle_datagram`]) and sends each datagram
//! [`DtlsLink::poll_transmit`] yields to the link's current remote
//! address; the machine never sees an address. Servers use DTLS cookies
//! (RFC 6347 §4.2.1) bound to an opaque value the owner supplies (the
//! client's address), so a spoofed source gets one small
//! HelloVerifyRequest.
//!
//! Each DATA frame is ACKed at once with the §6.6.2 bitmap; the sender
//! ([`SrSender`]) keeps a small window of unACKed frames and resends under
//! fresh sequence numbers. So frames may arrive out of order after a loss,
//! and a lost ACK makes the peer see the message twice: RELOAD's
//! transaction layer deals with both. Messages longer than one datagram
//! carries ([`MAX_FRAME_PAYLOAD`]) are split into RELOAD fragments (§6.7,
//! "any hop may fragment") before framing.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::ex_data::Index;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslOptions, SslStream};

use super::sr::{SrSender, Unresponsive};
use super::verify::{VerifySlot, WallClock, base_context, handshake_error, new_ssl, peer_identity};
use super::{
    DATA_FRAME_HEADER, EVENT_QUEUE, Event, HANDSHAKE_TIMEOUT, LinkError, LinkKind, LinkSecurity, Role, take_frames,
};
use crate::wire::framing::{AckTracker, FramedMessage};
use crate::wire::{Codec, NodeId};

/// The largest datagram we send (DTLS records included), a size that
/// crosses common paths and tunnels unfragmented.
pub const DTLS_MTU: u32 = 1200;
/// A bound on what DTLS 1.2 adds to a record: 13 bytes of header plus
/// IV, MAC or tag and padding of any cipher suite OpenSSL offers.
pub const DTLS_RECORD_OVERHEAD: usize = 100;
/// The longest RELOAD message (or fragment) one DATA frame carries.
pub const MAX_FRAME_PAYLOAD: usize = DTLS_MTU as usize - DTLS_RECORD_OVERHEAD - DATA_FRAME_HEADER;
/// Messages (or fragments) waiting for room in the SR window; `send`
/// refuses more.
pub const OUT_QUEUE: usize = 256;
/// The largest DTLS record plaintext (RFC 6347 §4.1: 2^14) plus slack.
const READ_BUFFER: usize = 16 * 1024 + 256;
/// OpenSSL's `DTLS_CTRL_GET_TIMEOUT` and `DTLS_CTRL_HANDLE_TIMEOUT`
/// (`DTLSv1_get_timeout`/`DTLSv1_handle_timeout` are macros over them).
const DTLS_CTRL_GET_TIMEOUT: libc::c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: libc::c_int = 74;
/// The least a handshake timer is pushed forward when OpenSSL reports it
/// expired but did not act, so the owner never spins.
const MIN_TIMER_STEP: Duration = Duration::from_millis(10);

/// The two OpenSSL contexts one socket's links share.
pub struct DtlsContexts {
    client: SslContext,
    server: SslContext,
}

impl DtlsContexts {
    /// Contexts carrying our certificate; `cookie_secret` keys the
    /// stateless RFC 6347 §4.2.1 cookies (random, per socket).
    pub fn new(sec: &LinkSecurity, cookie_secret: &[u8]) -> Result<Self, LinkError> {
        let mut c = base_context(LinkKind::DtlsUdpSrNoIce, sec)?;
        // The MTU is ours to set (see `DTLS_MTU`); the memory queue knows none.
        c.set_options(SslOptions::NO_QUERY_MTU);
        let mut s = base_context(LinkKind::DtlsUdpSrNoIce, sec)?;
        s.set_options(SslOptions::NO_QUERY_MTU | SslOptions::COOKIE_EXCHANGE);
        let key = Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, cookie_secret));
        let k = key.clone();
        s.set_cookie_generate_cb(move |ssl, out| {
            let tag = cookie(&k, ssl);
            let dst = out.get_mut(..tag.len()).ok_or_else(openssl::error::ErrorStack::get)?;
            dst.copy_from_slice(&tag);
            Ok(tag.len())
        });
        s.set_cookie_verify_cb(move |ssl, got| cookie(&key, ssl) == got);
        Ok(DtlsContexts { client: c.build(), server: s.build() })
    }
}

/// HMAC of the cookie binding (the client's address) under the secret.
fn cookie(key: &ring::hmac::Key, ssl: &openssl::ssl::SslRef) -> Vec<u8> {
    let binding = binding_index().ok().and_then(|i| ssl.ex_data(i)).map(Vec::as_slice).unwrap_or_default();
    ring::hmac::sign(key, binding).as_ref().to_vec()
}

/// Where a server session keeps its cookie binding for the callbacks.
fn binding_index() -> Result<Index<Ssl, Vec<u8>>, LinkError> {
    // An OpenSSL ex_data slot number: the same for every node in the
    // process, so sharing it is harmless.
    static INDEX: OnceLock<Index<Ssl, Vec<u8>>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// The memory transport under OpenSSL: each read pops one received
/// datagram, each write is one datagram to send.
#[derive(Debug, Default)]
struct Datagrams {
    inbound: VecDeque<Vec<u8>>,
    outbound: VecDeque<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.inbound.pop_front() else { return Err(io::ErrorKind::WouldBlock.into()) };
        let n = d.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), d.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.push_back(buf.to_vec());
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
    /// `close` was called: queued messages go out and are ACKed first.
    Closing,
    Done,
}

/// One DTLS-UDP-SR link, from handshake to close.
pub struct DtlsLink {
    stream: SslStream<Datagrams>,
    role: Role,
    state: State,
    sec: Arc<LinkSecurity>,
    expected: Option<NodeId>,
    slot: VerifySlot,
    wall: WallClock,
    /// `now` and wall time at creation: wall time follows `now`.
    epoch: (Instant, u64),
    handshake_deadline: Instant,
    dtls_timer: Option<Instant>,
    sr: SrSender,
    acks: AckTracker,
    outq: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    /// `Message` events not yet taken by the owner.
    held: usize,
    /// DATA frames dropped unACKed because the owner lagged.
    refused: u64,
    rbuf: Vec<u8>,
}

impl std::fmt::Debug for DtlsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsLink").field("role", &self.role).field("state", &self.state).finish_non_exhaustive()
    }
}

impl DtlsLink {
    /// A dialing machine; its ClientHello is ready in `poll_transmit`.
    /// With `expected`, a peer whose certificate lacks that Node-ID fails.
    pub fn client(
        ctx: &DtlsContexts,
        sec: &Arc<LinkSecurity>,
        now: Instant,
        wall_secs: u64,
        expected: Option<NodeId>,
    ) -> Result<Self, LinkError> {
        let mut link = Self::new(&ctx.client, sec, now, wall_secs, Role::Client, None)?;
        link.expected = expected;
        link.drive_handshake(now);
        Ok(link)
    }

    /// An accepting machine; feed it the ClientHello. `cookie_binding`
    /// (the client's address) is what the cookie proves the client owns.
    pub fn server(
        ctx: &DtlsContexts,
        sec: &Arc<LinkSecurity>,
        now: Instant,
        wall_secs: u64,
        cookie_binding: &[u8],
    ) -> Result<Self, LinkError> {
        Self::new(&ctx.server, sec, now, wall_secs, Role::Server, Some(cookie_binding))
    }

    fn new(
        ctx: &SslContext,
        sec: &Arc<LinkSecurity>,
        now: Instant,
        wall_secs: u64,
        role: Role,
        binding: Option<&[u8]>,
    ) -> Result<Self, LinkError> {
        let wall = WallClock::new(wall_secs);
        let (mut ssl, slot) = new_ssl(ctx, sec, &wall)?;
        ssl.set_mtu(DTLS_MTU)?;
        if let Some(b) = binding {
            ssl.set_ex_data(binding_index()?, b.to_vec());
        }
        match role {
            Role::Client => ssl.set_connect_state(),
            Role::Server => ssl.set_accept_state(),
        }
        let stream = SslStream::new(ssl, Datagrams::default())?;
        Ok(DtlsLink {
            stream,
            role,
            state: State::Handshaking,
            sec: sec.clone(),
            expected: None,
            slot,
            wall,
            epoch: (now, wall_secs),
            handshake_deadline: now + HANDSHAKE_TIMEOUT,
            dtls_timer: None,
            sr: SrSender::new(),
            acks: AckTracker::default(),
            outq: VecDeque::new(),
            events: VecDeque::new(),
            held: 0,
            refused: 0,
            rbuf: vec![0; READ_BUFFER],
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The Node-ID a dialing machine insists on, if any.
    pub fn expected(&self) -> Option<NodeId> {
        self.expected
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.state == State::Handshaking
    }

    /// Whether the machine has finished (failed or closed).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// DATA frames dropped unACKed because the owner did not drain events.
    pub fn refused_frames(&self) -> u64 {
        self.refused
    }

    /// The random of our ClientHello (RFC 5246 §7.4.1.2), for the
    /// simultaneous-open tie-break; `None` for a server.
    pub fn client_random(&self) -> Option<[u8; 32]> {
        if self.role != Role::Client {
            return None;
        }
        let mut r = [0u8; 32];
        (self.stream.ssl().client_random(&mut r) == 32).then_some(r)
    }

    /// One datagram the socket received for this link. Never fails:
    /// what cannot be decrypted is dropped (RFC 6347 §4.1.2.7), what breaks
    /// the protocol ends the link with an event.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        if self.state == State::Done {
            return;
        }
        self.tick_wall(now);
        self.stream.get_mut().inbound.push_back(datagram.to_vec());
        if self.state == State::Handshaking {
            self.drive_handshake(now);
        }
        if matches!(self.state, State::Open | State::Closing) {
            self.read_records(now);
        }
        // Nothing more will read what is left (a finished machine).
        self.stream.get_mut().inbound.clear();
    }

    /// Queues one RELOAD message. A full queue refuses it (the caller
    /// counts the drop; RELOAD's end-to-end retransmission recovers).
    pub fn send(&mut self, now: Instant, message: Vec<u8>) -> Result<(), LinkError> {
        if !matches!(self.state, State::Handshaking | State::Open) {
            return Err(LinkError::Closed);
        }
        let len = message.len();
        if len > self.sec.max_message_size {
            return Err(LinkError::TooLarge(len));
        }
        let pieces = if len <= MAX_FRAME_PAYLOAD {
            vec![message]
        } else {
            crate::wire::fragment::fragment(&message, MAX_FRAME_PAYLOAD).map_err(|_| LinkError::TooLarge(len))?
        };
        if self.outq.len() + pieces.len() > OUT_QUEUE {
            return Err(LinkError::QueueFull);
        }
        self.outq.extend(pieces);
        self.pump(now);
        Ok(())
    }

    /// The next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stream.get_mut().outbound.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if matches!(ev, Event::Message(_)) {
            self.held = self.held.saturating_sub(1);
        }
        Some(ev)
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshaking => {
                Some(self.dtls_timer.map_or(self.handshake_deadline, |t| t.min(self.handshake_deadline)))
            }
            State::Open | State::Closing => self.sr.poll_timeout(),
            State::Done => None,
        }
    }

    /// Handshake retransmission and deadline, Simple Reliability resends.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick_wall(now);
        match self.state {
            State::Handshaking if now >= self.handshake_deadline => self.fail(LinkError::Timeout),
            State::Handshaking => {
                if self.dtls_timer.is_some_and(|t| now >= t) {
                    // SAFETY: the pointer is the live SSL this stream owns;
                    // DTLS_CTRL_HANDLE_TIMEOUT takes no argument.
                    unsafe {
                        openssl_sys::SSL_ctrl(
                            self.stream.ssl().as_ptr(),
                            DTLS_CTRL_HANDLE_TIMEOUT,
                            0,
                            std::ptr::null_mut(),
                        );
                    }
                    self.drive_handshake(now);
                }
            }
            State::Open | State::Closing => match self.sr.handle_timeout(now) {
                Ok(frames) => frames.iter().for_each(|f| self.write_frame(f)),
                Err(Unresponsive) => self.end("peer unresponsive".into()),
            },
            State::Done => {}
        }
    }

    /// Closes gracefully: queued messages are sent and ACKed, then
    /// close_notify goes out and `Closed("closed locally")` follows.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Handshaking => self.fail(LinkError::Handshake("closed locally".into())),
            State::Open => {
                self.state = State::Closing;
                self.pump(now);
            }
            State::Closing | State::Done => {}
        }
    }

    /// Ends the link at once with `reason` (close_notify is sent).
    pub fn abort(&mut self, reason: &str) {
        match self.state {
            State::Handshaking => self.fail(LinkError::Handshake(reason.to_owned())),
            State::Open | State::Closing => self.end(reason.to_owned()),
            State::Done => {}
        }
    }

    fn tick_wall(&self, now: Instant) {
        self.wall.set(self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs());
    }

    fn drive_handshake(&mut self, now: Instant) {
        match self.stream.do_handshake() {
            Ok(()) => self.on_handshake_done(now),
            Err(e) if would_block(&e) => self.refresh_dtls_timer(now),
            Err(e) => {
                let err = handshake_error(&e, &self.slot);
                self.fail(err);
            }
        }
    }

    fn on_handshake_done(&mut self, now: Instant) {
        self.dtls_timer = None;
        match peer_identity(self.stream.ssl(), &self.sec, self.expected, self.wall.get()) {
            Ok(peer) => {
                self.state = State::Open;
                self.events.push_back(Event::Connected(peer));
                self.read_records(now);
                self.pump(now);
            }
            Err(e) => {
                let _ = self.stream.shutdown();
                self.fail(e);
            }
        }
    }

    /// DTLSv1_get_timeout: how long OpenSSL's retransmission timer has left.
    fn refresh_dtls_timer(&mut self, now: Instant) {
        let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
        // SAFETY: the pointer is the live SSL this stream owns, and
        // DTLS_CTRL_GET_TIMEOUT writes one `struct timeval` to `parg`.
        let running = unsafe {
            openssl_sys::SSL_ctrl(
                self.stream.ssl().as_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                (&mut tv as *mut libc::timeval).cast(),
            )
        };
        self.dtls_timer = (running > 0).then(|| {
            let left = Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0));
            now + left.max(MIN_TIMER_STEP)
        });
    }

    fn read_records(&mut self, now: Instant) {
        while matches!(self.state, State::Open | State::Closing) {
            match self.stream.ssl_read(&mut self.rbuf) {
                Ok(0) => return self.end("peer closed the session".into()),
                Ok(n) => {
                    let record = self.rbuf.get(..n).unwrap_or_default().to_vec();
                    self.on_record(now, record);
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return self.end("peer closed the session".into()),
                Err(e) if would_block(&e) => return,
                Err(e) => return self.end(format!("DTLS read failed: {e}")),
            }
        }
    }

    fn on_record(&mut self, now: Instant, mut record: Vec<u8>) {
        let (frames, mut verdict) = take_frames(&mut record, self.sec.max_message_size);
        if verdict.is_ok() && !record.is_empty() {
            verdict = Err("truncated frame in a DTLS record".to_owned());
        }
        for f in frames {
            match f {
                FramedMessage::Data { sequence, message } => {
                    if self.held >= EVENT_QUEUE {
                        // The owner lags: no ACK, so the peer's SR resends later.
                        self.refused += 1;
                        continue;
                    }
                    // §6.6.3.2: the receiver ACKs every frame at once.
                    let ack = self.acks.on_data(sequence);
                    self.write_frame(&ack);
                    self.held += 1;
                    self.events.push_back(Event::Message(message));
                }
                FramedMessage::Ack { ack_sequence, received } => self.sr.on_ack(ack_sequence, received),
            }
        }
        match verdict {
            Ok(()) => self.pump(now),
            Err(reason) => self.end(reason),
        }
    }

    /// Moves queued messages into the SR window; finishes a graceful close.
    fn pump(&mut self, now: Instant) {
        while matches!(self.state, State::Open | State::Closing) && self.sr.can_send() {
            let Some(m) = self.outq.pop_front() else { break };
            let frame = self.sr.send(now, m);
            self.write_frame(&frame);
        }
        if self.state == State::Closing && self.outq.is_empty() && self.sr.is_idle() {
            self.end("closed locally".into());
        }
    }

    fn write_frame(&mut self, frame: &FramedMessage) {
        if self.state == State::Done {
            return;
        }
        let bytes = match frame.to_bytes() {
            Ok(b) => b,
            Err(e) => return self.end(format!("cannot encode frame: {e}")),
        };
        // One frame per record, one record per datagram.
        if let Err(e) = self.stream.ssl_write(&bytes) {
            self.end(format!("DTLS write failed: {e}"));
        }
    }

    /// An established link ends: close_notify, then the final event.
    fn end(&mut self, reason: String) {
        if self.state == State::Done {
            return;
        }
        let _ = self.stream.shutdown();
        self.state = State::Done;
        self.outq.clear();
        self.events.push_back(Event::Closed(reason));
    }

    /// The handshake failed: the final event.
    fn fail(&mut self, e: LinkError) {
        self.state = State::Done;
        self.dtls_timer = None;
        self.events.push_back(Event::Failed(e));
    }
}

fn would_block(e: &openssl::ssl::Error) -> bool {
    e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE
}

/// RFC 6347 §4.1/§4.2.2: handshake record (22), a DTLS version (0xfe..),
/// epoch 0, and a client_hello (1) message.
pub fn is_client_hello(d: &[u8]) -> bool {
    d.len() > 25
        && d.first() == Some(&22)
        && d.get(1) == Some(&0xfe)
        && d.get(3..5) == Some(&[0, 0])
        && d.get(13) == Some(&1)
}

/// The `random` of a ClientHello datagram: after the 13-byte record header
/// (RFC 6347 §4.1), the 12-byte handshake header (§4.2.2) and the 2-byte
/// client_version. Only the first fragment carries it.
pub fn client_hello_random(d: &[u8]) -> Option<[u8; 32]> {
    if !is_client_hello(d) || d.get(19..22) != Some(&[0, 0, 0]) {
        return None;
    }
    d.get(27..59)?.try_into().ok()
}

#[cfg(test)]
mod tests;
