//! RFC 6940 §11.3 enrollment over real HTTPS on 127.0.0.1: the server
//! from `chordphone::node::enroll`, our client, and a raw TLS client that
//! sends what a broken or hostile client might.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chordphone::node::enroll::{
    EnrollError, EnrollServerConfig, EnrollUsers, enroll_remote, serve_on, server_tls_identity,
};
use chordphone::security::{KeyAlgorithm, KeyPair, OverlayCa, verify_chain};
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_openssl::SslStream;

const OVERLAY: &str = "overlay.example.org";
const USER: &str = "alice@example.org";
const PASSWORD: &str = "correct horse battery staple";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

struct Server {
    addr: SocketAddr,
    root: Vec<u8>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), EnrollError>>,
}

impl Server {
    async fn start() -> Server {
        let t = now();
        let ca_key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap();
        let ca = OverlayCa::create(OVERLAY, ca_key, t - 3600, t + 86_400).unwrap();
        let (tls_cert_der, tls_key_pkcs8) = server_tls_identity(&ca, "127.0.0.1", t, 3600).unwrap();
        let mut users = EnrollUsers::new();
        users.add(USER, PASSWORD).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let root = ca.cert_der().to_vec();
        let cfg =
            EnrollServerConfig { listen: addr, ca: Arc::new(ca), tls_cert_der, tls_key_pkcs8, users, validity_s: 3600 };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(listener, cfg, async move {
            let _ = stopped.await;
        }));
        Server { addr, root, stop: Some(stop), task }
    }

    fn url(&self) -> String {
        format!("https://{}/enroll", self.addr)
    }

    async fn enroll(&self, password: &str, count: u32) -> Result<chordphone::node::enroll::Enrollment, EnrollError> {
        enroll_remote(&self.url(), &self.root, OVERLAY, USER, password, count, KeyAlgorithm::EcdsaP256Sha256).await
    }

    /// Sends `request` verbatim over TLS (trusting the overlay root) and
    /// returns the status code and the whole answer text.
    async fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(X509::from_der(&self.root).unwrap()).unwrap();
        let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
        b.set_cert_store(store.build());
        let ssl = b.build().configure().unwrap().into_ssl("127.0.0.1").unwrap();
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let mut tls = SslStream::new(ssl, tcp).unwrap();
        Pin::new(&mut tls).connect().await.unwrap();
        tls.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        // The server closes after one answer (no keep-alive).
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await.unwrap().ok();
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap().unwrap();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn post(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn enrollment_over_https() {
    runtime().block_on(async {
        let server = Server::start().await;

        let e = server.enroll(PASSWORD, 2).await.unwrap();
        assert_eq!(e.node_ids.len(), 2);
        assert_eq!(e.user.as_deref(), Some(USER));
        assert_eq!(e.ca_der, server.root);
        let id = verify_chain(&e.cert_der, &server.root, now(), OVERLAY).unwrap();
        assert_eq!(id.node_ids, e.node_ids);
        assert_eq!(KeyPair::from_pkcs8_der(&e.key_pkcs8).unwrap().spki_der(), id.spki_der);

        // A second enrollment gets fresh random Node-IDs.
        let again = server.enroll(PASSWORD, 1).await.unwrap();
        assert!(!e.node_ids.contains(&again.node_ids[0]));

        server.stop().await;
    });
}

#[test]
fn wrong_password_is_refused() {
    runtime().block_on(async {
        let server = Server::start().await;
        match server.enroll("guess", 1).await {
            Err(EnrollError::Rejected { status: 403, reason }) => {
                assert!(reason.starts_with("failed_authentication"), "{reason}")
            }
            other => panic!("expected a 403 refusal, got {other:?}"),
        }
        // Too many Node-IDs is refused by the client before asking.
        assert!(matches!(server.enroll(PASSWORD, 17).await, Err(EnrollError::NodeIdCount(17))));
        server.stop().await;
    });
}

#[test]
fn bad_requests_get_http_errors_and_the_server_keeps_serving() {
    runtime().block_on(async {
        let server = Server::start().await;

        let (status, text) = server.raw(&post("multipart/form-data; boundary=xyz", b"\x00\xffgarbage")).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("no multipart boundary"), "{text}");

        let form = b"username=alice%40example.org&password=correct+horse+battery+staple&csr=bm90IGEgQ1NS";
        let (status, text) = server.raw(&post("application/x-www-form-urlencoded", form)).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("bad_CSR"), "{text}");

        let (status, text) = server.raw(&post("application/json", b"{}")).await;
        assert_eq!(status, 415, "{text}");

        let (status, text) = server.raw(b"GET /enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status, 405, "{text}");
        assert!(text.to_ascii_lowercase().contains("allow: post"), "{text}");

        let big = "POST /enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                   Content-Length: 1000000\r\nConnection: close\r\n\r\nusername=";
        let (status, text) = server.raw(big.as_bytes()).await;
        assert_eq!(status, 413, "{text}");

        // Not HTTP at all: hyper answers 400 itself.
        let (status, text) = server.raw(b"\x16\x03\x01hello\r\n\r\n").await;
        assert_eq!(status, 400, "{text}");

        // Still alive and correct after all that.
        let e = server.enroll(PASSWORD, 1).await.unwrap();
        assert_eq!(e.node_ids.len(), 1);
        server.stop().await;
    });
}

#[test]
fn client_trusts_only_the_overlay_root() {
    runtime().block_on(async {
        let server = Server::start().await;
        let t = now();
        let other =
            OverlayCa::create(OVERLAY, KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap(), t - 60, t + 3600)
                .unwrap();
        let r =
            enroll_remote(&server.url(), other.cert_der(), OVERLAY, USER, PASSWORD, 1, KeyAlgorithm::EcdsaP256Sha256)
                .await;
        assert!(matches!(r, Err(EnrollError::Tls(_))), "{r:?}");
        // The host must match too: the certificate names 127.0.0.1, not localhost.
        let url = format!("https://localhost:{}/enroll", server.addr.port());
        let r = enroll_remote(&url, &server.root, OVERLAY, USER, PASSWORD, 1, KeyAlgorithm::EcdsaP256Sha256).await;
        assert!(matches!(&r, Err(EnrollError::Tls(m)) if m.contains("certificate verify failed")), "{r:?}");
        server.stop().await;
    });
}
