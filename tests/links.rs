//! Overlay links over real loopback sockets (RFC 6940 §6.6): TLS-TCP-FH
//! and DTLS-UDP-SR, mutual certificate checks, framing, Simple
//! Reliability under loss, and hostile input.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chordphone::node::link::{self, Link, LinkError, LinkEvent, LinkKind, LinkListener, LinkSecurity};
use chordphone::security::{KeyAlgorithm, KeyPair, OverlayCa};
use chordphone::wire::fragment::{Reassembler, Reassembly};
use chordphone::wire::{Destination, ForwardingHeader, NodeId, Writer};
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_openssl::SslStream;

const OVERLAY: &str = "links.example.org";
const LIMIT: Duration = Duration::from_secs(5);
const KINDS: [LinkKind; 2] = [LinkKind::TlsTcpFhNoIce, LinkKind::DtlsUdpSrNoIce];

fn logs() {
    let _ = tracing_subscriber::fmt().with_env_filter("chordphone=debug").with_test_writer().try_init();
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn new_ca() -> OverlayCa {
    let t = now();
    OverlayCa::create(OVERLAY, KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap(), t - 60, t + 3600).unwrap()
}

fn node(n: u8) -> NodeId {
    NodeId([n; 16])
}

fn security(ca: &OverlayCa, alg: KeyAlgorithm, id: NodeId) -> Arc<LinkSecurity> {
    let key = KeyPair::generate(alg).unwrap();
    let t = now();
    let cert = ca.issue(&key.spki_der(), Some(&format!("n{}@{OVERLAY}", id.0[0])), &[id], t - 60, t + 3600).unwrap();
    Arc::new(LinkSecurity {
        overlay: OVERLAY.into(),
        ca_der: ca.cert_der().to_vec(),
        cert_der: cert,
        key_pkcs8: key.to_pkcs8_der(),
        max_message_size: 5000,
    })
}

async fn listen(kind: LinkKind, sec: &Arc<LinkSecurity>) -> LinkListener {
    link::listen(kind, "127.0.0.1:0".parse().unwrap(), sec.clone()).await.unwrap()
}

async fn accept(l: &mut LinkListener) -> Link {
    tokio::time::timeout(LIMIT, l.accept()).await.expect("accept timed out")
}

async fn next_event(link: &mut Link) -> LinkEvent {
    next_event_on(&mut link.rx).await
}

async fn next_event_on(rx: &mut mpsc::Receiver<LinkEvent>) -> LinkEvent {
    tokio::time::timeout(LIMIT, rx.recv()).await.expect("no event in time").expect("event channel closed")
}

async fn next_message(link: &mut Link) -> Vec<u8> {
    match next_event(link).await {
        LinkEvent::Message(m) => m,
        LinkEvent::Closed(why) => panic!("link closed: {why}"),
    }
}

async fn closed_reason(link: &mut Link) -> String {
    closed_reason_on(&mut link.rx).await
}

async fn closed_reason_on(rx: &mut mpsc::Receiver<LinkEvent>) -> String {
    loop {
        if let LinkEvent::Closed(why) = next_event_on(rx).await {
            return why;
        }
    }
}

/// Drops the link's sender, which closes the link; its events go on.
fn close(link: Link) -> mpsc::Receiver<LinkEvent> {
    link.rx
}

/// Waits (bounded) for a counter the listener updates from another task.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Dials `l` and accepts the same link: (dialer's end, listener's end).
async fn pair(kind: LinkKind, l: &mut LinkListener, sec: &Arc<LinkSecurity>, expect: NodeId) -> (Link, Link) {
    let addr = l.local_addr();
    let accepting = async { Ok::<_, LinkError>(accept(l).await) };
    match tokio::try_join!(link::dial(kind, addr, sec.clone(), Some(expect)), accepting) {
        Ok(both) => both,
        Err(e) => panic!("{kind:?} dial failed: {e}"),
    }
}

fn message(i: usize, len: usize) -> Vec<u8> {
    let mut m = (i as u32).to_be_bytes().to_vec();
    m.extend((0..len.saturating_sub(4)).map(|j| (i + j) as u8));
    m
}

/// Sends `n` messages each way at once and checks both sides get them
/// intact and in order.
async fn exchange(a: &mut Link, b: &mut Link, n: usize, size: impl Fn(usize) -> usize) {
    let sent: Vec<Vec<u8>> = (0..n).map(|i| message(i, size(i))).collect();
    let (ta, tb) = (a.tx.clone(), b.tx.clone());
    let (sa, sb) = (sent.clone(), sent.clone());
    tokio::spawn(async move {
        for m in sa {
            ta.send(m).await.unwrap();
        }
    });
    tokio::spawn(async move {
        for m in sb {
            tb.send(m).await.unwrap();
        }
    });
    for want in &sent {
        assert_eq!(&next_message(b).await, want);
        assert_eq!(&next_message(a).await, want);
    }
}

/// Like [`exchange`], where a loss may reorder (SR resends): compares sets.
async fn exchange_unordered(a: &mut Link, b: &mut Link, n: usize, len: usize) {
    let sent: BTreeSet<Vec<u8>> = (0..n).map(|i| message(i, len)).collect();
    for m in &sent {
        a.tx.send(m.clone()).await.unwrap();
        b.tx.send(m.clone()).await.unwrap();
    }
    let (mut at_a, mut at_b) = (BTreeSet::new(), BTreeSet::new());
    for _ in 0..n {
        at_b.insert(next_message(b).await);
        at_a.insert(next_message(a).await);
    }
    assert_eq!((at_a, at_b), (sent.clone(), sent));
}

#[tokio::test]
async fn tls_link_carries_messages_both_ways() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    let mut l = listen(LinkKind::TlsTcpFhNoIce, &sb).await;
    let (mut a, mut b) = pair(LinkKind::TlsTcpFhNoIce, &mut l, &sa, node(2)).await;
    assert_eq!(a.peer.node_ids, vec![node(2)]);
    assert_eq!(b.peer.node_ids, vec![node(1)]);
    assert_eq!(b.peer.user.as_deref(), Some("n1@links.example.org"));
    assert_eq!(a.peer.cert_der, sb.cert_der);
    assert_eq!(a.kind, LinkKind::TlsTcpFhNoIce);
    exchange(&mut a, &mut b, 100, |i| if i == 50 { 4000 } else { 10 + i * 7 }).await;
    // Dropping the sender closes the link: both ends hear of it.
    let mut a_rx = close(a);
    assert_eq!(closed_reason_on(&mut a_rx).await, "closed locally");
    assert_eq!(closed_reason(&mut b).await, "peer closed the connection");
}

