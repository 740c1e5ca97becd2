//! The HTTPS enrollment server (RFC 6940 §11.3): hyper over OpenSSL, one
//! request per connection, the CA's work off the runtime's threads.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod};
use openssl::x509::X509;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_openssl::SslStream;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::form::{EnrollForm, FormKind};
use super::{EnrollError, EnrollUsers, MAX_BODY, PKIX_CERT, unix_now};
use crate::security::OverlayCa;
use crate::security::enroll::{IssueError, issue_from_csr};
use crate::wire::NodeId;

/// Concurrent connections the server handles; further ones wait in the
/// listen backlog until one finishes.
const MAX_CONNECTIONS: usize = 64;
/// Whole-connection deadline (TLS handshake, request, answer).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`serve`] lets open connections finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What [`serve`] needs.
pub struct EnrollServerConfig {
    /// Where to listen (ignored by [`serve_on`]).
    pub listen: SocketAddr,
    pub ca: Arc<OverlayCa>,
    /// The server's TLS certificate and key, e.g. from [`server_tls_identity`].
    pub tls_cert_der: Vec<u8>,
    pub tls_key_pkcs8: Vec<u8>,
    pub users: EnrollUsers,
    /// Lifetime of issued certificates, seconds.
    pub validity_s: u64,
}

impl fmt::Debug for EnrollServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollServerConfig")
            .field("listen", &self.listen)
            .field("overlay", &self.ca.overlay_name())
            .field("users", &self.users)
            .field("validity_s", &self.validity_s)
            .finish_non_exhaustive()
    }
}

/// Binds `cfg.listen` and runs the enrollment server until `shutdown`
/// completes (see [`serve_on`]).
pub async fn serve(cfg: EnrollServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), EnrollError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| EnrollError::Io { what: format!("bind {}", cfg.listen), source })?;
    serve_on(listener, cfg, shutdown).await
}

/// Runs the HTTPS enrollment server on an already bound `listener` until
/// `shutdown` completes; open connections then get a few seconds to
/// finish. Errors only if the TLS identity is unusable: a bad connection
/// or request is answered or dropped and the server carries on.
pub async fn serve_on(
    listener: TcpListener,
    cfg: EnrollServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EnrollError> {
    let acceptor = tls_acceptor(&cfg.tls_cert_der, &cfg.tls_key_pkcs8)?;
    let state = Arc::new(ServerState { ca: cfg.ca, users: cfg.users, validity_s: cfg.validity_s, acceptor });
    let local = listener.local_addr().ok();
    info!(addr = ?local, overlay = state.ca.overlay_name(), users = state.users.len(), "enrollment server up");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // E.g. out of file descriptors: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let span = info_span!("enroll_conn", %peer);
        conns.spawn(serve_connection(Arc::clone(&state), tcp, peer, permit).instrument(span));
    }
    info!(open = conns.len(), "enrollment server shutting down");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        conns.abort_all();
    }
    Ok(())
}

struct ServerState {
    ca: Arc<OverlayCa>,
    users: EnrollUsers,
    validity_s: u64,
    acceptor: SslAcceptor,
}

fn tls_acceptor(cert_der: &[u8], key_pkcs8: &[u8]) -> Result<SslAcceptor, EnrollError> {
    let tls = |what: &str, e: openssl::error::ErrorStack| EnrollError::Tls(format!("{what}: {e}"));
    let cert = X509::from_der(cert_der).map_err(|e| tls("server certificate", e))?;
    let key = PKey::private_key_from_der(key_pkcs8).map_err(|e| tls("server key", e))?;
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(|e| tls("context", e))?;
    b.set_certificate(&cert).map_err(|e| tls("server certificate", e))?;
    b.set_private_key(&key).map_err(|e| tls("server key", e))?;
    b.check_private_key().map_err(|e| tls("server key does not match its certificate", e))?;
    Ok(b.build())
}

/// One TLS connection carrying one request (no keep-alive: a client
/// enrolls once).
async fn serve_connection(state: Arc<ServerState>, tcp: TcpStream, peer: SocketAddr, _slot: OwnedSemaphorePermit) {
    let run = async {
        let ssl = Ssl::new(state.acceptor.context()).map_err(|e| EnrollError::Tls(e.to_string()))?;
        let mut tls = SslStream::new(ssl, tcp).map_err(|e| EnrollError::Tls(e.to_string()))?;
        Pin::new(&mut tls).accept().await.map_err(|e| EnrollError::Tls(format!("handshake: {e}")))?;
        let svc = service_fn(move |req| handle(Arc::clone(&state), req));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(false);
        http.serve_connection(TokioIo::new(tls), svc).await.map_err(|e| EnrollError::Http(e.to_string()))
    };
    match tokio::time::timeout(CONNECTION_TIMEOUT, run).await {
        Ok(Ok(())) => {}
        // Scanners and impatient clients: not worth more than debug.
        Ok(Err(e)) => debug!(%peer, error = %e, "connection ended"),
        Err(_) => debug!(%peer, "connection timed out"),
    }
}

