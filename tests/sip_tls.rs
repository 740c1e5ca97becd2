//! SIP over TLS for phones (RFC 3261 §26.2.1, RFC 5630): a real
//! `chordphone node` on loopback with `[sip] tls`; phones are OpenSSL
//! clients written here that trust the overlay root (`ca.der`), register
//! with an MD5 digest computed independently of the node's code, and get
//! requests delivered over their TLS flow. Untrusting clients and plain
//! TCP on the TLS port are refused while the node keeps serving; a
//! configured PEM certificate replaces the overlay one.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "support/cluster.rs"]
mod cluster;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use cluster::{Cluster, free_port, run_ok, wait_for};
use md5::{Digest, Md5};
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::X509;

const DOMAIN: &str = "chordphone.test";
const PASSWORD: &str = "s3cret";

/// One node serving SIP on UDP and TLS, with accounts `users`; returns the
/// cluster and the TLS port once the node has joined and listens on TLS.
fn tls_node(users: &[&str], extra_sip: &str) -> (Cluster, u16) {
    let (udp, tls) = (free_port(), free_port());
    let mut c = Cluster::new(
        1,
        &format!(
            "[sip]\nudp = \"127.0.0.1:{udp}\"\ntcp = \"off\"\ntls = \"127.0.0.1:{tls}\"\nnode_tls = \"off\"\n\
             domain = \"{DOMAIN}\"\n{extra_sip}"
        ),
    );
    let (ov, dir) = (c.overlay_dir.to_string_lossy().into_owned(), c.nodes[0].dir.to_string_lossy().into_owned());
    for u in users {
        let aor = format!("{u}@{DOMAIN}");
        run_ok(&["user", "add", &aor, "--password", PASSWORD, "--overlay", &ov, "--data-dir", &dir]);
    }
    start(&mut c, tls);
    (c, tls)
}

fn start(c: &mut Cluster, tls: u16) {
    c.nodes[0].start();
    let want = format!("tls:127.0.0.1:{tls}");
    let up = wait_for(Duration::from_secs(20), || {
        c.nodes[0].status().is_some_and(|s| {
            s["joined"] == true && s["sip"]["listening"].as_array().is_some_and(|l| l.iter().any(|v| *v == *want))
        })
    });
    if !up {
        c.dump_logs();
    }
    assert!(up, "the node did not join and listen on {want}");
}

fn overlay_root(c: &Cluster) -> X509 {
    X509::from_der(&std::fs::read(c.overlay_dir.join("ca.der")).expect("ca.der")).expect("ca.der is a certificate")
}

/// A TLS client trusting only `root`. The overlay certificate names
/// Node-IDs, not hosts, so the host name is checked only when asked.
fn connect(port: u16, root: &X509, host: Option<&str>) -> Result<SslStream<TcpStream>, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.cert_store_mut().add_cert(root.clone()).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::PEER);
    let mut cfg = b.build().configure().map_err(|e| e.to_string())?;
    cfg.set_verify_hostname(host.is_some());
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    cfg.connect(host.unwrap_or("node"), tcp).map_err(|e| e.to_string())
}

/// A phone on one TLS connection.
struct Phone {
    user: &'static str,
    s: SslStream<TcpStream>,
    buf: Vec<u8>,
    port: u16,
    seq: u32,
}

impl Phone {
    fn new(user: &'static str, s: SslStream<TcpStream>) -> Phone {
        let port = s.get_ref().local_addr().expect("local addr").port();
        Phone { user, s, buf: Vec::new(), port, seq: 0 }
    }

    fn send(&mut self, msg: &str) {
        self.s.write_all(msg.as_bytes()).expect("write to the node");
    }