#[tokio::test]
async fn dtls_link_carries_messages_both_ways() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    let mut l = listen(LinkKind::DtlsUdpSrNoIce, &sb).await;
    let (mut a, mut b) = pair(LinkKind::DtlsUdpSrNoIce, &mut l, &sa, node(2)).await;
    assert_eq!(a.peer.node_ids, vec![node(2)]);
    assert_eq!(b.peer.node_ids, vec![node(1)]);
    assert!(b.remote.ip().is_loopback());
    exchange(&mut a, &mut b, 100, |i| 10 + i * 10).await;
    let mut a_rx = close(a);
    assert_eq!(closed_reason_on(&mut a_rx).await, "closed locally");
    assert_eq!(closed_reason(&mut b).await, "peer closed the session");
}

#[tokio::test]
async fn ed25519_and_rsa_certificates_work() {
    logs();
    let ca = new_ca();
    let ed = security(&ca, KeyAlgorithm::Ed25519, node(3));
    let rsa = security(&ca, KeyAlgorithm::RsaPkcs1Sha256, node(4));
    for kind in KINDS {
        let mut l = listen(kind, &rsa).await;
        let (mut a, mut b) = pair(kind, &mut l, &ed, node(4)).await;
        assert_eq!(b.peer.node_ids, vec![node(3)], "{kind:?}");
        assert_eq!(a.peer.node_ids, vec![node(4)], "{kind:?}");
        exchange(&mut a, &mut b, 3, |_| 100).await;
    }
    let mut l = listen(LinkKind::TlsTcpFhNoIce, &ed).await;
    let (mut a, mut b) = pair(LinkKind::TlsTcpFhNoIce, &mut l, &rsa, node(3)).await;
    exchange(&mut a, &mut b, 3, |_| 100).await;
    // Known limitation of OpenSSL 3.0: a DTLS 1.2 server cannot use an
    // Ed25519 certificate ("no shared cipher"). If this starts to pass,
    // OpenSSL was fixed: drop the limitation from the docs.
    let l = listen(LinkKind::DtlsUdpSrNoIce, &ed).await;
    let err = link::dial(LinkKind::DtlsUdpSrNoIce, l.local_addr(), rsa.clone(), None).await.unwrap_err();
    assert!(matches!(err, LinkError::Handshake(_)), "{err}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_on_both_sides() {
    logs();
    let (ca, other) = (new_ca(), new_ca());
    let good = security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1));
    let server = security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2));
    let stranger = security(&other, KeyAlgorithm::EcdsaP256Sha256, node(1));
    for kind in KINDS {
        let mut l = listen(kind, &server).await;
        let addr = l.local_addr();
        // A dialer with a foreign certificate: the listener refuses it. Under
        // TLS 1.3 the dialer's handshake may finish before the refusal
        // arrives, so it then sees its link close at once.
        match link::dial(kind, addr, stranger.clone(), Some(node(2))).await {
            Err(_) => {}
            Ok(mut link) => {
                let why = closed_reason(&mut link).await;
                assert!(!why.is_empty());
            }
        }
        wait_until("the refusal to be counted", || l.rejected() == 1).await;
        // The listener keeps serving good peers.
        let (mut a, mut b) = pair(kind, &mut l, &good, node(2)).await;
        exchange(&mut a, &mut b, 1, |_| 50).await;
        assert_eq!(l.rejected(), 1, "{kind:?}");
        // A listener with a foreign certificate: the dialer refuses it.
        let mut fake = listen(kind, &stranger).await;
        let err = link::dial(kind, fake.local_addr(), good.clone(), None).await.unwrap_err();
        assert!(matches!(err, LinkError::Certificate(_)), "{kind:?}: {err}");
        wait_until("the stranger to count the refusal", || fake.rejected() == 1).await;
        let _ = &mut fake;
    }
}