/// Why a request was refused: the status and the `text/plain` body's two
/// lines.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    token: &'static str,
    detail: String,
}

impl Refusal {
    fn new(status: StatusCode, token: &'static str, detail: impl Into<String>) -> Self {
        Refusal { status, token, detail: detail.into() }
    }
    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }
}

async fn handle(state: Arc<ServerState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let span =
        info_span!("enroll_request", method = %req.method(), path = %req.uri().path(), user = tracing::field::Empty);
    let answer = async {
        match enroll_request(state, req).await {
            Ok((cert, node_ids)) => {
                info!(?node_ids, "certificate issued");
                let mut r = Response::new(Full::new(Bytes::from(cert)));
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PKIX_CERT));
                r
            }
            Err(refusal) => {
                if refusal.status.is_server_error() {
                    error!(status = refusal.status.as_u16(), detail = %refusal.detail, "enrollment failed");
                } else {
                    warn!(status = refusal.status.as_u16(), token = refusal.token, detail = %refusal.detail, "enrollment refused");
                }
                refusal_response(refusal)
            }
        }
    }
    .instrument(span)
    .await;
    Ok(answer)
}

fn refusal_response(r: Refusal) -> Response<Full<Bytes>> {
    let allow_post = r.status == StatusCode::METHOD_NOT_ALLOWED;
    let mut resp = Response::new(Full::new(Bytes::from(format!("{}\n{}\n", r.token, r.detail))));
    *resp.status_mut() = r.status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if allow_post {
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

/// §11.3 server steps for one request: read the form, authenticate, issue.
async fn enroll_request(state: Arc<ServerState>, req: Request<Incoming>) -> Result<(Vec<u8>, Vec<NodeId>), Refusal> {
    if req.method() != Method::POST {
        return Err(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "only POST enrolls"));
    }
    let too_large = || Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("body over {MAX_BODY} bytes"));
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let kind = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(FormKind::of)
        .unwrap_or(Err("no Content-Type"))
        .map_err(|d| Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", d))?;
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => return Err(Refusal::bad_request(format!("cannot read the body: {e}"))),
    };
    let form = EnrollForm::parse(&kind, body).await.map_err(Refusal::bad_request)?;
    tracing::Span::current().record("user", form.username.as_str());
    let count = match form.nodeids.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(n) => n.parse::<u32>().map_err(|_| Refusal::bad_request(format!("nodeids {n:?} is not a number")))?,
    };
    // PBKDF2 and signing are CPU work: off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        if !state.users.check(&form.username, &form.password) {
            return Err(Refusal::new(StatusCode::FORBIDDEN, "failed_authentication", "wrong user name or password"));
        }
        let r = issue_from_csr(
            &state.ca,
            &form.csr,
            Some(&form.username),
            count,
            unix_now(),
            state.validity_s,
            &mut rand::rng(),
        );
        r.map_err(|e| match e {
            IssueError::BadCsr(d) => Refusal::new(StatusCode::BAD_REQUEST, "bad_CSR", d),
            IssueError::NodeIdCount(_) => Refusal::new(StatusCode::FORBIDDEN, "Node-IDs_not_available", e.to_string()),
            other => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", other.to_string()),
        })
    })
    .await
    .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::enroll::server_tls_identity;
    use crate::security::{KeyAlgorithm, KeyPair};

    #[test]
    fn the_servers_identity_makes_a_tls_context() {
        let key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap();
        let ca = OverlayCa::create("overlay.example.org", key, 1_700_000_000, 1_800_000_000).unwrap();
        let (cert, key) = server_tls_identity(&ca, "127.0.0.1", 1_700_000_100, 3600).unwrap();
        tls_acceptor(&cert, &key).unwrap();
        let (other, _) = server_tls_identity(&ca, "127.0.0.1", 1_700_000_100, 3600).unwrap();
        assert!(matches!(tls_acceptor(&other, &key), Err(EnrollError::Tls(_))));
    }
}
