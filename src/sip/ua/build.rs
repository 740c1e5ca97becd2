//! Message construction for the user agent: identifiers from the seeded
//! generator, the dialog state of RFC 3261 §12 and the requests and
//! responses built from it.

use std::net::{IpAddr, SocketAddr};

use crate::sip::message::{Header, Method, NameAddr, ParseError, SipMessage, StatusCode, Uri, Via};
use crate::sip::transaction::{MAGIC_COOKIE, TransportAddr};

/// SplitMix64: 8 bytes of state per user agent, portable and reproducible
/// from the seed (tags, branches, Call-IDs and cnonces only need to be
/// unique; a softphone seeds it from the OS at start-up).
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 16 lower-case hex digits.
    pub fn hex(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }

    /// §8.1.1.7: a branch unique across space and time, with the cookie.
    pub fn branch(&mut self) -> String {
        format!("{MAGIC_COOKIE}{}", self.hex())
    }

    /// §19.3: a tag of at least 32 random bits.
    pub fn tag(&mut self) -> String {
        format!("{:08x}", self.next_u64() >> 32)
    }
}

/// The state of one dialog (§12.1): Call-ID, both tags (inside the From/To
/// values), the remote target, the route set and the local CSeq.
#[derive(Debug, Clone)]
pub(super) struct Dialog {
    pub call_id: String,
    /// Our From (caller) or To (callee) value, with our tag.
    pub local: NameAddr,
    /// The peer's value; it carries the remote tag once known.
    pub remote: NameAddr,
    /// The Contact of the peer (§12.1.1, §12.1.2); the Request-URI of
    /// in-dialog requests.
    pub remote_target: Uri,
    /// Route header values in the order they go into requests.
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    /// The highest CSeq of the peer's requests (§12.2.2).
    pub remote_cseq: Option<u32>,
}

impl Dialog {
    pub fn local_tag(&self) -> &str {
        self.local.tag().unwrap_or_default()
    }
}

/// What every request the user agent sends shares.
pub(super) struct RequestParts<'a> {
    pub method: Method,
    pub uri: &'a Uri,
    pub from: &'a NameAddr,
    pub to: &'a NameAddr,
    pub call_id: &'a str,
    pub cseq: u32,
    pub routes: &'a [String],
}

/// §8.1.1: Via (with `rport`, RFC 3581), Max-Forwards, From, To, Call-ID,
/// CSeq, Routes, then `extra`, then the body.
pub(super) fn request(
    p: &RequestParts<'_>,
    via: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<SipMessage, ParseError> {
    let mut h = Vec::with_capacity(8 + p.routes.len() + extra.len());
    h.push(Header::new("Via", via)?);
    h.push(Header::new("Max-Forwards", "70")?);
    h.push(Header::new("From", &p.from.to_string())?);
    h.push(Header::new("To", &p.to.to_string())?);
    h.push(Header::new("Call-ID", p.call_id)?);
    h.push(Header::new("CSeq", &format!("{} {}", p.cseq, p.method))?);
    for r in p.routes {
        h.push(Header::new("Route", r)?);
    }
    for (name, value) in extra {
        h.push(Header::new(name, value)?);
    }
    SipMessage::new_request(p.method.clone(), p.uri.clone(), h, body)
}

/// A response to `req` with our To tag and extra header lines.
pub(super) fn response(
    req: &SipMessage,
    code: u16,
    tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> SipMessage {
    let status = StatusCode::new(code).unwrap_or(StatusCode::SERVER_ERROR);
    let mut resp = SipMessage::response_to(req, status, None, tag);
    for (name, value) in extra {
        if let Err(e) = resp.add_header(name, value) {
            tracing::debug!(error = %e, name, "header left out of a response");
        }
    }
    if let Some(b) = body {
        resp.set_body(b.to_vec());
    }
    resp
}

/// §12.1.1: the Record-Route lines of a dialog-creating request, copied
/// into the responses that establish the dialog.
pub(super) fn record_route_lines(req: &SipMessage) -> Vec<String> {
    req.headers("Record-Route").map(str::to_owned).collect()
}

/// §18.2.2 with RFC 3581 §4, as the transaction layer applies it: where
/// responses to a request from `from` go (used for our own 2xx
/// retransmissions, which the UAS core sends, §13.3.1.4).
pub(super) fn reply_target(via: &Via, from: TransportAddr) -> TransportAddr {
    if from.transport.is_reliable() || via.rport().is_some() {
        return from;
    }
    let ip = via.received().and_then(|r| r.parse::<IpAddr>().ok()).or(via.host.ip()).unwrap_or(from.addr.ip());
    TransportAddr { transport: from.transport, addr: SocketAddr::new(ip, via.port_or_default()), flow: None }
}

/// A minimal audio offer or answer (RFC 4566, RFC 3264): PCMU and
/// telephone-event, send and receive. Real negotiation is the media
/// module's job; this is what the simulator's phones exchange.
pub(super) fn default_sdp(host: &str, port: u16, session: u64) -> Vec<u8> {
    let ip = if host.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=- {session} {session} IN {ip} {host}\r\ns=-\r\nc=IN {ip} {host}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=sendrecv\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_ids_are_well_formed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
        let br = a.branch();
        assert!(br.starts_with(MAGIC_COOKIE) && br.len() == MAGIC_COOKIE.len() + 16);
        assert_eq!(a.tag().len(), 8);
    }
}