#[tokio::test]
async fn dialing_the_wrong_node_id_fails() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    for kind in KINDS {
        let l = listen(kind, &sb).await;
        let err = link::dial(kind, l.local_addr(), sa.clone(), Some(node(9))).await.unwrap_err();
        match err {
            LinkError::WrongNodeId { expected, found } => {
                assert_eq!(expected, node(9));
                assert_eq!(found, vec![node(2).to_hex()]);
            }
            other => panic!("{kind:?}: {other}"),
        }
    }
}

/// A TLS client that speaks raw bytes after the handshake.
async fn raw_tls_client(addr: SocketAddr, sec: &LinkSecurity) -> SslStream<TcpStream> {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_certificate(&X509::from_der(&sec.cert_der).unwrap()).unwrap();
    b.set_private_key(&PKey::private_key_from_pkcs8(&sec.key_pkcs8).unwrap()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let ssl = b.build().configure().unwrap().verify_hostname(false).into_ssl("peer").unwrap();
    let mut s = SslStream::new(ssl, TcpStream::connect(addr).await.unwrap()).unwrap();
    Pin::new(&mut s).connect().await.unwrap();
    s
}

#[tokio::test]
async fn tls_garbage_and_oversized_frames_close_only_their_link() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    let mut l = listen(LinkKind::TlsTcpFhNoIce, &sb).await;
    let (mut keep_a, mut keep_b) = pair(LinkKind::TlsTcpFhNoIce, &mut l, &sa, node(2)).await;

    // Bytes that are no TLS at all: a refused handshake.
    let mut plain = TcpStream::connect(l.local_addr()).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    wait_until("the plain-text peer to be refused", || l.rejected() == 1).await;

    // A valid frame first, then an unknown frame type.
    let mut raw = raw_tls_client(l.local_addr(), &sa).await;
    let mut bad = accept(&mut l).await;
    raw.write_all(&[128, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 0x05, 1, 2, 3]).await.unwrap();
    assert_eq!(next_message(&mut bad).await, vec![1, 2, 3]);
    assert_eq!(closed_reason(&mut bad).await, "unknown frame type 5");
    // The listener ACKed the DATA frame (§6.6.2) before closing.
    let mut ack = [0u8; 9];
    raw.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack, [129, 0, 0, 0, 0, 0, 0, 0, 0]);

    // A DATA header announcing 1 MiB: refused from the header alone.
    let mut raw = raw_tls_client(l.local_addr(), &sa).await;
    let mut big = accept(&mut l).await;
    raw.write_all(&[128, 0, 0, 0, 0, 0x10, 0, 0]).await.unwrap();
    assert_eq!(closed_reason(&mut big).await, format!("oversized frame {} bytes", 8 + (1 << 20)));

    // The good link is untouched.
    exchange(&mut keep_a, &mut keep_b, 5, |_| 300).await;
    assert_eq!(l.rejected(), 1);
}

