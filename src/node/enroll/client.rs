//! The enrollment client (RFC 6940 §11.3): a key, a CSR and the
//! credentials POSTed as multipart/form-data over HTTPS that trusts only the
//! overlay root, and the answer checked before it is kept.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use tracing::{info, warn};

use super::form::{FormPart, multipart_body};
use super::{EnrollError, Enrollment, MAX_BODY, PKCS10, PKIX_CERT, media_type, unix_now};
use crate::security::enroll::{check_node_id_count, csr_der, validate_user_name};
use crate::security::{KeyAlgorithm, KeyPair, SecurityError, verify_chain};

/// Deadline of one [`enroll_remote`] exchange, key generation excluded.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Enrolls with the server at `url` (`https://host[:port]/path`; an IP
/// address host works): makes a `key_alg` key, sends a CSR with the
/// credentials asking for `node_id_count` Node-IDs, and checks the answer
/// chains to `root_der` (the configuration's root-cert) for overlay
/// `overlay_name`, certifies our key and names `username`. The server's
/// TLS certificate must chain to `root_der` too and match the URL's host.
pub async fn enroll_remote(
    url: &str,
    root_der: &[u8],
    overlay_name: &str,
    username: &str,
    password: &str,
    node_id_count: u32,
    key_alg: KeyAlgorithm,
) -> Result<Enrollment, EnrollError> {
    let target = EnrollUrl::parse(url)?;
    check_node_id_count(node_id_count)?;
    validate_user_name(username)?;
    // RSA generation takes a noticeable time: keep it off the runtime.
    let key = tokio::task::spawn_blocking(move || KeyPair::generate(key_alg))
        .await
        .map_err(|e| EnrollError::Security(SecurityError::Key(e.to_string())))??;
    let csr = csr_der(&key, Some(username))?;
    let count = node_id_count.to_string();
    let fields: [FormPart<'_>; 4] = [
        FormPart { name: "username", content_type: None, value: username.as_bytes() },
        FormPart { name: "password", content_type: None, value: password.as_bytes() },
        FormPart { name: "nodeids", content_type: None, value: count.as_bytes() },
        FormPart { name: "csr", content_type: Some(PKCS10), value: &csr },
    ];
    let (content_type, body) = multipart_body(&fields, &mut rand::rng());
    let answer = tokio::time::timeout(CLIENT_TIMEOUT, https_post(&target, root_der, &content_type, body))
        .await
        .map_err(|_| EnrollError::Timeout(CLIENT_TIMEOUT))??;
    if answer.status != StatusCode::OK {
        return Err(EnrollError::Rejected { status: answer.status.as_u16(), reason: printable(&answer.body) });
    }
    let media = answer.content_type.as_deref().map(media_type).unwrap_or_default();
    if media != PKIX_CERT {
        return Err(EnrollError::BadResponse(format!("content type {media:?}, expected {PKIX_CERT}")));
    }
    let id = verify_chain(&answer.body, root_der, unix_now(), overlay_name)?;
    if id.spki_der != key.spki_der() {
        return Err(EnrollError::BadResponse("the certificate is for another key".into()));
    }
    if id.user.as_deref() != Some(username) {
        return Err(EnrollError::BadResponse(format!("the certificate names user {:?}, not {username:?}", id.user)));
    }
    if id.node_ids.len() != node_id_count as usize {
        warn!(asked = node_id_count, got = id.node_ids.len(), "server issued a different number of Node-IDs");
    }
    info!(user = username, node_ids = ?id.node_ids, "enrolled");
    Ok(Enrollment {
        key_pkcs8: key.to_pkcs8_der(),
        cert_der: answer.body,
        ca_der: root_der.to_vec(),
        node_ids: id.node_ids,
        user: id.user,
    })
}

/// An `https://host[:port]/path` URL taken apart.
#[derive(Debug, PartialEq, Eq)]
struct EnrollUrl {
    /// Host name or IP address, without IPv6 brackets.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    path_and_query: String,
}