    /// The next SIP message from the node (Content-Length framing).
    fn recv(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len = header(&head, "Content-Length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let msg: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return String::from_utf8_lossy(&msg).into_owned();
                }
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("the node closed the connection; got {:?}", String::from_utf8_lossy(&self.buf)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading from the node: {e}; got {:?}", String::from_utf8_lossy(&self.buf)),
            }
        }
    }

    fn request(&mut self, method: &str, ruri: &str, to: &str, extra: &str, body: &str) -> String {
        self.seq += 1;
        let (user, port, seq) = (self.user, self.port, self.seq);
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bK-{user}-{seq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag={user}-tag\r\nTo: <{to}>\r\n\
             Call-ID: {user}-{method}@127.0.0.1\r\nCSeq: {seq} {method}\r\n\
             Contact: <sip:{user}@127.0.0.1:{port};transport=tls>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Sends a request; on a 401/407 challenge, sends it again with MD5
    /// digest credentials. Returns the final response.
    fn authenticated(&mut self, method: &str, ruri: &str, to: &str, extra: &str, body: &str) -> String {
        let req = self.request(method, ruri, to, extra, body);
        self.send(&req);
        let first = self.final_response();
        let (challenge, answer) = match status(&first) {
            401 => ("WWW-Authenticate", "Authorization"),
            407 => ("Proxy-Authenticate", "Proxy-Authorization"),
            _ => return first,
        };
        let md5 = headers(&first, challenge)
            .into_iter()
            .find(|v| v.contains("algorithm=MD5"))
            .unwrap_or_else(|| panic!("no MD5 challenge in {first}"));
        let (realm, nonce) = (param(&md5, "realm"), param(&md5, "nonce"));
        let h = |s: String| hex::encode(Md5::digest(s.as_bytes()));
        let ha1 = h(format!("{}:{realm}:{PASSWORD}", self.user));
        let ha2 = h(format!("{method}:{ruri}"));
        let response = h(format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
        let creds = format!(
            "{answer}: Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{ruri}\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n",
            self.user
        );
        let req = self.request(method, ruri, to, &format!("{extra}{creds}"), body);
        self.send(&req);
        self.final_response()
    }

    fn final_response(&mut self) -> String {
        loop {
            let m = self.recv();
            assert!(m.starts_with("SIP/2.0 "), "expected a response, got {m}");
            if status(&m) >= 200 {
                return m;
            }
        }
    }

    fn register(&mut self) -> String {
        let aor = format!("sip:{}@{DOMAIN}", self.user);
        self.authenticated("REGISTER", &format!("sip:{DOMAIN}"), &aor, "Expires: 600\r\n", "")
    }
}

fn status(msg: &str) -> u16 {
    msg.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn headers(msg: &str, name: &str) -> Vec<String> {
    msg.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn header(msg: &str, name: &str) -> Option<String> {
    headers(msg, name).into_iter().next()
}

fn param(challenge: &str, name: &str) -> String {
    let start = challenge.find(&format!("{name}=\"")).map(|i| i + name.len() + 2).expect("parameter");
    challenge[start..].split('"').next().expect("closing quote").to_owned()
}

fn registrations(c: &Cluster) -> u64 {
    c.nodes[0].status().and_then(|s| s["records_by_kind"]["SIP-REGISTRATION"].as_u64()).unwrap_or(0)
}

#[test]
fn phones_register_and_receive_requests_over_tls() {
    let (c, port) = tls_node(&["alice", "bob"], "");
    let root = overlay_root(&c);
    let mut alice = Phone::new("alice", connect(port, &root, None).expect("TLS with the overlay root"));

    let ok = alice.register();
    assert_eq!(status(&ok), 200, "{ok}");
    let contact = header(&ok, "Contact").expect("the 200 lists the bindings");
    assert!(contact.contains(&format!("sip:alice@127.0.0.1:{};transport=tls", alice.port)), "{contact}");
    assert!(header(&ok, "Via").is_some_and(|v| v.starts_with("SIP/2.0/TLS 127.0.0.1")), "{ok}");
    assert!(wait_for(Duration::from_secs(5), || registrations(&c) >= 1), "the registration is not in the overlay");
    let counters = c.nodes[0].status().expect("status")["sip"]["counters"].clone();
    assert_eq!(counters["register_ok"], 1, "{counters}");

    // RFC 5626 §4.4.1 keep-alive on the TLS flow: CRLFCRLF → CRLF.
    alice.send("\r\n\r\n");
    let mut pong = [0u8; 2];
    alice.s.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");

    // Bob, on another TLS connection, sends alice a MESSAGE: the node
    // delivers it on alice's flow with its own Via saying TLS.
    let mut bob = Phone::new("bob", connect(port, &root, None).expect("bob's TLS"));
    let aor = format!("sip:alice@{DOMAIN}");
    bob.seq += 1;
    let body = "hello over TLS";
    let extra = "Content-Type: text/plain\r\n";
    let bob_thread = std::thread::spawn(move || {
        let r = bob.authenticated("MESSAGE", &aor, &aor, extra, body);
        (bob, r)
    });
    let msg = alice.recv();
    assert!(msg.starts_with("MESSAGE sip:alice@"), "{msg}");
    assert!(msg.ends_with(body), "{msg}");
    let via = headers(&msg, "Via");
    // The node's Via names its TLS listener, so answers and in-dialog
    // requests over TLS come back to the right port.
    let ours = format!("SIP/2.0/TLS 127.0.0.1:{port};");
    assert!(via.first().is_some_and(|v| v.starts_with(&ours)), "{via:?} should start with {ours}");
    // Alice answers on the same connection; bob gets the 200.
    let mut answer = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for v in headers(&msg, name) {
            answer.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    answer.push_str("Content-Length: 0\r\n\r\n");
    alice.send(&answer);
    let (_bob, r) = bob_thread.join().expect("bob's thread");
    assert_eq!(status(&r), 200, "{r}");
}

#[test]
fn untrusting_clients_and_plain_tcp_are_refused_and_the_node_keeps_serving() {
    let (mut c, port) = tls_node(&["alice"], "");
    // A client that trusts some other root fails verification.
    let stranger = X509::from_der(
        rcgen::CertificateParams::new(vec!["stranger".to_owned()])
            .expect("params")
            .self_signed(&rcgen::KeyPair::generate().expect("key"))
            .expect("cert")
            .der(),
    )
    .expect("der");
    let e = connect(port, &stranger, None).expect_err("the handshake must fail");
    assert!(e.contains("certificate verify failed"), "{e}");
    // Plain SIP over TCP on the TLS port: no SIP answer, the node closes.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).expect("tcp");
    plain.set_read_timeout(Some(Duration::from_secs(12))).expect("timeout");
    plain
        .write_all(b"OPTIONS sip:chordphone.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    match plain.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the node did not close the connection: {e}"),
    }
    assert!(!got.windows(7).any(|w| w == b"SIP/2.0"), "{}", String::from_utf8_lossy(&got));
    // A client that does trust the overlay root still registers.
    let root = overlay_root(&c);
    let mut alice = Phone::new("alice", connect(port, &root, None).expect("TLS with the overlay root"));
    let ok = alice.register();
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(c.nodes[0].alive() && c.nodes[0].joined(), "the node stopped serving");
}

#[test]
fn a_configured_pem_certificate_is_shown_and_a_mismatched_key_is_named() {
    let name = "sip.chordphone.test";
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params").self_signed(&key).expect("cert");
    let other = rcgen::KeyPair::generate().expect("other key");
    let (mut c, port) = {
        let (udp, tls) = (free_port(), free_port());
        let c = Cluster::new(
            1,
            &format!(
                "[sip]\nudp = \"127.0.0.1:{udp}\"\ntcp = \"off\"\ntls = \"127.0.0.1:{tls}\"\nnode_tls = \"off\"\n\
                 domain = \"{DOMAIN}\"\ntls_cert = \"fullchain.pem\"\ntls_key = \"privkey.pem\"\n"
            ),
        );
        (c, tls)
    };
    let dir = c.nodes[0].dir.clone();
    let write = |f: &str, text: String| std::fs::write(Path::new(&dir).join(f), text).expect("pem");
    write("fullchain.pem", cert.pem());
    // The wrong key: the node refuses to start and says why.
    write("privkey.pem", other.serialize_pem());
    c.nodes[0].start();
    assert!(wait_for(Duration::from_secs(20), || !c.nodes[0].alive()), "started with a key that does not match");
    c.nodes[0].kill9(); // reaps the exited process
    let log = c.nodes[0].log();
    assert!(log.contains("privkey.pem does not match the certificate in tls_cert"), "{log}");
    // The right key: phones that trust the certificate connect with host
    // name checking; one that only trusts the overlay root does not.
    write("privkey.pem", key.serialize_pem());
    start(&mut c, port);
    let trusted = X509::from_der(cert.der()).expect("der");
    let mut phone = Phone::new("nobody", connect(port, &trusted, Some(name)).expect("TLS with the configured cert"));
    let req = phone.request("OPTIONS", &format!("sip:{DOMAIN}"), &format!("sip:{DOMAIN}"), "", "");
    phone.send(&req);
    let r = phone.final_response();
    assert_eq!(status(&r), 200, "{r}");
    let e = connect(port, &overlay_root(&c), None).expect_err("the overlay root does not vouch for it");
    assert!(e.contains("certificate verify failed"), "{e}");
}