#[tokio::test]
async fn dtls_ignores_garbage_datagrams() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    let mut l = listen(LinkKind::DtlsUdpSrNoIce, &sb).await;
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for d in [&b"hello"[..], &[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0][..], &[0u8; 1500][..]] {
        junk.send_to(d, l.local_addr()).await.unwrap();
    }
    wait_until("the junk to be ignored", || l.ignored_datagrams() == 3).await;
    let (mut a, mut b) = pair(LinkKind::DtlsUdpSrNoIce, &mut l, &sa, node(2)).await;
    exchange(&mut a, &mut b, 10, |_| 200).await;
    assert_eq!(l.rejected(), 0);
}

#[tokio::test]
async fn dtls_dial_from_the_listener_socket() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    let la = listen(LinkKind::DtlsUdpSrNoIce, &sa).await;
    let mut lb = listen(LinkKind::DtlsUdpSrNoIce, &sb).await;
    let (dialed, mut b) = tokio::join!(la.dial(lb.local_addr(), Some(node(2))), accept(&mut lb));
    let mut a = dialed.unwrap();
    // One UDP port per node: B sees A's listening port.
    assert_eq!(b.remote, la.local_addr());
    exchange(&mut a, &mut b, 20, |_| 500).await;
    // A second session to the same address on the same socket is refused.
    assert!(matches!(la.dial(lb.local_addr(), None).await, Err(LinkError::Busy(_))));
    // A dialer handle outlives its listener only to say the socket is gone,
    // and dropping the listener ends the links on its socket.
    let dialer = la.dialer();
    drop(la);
    assert!(matches!(dialer.dial(lb.local_addr(), None).await, Err(LinkError::SocketClosed)));
    assert_eq!(closed_reason(&mut a).await, "socket closed");
    assert_eq!(closed_reason(&mut b).await, "peer closed the session");
}

#[tokio::test]
async fn dtls_fragments_long_reload_messages() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    let mut l = listen(LinkKind::DtlsUdpSrNoIce, &sb).await;
    let (a, mut b) = pair(LinkKind::DtlsUdpSrNoIce, &mut l, &sa, node(2)).await;
    // A 4000-byte RELOAD message does not fit one datagram: it arrives as
    // §6.7 fragments that reassemble to the original.
    let h = ForwardingHeader::new(1, 1, 42, vec![Destination::Node(node(2))]);
    let mut w = Writer::new();
    h.encode_with_length(&mut w, 0);
    let payload = 4000 - w.len();
    w.bytes(&(0..payload).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    w.patch_u32(16, 4000);
    let msg = w.finish().unwrap();
    a.tx.send(msg.clone()).await.unwrap();
    let mut r = Reassembler::new(1 << 20, 1 << 22);
    let mut pieces = 0;
    loop {
        let piece = next_message(&mut b).await;
        assert!(piece.len() <= link::dtls::MAX_FRAME_PAYLOAD);
        pieces += 1;
        if let Reassembly::Complete(whole) = r.push(Instant::now(), &piece).unwrap() {
            assert_eq!(whole, msg);
            break;
        }
    }
    assert_eq!(pieces, 4);
}

/// A UDP relay between a dialer and `server` that drops chosen datagrams.
struct LossyProxy {
    addr: SocketAddr,
    /// Where the server sees the relayed datagrams come from.
    back: SocketAddr,
    dropped: Arc<AtomicUsize>,
}