impl EnrollUrl {
    fn parse(url: &str) -> Result<Self, EnrollError> {
        let bad = |reason| EnrollError::Url { url: url.to_owned(), reason };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("enrollment is over https (RFC 6940 §11.3)"));
        }
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("user info in the URL is not supported"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/");
        Ok(EnrollUrl {
            host,
            port: auth.port_u16().unwrap_or(443),
            authority: auth.as_str().to_owned(),
            path_and_query: path_and_query.to_owned(),
        })
    }
}

/// A TLS client context whose only trust anchor is the overlay root.
fn tls_connector(root_der: &[u8]) -> Result<SslConnector, EnrollError> {
    let tls = |what: &str, e: openssl::error::ErrorStack| EnrollError::Tls(format!("{what}: {e}"));
    let root = X509::from_der(root_der).map_err(|e| tls("root certificate", e))?;
    let mut store = X509StoreBuilder::new().map_err(|e| tls("trust store", e))?;
    store.add_cert(root).map_err(|e| tls("trust store", e))?;
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls("context", e))?;
    // Replaces the system store set up by `builder`.
    b.set_cert_store(store.build());
    b.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| tls("context", e))?;
    Ok(b.build())
}

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Vec<u8>,
}

async fn https_post(
    target: &EnrollUrl,
    root_der: &[u8],
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer, EnrollError> {
    let connector = tls_connector(root_der)?;
    let where_ = format!("{}:{}", target.host, target.port);
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| EnrollError::Io { what: format!("connect to {where_}"), source })?;
    // `into_ssl` sends SNI for names and checks the certificate against
    // the host name or IP address.
    let ssl =
        connector.configure().and_then(|c| c.into_ssl(&target.host)).map_err(|e| EnrollError::Tls(e.to_string()))?;
    let mut tls = SslStream::new(ssl, tcp).map_err(|e| EnrollError::Tls(e.to_string()))?;
    Pin::new(&mut tls).connect().await.map_err(|e| EnrollError::Tls(format!("handshake with {where_}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
        .await
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let req = Request::post(target.path_and_query.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, content_type)
        .header(ACCEPT, PKIX_CERT)
        .header(CONNECTION, "close")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| EnrollError::Http(e.to_string()))?;
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| EnrollError::Http(format!("reading the answer: {e}")))?
            .to_bytes()
            .to_vec();
        Ok(Answer { status, content_type, body })
    }
    .await;
    conn.abort();
    result
}

/// Server text made safe for an error message: printable, one line, short.
fn printable(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String =
        text.trim().chars().map(|c| if c == '\n' { ';' } else { c }).filter(|c| !c.is_control()).take(300).collect();
    if one_line.is_empty() { "(no reason given)".into() } else { one_line }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_urls() {
        let u = EnrollUrl::parse("https://127.0.0.1:8443/enroll").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path_and_query.as_str()), ("127.0.0.1", 8443, "/enroll"));
        let u = EnrollUrl::parse("https://[::1]/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority.as_str()), ("::1", 443, "[::1]"));
        let u = EnrollUrl::parse("https://enroll.example.org").unwrap();
        assert_eq!(u.path_and_query, "/");
        for bad in ["http://example.org/enroll", "example.org", "https://u:p@example.org/", "not a url"] {
            assert!(matches!(EnrollUrl::parse(bad), Err(EnrollError::Url { .. })), "{bad}");
        }
    }

    #[test]
    fn server_text_is_sanitised() {
        assert_eq!(printable(b"failed_authentication\nwrong password\n"), "failed_authentication;wrong password");
        assert_eq!(printable(b"\x1b[31mred"), "[31mred");
        assert_eq!(printable(b""), "(no reason given)");
        assert_eq!(printable(&[b'a'; 1000]).len(), 300);
    }
}