/// Drops the first `hellos` client datagrams (handshake loss) and the
/// first `data` DATA-sized application records in each direction (ACKs
/// are small and pass, so nothing is delivered twice).
async fn lossy_proxy(server: SocketAddr, hellos: usize, data: usize) -> LossyProxy {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    let back_addr = back.local_addr().unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let count = dropped.clone();
    tokio::spawn(async move {
        let (mut fbuf, mut bbuf) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut client = None;
        let (mut c_all, mut c_data, mut s_data) = (0, 0, 0);
        let big_app = |d: &[u8]| d[0] == 23 && d.len() > 120;
        loop {
            tokio::select! {
                r = front.recv_from(&mut fbuf) => {
                    let (n, from) = r.unwrap();
                    client = Some(from);
                    let d = &fbuf[..n];
                    c_all += 1;
                    if c_all <= hellos || (big_app(d) && { c_data += 1; c_data <= data }) {
                        count.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    back.send_to(d, server).await.unwrap();
                }
                r = back.recv_from(&mut bbuf) => {
                    let (n, _) = r.unwrap();
                    let d = &bbuf[..n];
                    if big_app(d) && { s_data += 1; s_data <= data } {
                        count.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if let Some(c) = client {
                        front.send_to(d, c).await.unwrap();
                    }
                }
            }
        }
    });
    LossyProxy { addr, back: back_addr, dropped }
}

#[tokio::test]
async fn dtls_recovers_lost_handshake_and_data_datagrams() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    let mut l = listen(LinkKind::DtlsUdpSrNoIce, &sb).await;
    let proxy = lossy_proxy(l.local_addr(), 1, 2).await;
    let (dialed, mut b) =
        tokio::join!(link::dial(LinkKind::DtlsUdpSrNoIce, proxy.addr, sa.clone(), Some(node(2))), accept(&mut l));
    let mut a = dialed.unwrap();
    // The lost ClientHello was sent again by DTLS's own timer.
    assert_eq!(proxy.dropped.load(Ordering::Relaxed), 1);
    let sent: BTreeSet<Vec<u8>> = (0..10).map(|i| message(i, 300)).collect();
    for m in &sent {
        a.tx.send(m.clone()).await.unwrap();
        b.tx.send(m.clone()).await.unwrap();
    }
    // Simple Reliability resends the lost frames; after a loss order may
    // change, so compare sets.
    let (mut at_a, mut at_b) = (BTreeSet::new(), BTreeSet::new());
    for _ in 0..10 {
        at_b.insert(next_message(&mut b).await);
        at_a.insert(next_message(&mut a).await);
    }
    assert_eq!(at_b, sent);
    assert_eq!(at_a, sent);
    assert_eq!(proxy.dropped.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn dtls_peer_restarting_on_the_same_address_replaces_its_session() {
    logs();
    let ca = new_ca();
    let sa = security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1));
    let sb = security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2));
    let mut l = listen(LinkKind::DtlsUdpSrNoIce, &sb).await;
    // Both dialers reach the listener from the relay's one address, as a
    // node restarted on its old port would.
    let relay = lossy_proxy(l.local_addr(), 0, 0).await;
    let dial = || link::dial(LinkKind::DtlsUdpSrNoIce, relay.addr, sa.clone(), Some(node(2)));
    let (_old_a, mut old_b) = tokio::try_join!(dial(), async { Ok(accept(&mut l).await) }).unwrap();
    let (mut a, mut b) = tokio::try_join!(dial(), async { Ok(accept(&mut l).await) }).unwrap();
    assert_eq!(b.remote, old_b.remote);
    assert_eq!(closed_reason(&mut old_b).await, "replaced by a new session from the same address");
    exchange(&mut a, &mut b, 5, |_| 200).await;
    assert_eq!(l.rejected(), 0);
}

#[tokio::test]
async fn dtls_simultaneous_open_from_listening_sockets_ends_with_one_link() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    // Each round both nodes dial each other at once from their listening
    // sockets: one 5-tuple, two ClientHellos. Whichever random wins, both
    // dials return the same single link.
    for round in 0..8 {
        let mut la = listen(LinkKind::DtlsUdpSrNoIce, &sa).await;
        let mut lb = listen(LinkKind::DtlsUdpSrNoIce, &sb).await;
        let (da, db) = tokio::join!(la.dial(lb.local_addr(), Some(node(2))), lb.dial(la.local_addr(), Some(node(1))));
        let (mut a, mut b) = (da.unwrap(), db.unwrap());
        assert_eq!(a.peer.node_ids, vec![node(2)], "round {round}");
        assert_eq!(b.peer.node_ids, vec![node(1)], "round {round}");
        assert_eq!((a.remote, b.remote), (lb.local_addr(), la.local_addr()));
        exchange(&mut a, &mut b, 10, |_| 300).await;
        // Nothing else came up on either side.
        for l in [&mut la, &mut lb] {
            assert!(tokio::time::timeout(Duration::from_millis(50), l.accept()).await.is_err(), "round {round}");
            assert_eq!(l.rejected(), 0, "round {round}");
        }
        let mut a_rx = close(a);
        assert_eq!(closed_reason_on(&mut a_rx).await, "closed locally");
        assert_eq!(closed_reason(&mut b).await, "peer closed the session");
    }
}

#[tokio::test]
async fn dtls_link_follows_a_new_remote_address() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    let la = listen(LinkKind::DtlsUdpSrNoIce, &sa).await;
    let mut lb = listen(LinkKind::DtlsUdpSrNoIce, &sb).await;
    // The link starts over one path (relay 1) ...
    let first = lossy_proxy(lb.local_addr(), 0, 0).await;
    let (dialed, mut b) = tokio::join!(la.dial(first.addr, Some(node(2))), accept(&mut lb));
    let mut a = dialed.unwrap();
    assert_eq!(b.remote, first.back);
    exchange(&mut a, &mut b, 5, |_| 200).await;
    // ... and both ends move it to another (relay 2), as ICE would after
    // selecting a new pair. The DTLS session and its keys stay.
    let second = lossy_proxy(lb.local_addr(), 0, 0).await;
    la.dialer().set_remote(a.id, second.addr).await.unwrap();
    lb.dialer().set_remote(b.id, second.back).await.unwrap();
    // Relay 2 learns A's address from A's first datagram: what B sends
    // before that is lost and resent by Simple Reliability, so the order
    // may change.
    exchange_unordered(&mut a, &mut b, 20, 500).await;
    // Bad requests: an unknown link, an address another link holds.
    let unknown = link::LinkId(u64::MAX);
    assert!(matches!(lb.dialer().set_remote(unknown, first.back).await, Err(LinkError::NoSuchLink)));
    let c = lossy_proxy(lb.local_addr(), 0, 0).await;
    let (dialed, mut cb) = tokio::join!(la.dial(c.addr, Some(node(2))), accept(&mut lb));
    let mut ca_link = dialed.unwrap();
    assert!(matches!(lb.dialer().set_remote(cb.id, second.back).await, Err(LinkError::Busy(_))));
    exchange(&mut ca_link, &mut cb, 3, |_| 100).await;
    exchange(&mut a, &mut b, 3, |_| 100).await;
}

#[tokio::test]
async fn stun_datagrams_on_the_link_socket_are_not_taken_for_dtls() {
    logs();
    let ca = new_ca();
    let (sa, sb) =
        (security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(1)), security(&ca, KeyAlgorithm::EcdsaP256Sha256, node(2)));
    let mut l = listen(LinkKind::DtlsUdpSrNoIce, &sb).await;
    let (mut a, mut b) = pair(LinkKind::DtlsUdpSrNoIce, &mut l, &sa, node(2)).await;
    // A STUN Binding request (RFC 8489 §5: type 0x0001, length 0, magic
    // cookie, transaction id), and one whose tail is a DTLS ClientHello's:
    // the first byte decides (RFC 7983), so neither starts a handshake.
    let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    binding.extend([7u8; 12]);
    let mut hello_tail = vec![0u8; 120];
    hello_tail[1] = 0xfe;
    hello_tail[13] = 1;
    let stun = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for d in [&binding, &hello_tail] {
        stun.send_to(d, l.local_addr()).await.unwrap();
    }
    wait_until("the STUN datagrams to be counted", || l.stun_datagrams() == 2).await;
    assert_eq!(l.ignored_datagrams(), 2);
    assert_eq!(l.rejected(), 0);
    exchange(&mut a, &mut b, 5, |_| 100).await;
    assert!(tokio::time::timeout(Duration::from_millis(50), l.accept()).await.is_err());
}
