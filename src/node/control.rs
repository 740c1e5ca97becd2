//! The local control socket: `chordphone status/store/fetch/lookup` talk to
//! a running node through a Unix socket in its data directory. One JSON
//! request per line, one JSON answer per line. The socket file is created
//! with mode 0600: whoever can use it can act as the node.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Longest request line accepted (a store value is at most a few KiB).
const MAX_LINE: usize = 64 * 1024;

/// Most lookups one [`ControlRequest::LookupSeries`] may ask for: each
/// sample is a number in the one-line answer, so this bounds it to about a
/// megabyte.
pub const MAX_LOOKUP_SERIES: u32 = 100_000;

/// What an operator asks a running node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    Status,
    /// Store `value` under `name` with the test kind (signed by this node).
    Store {
        name: String,
        value: String,
        lifetime_s: u32,
    },
    Fetch {
        name: String,
        /// The kind to fetch: the test kind when absent, or
        /// "sip-registration" (the RFC 7904 dictionary under an AOR).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
    },
    Lookup {
        name: String,
    },
    /// `count` lookups of `prefix0`, `prefix1`, … issued back to back in
    /// the node; answers with each one's latency (`elapsed_us`) and hops.
    LookupSeries {
        prefix: String,
        count: u32,
    },
    /// Add (or replace) a SIP account with its user certificate (base64
    /// PKCS#8 key and DER certificate binding the AOR and this node).
    AddUser {
        account: super::db::SipUser,
        key_b64: String,
        cert_b64: String,
    },
    RemoveUser {
        aor: String,
    },
    ListUsers,
    /// Data-plane forwarding entries (`chordphone forward`).
    Forward(super::dataplane::ForwardRequest),
}

impl ControlRequest {
    /// The operation's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ControlRequest::Status => "status",
            ControlRequest::Store { .. } => "store",
            ControlRequest::Fetch { .. } => "fetch",
            ControlRequest::Lookup { .. } => "lookup",
            ControlRequest::LookupSeries { .. } => "lookup_series",
            ControlRequest::AddUser { .. } => "add_user",
            ControlRequest::RemoveUser { .. } => "remove_user",
            ControlRequest::ListUsers => "list_users",
            ControlRequest::Forward(_) => "forward",
        }
    }
}

/// The answer: `ok` with a JSON value, or `error` with a message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlResponse {
    pub fn ok(result: serde_json::Value) -> Self {
        ControlResponse { ok: true, result: Some(result), error: None }
    }

    pub fn error(msg: impl Into<String>) -> Self {
        ControlResponse { ok: false, result: None, error: Some(msg.into()) }
    }
}

/// A request handed to the event loop with where to send its answer.
pub struct ControlCall {
    pub request: ControlRequest,
    pub reply: oneshot::Sender<ControlResponse>,
}

/// Binds the socket (replacing a stale file left by a crashed node) and
/// serves it until the loop's receiver is dropped.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        // A live node answers a connect; then this is a second instance.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use: another chordphone node runs on this data directory", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts control connections and forwards their requests to `calls`.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<ControlCall>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, calls).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn connection(stream: UnixStream, calls: mpsc::Sender<ControlCall>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(MAX_LINE as u64 * 16)).lines();
    while let Some(line) = lines.next_line().await? {
        let answer = if line.len() > MAX_LINE {
            ControlResponse::error(format!("request longer than {MAX_LINE} bytes"))
        } else {
            match serde_json::from_str::<ControlRequest>(&line) {
                Err(e) => ControlResponse::error(format!("bad control request: {e}")),
                Ok(request) => {
                    let (reply, rx) = oneshot::channel();
                    if calls.send(ControlCall { request, reply }).await.is_err() {
                        ControlResponse::error("the node is shutting down")
                    } else {
                        rx.await.unwrap_or_else(|_| ControlResponse::error("the node dropped the request"))
                    }
                }
            }
        };
        let mut out = serde_json::to_vec(&answer).unwrap_or_default();
        out.push(b'\n');
        w.write_all(&out).await?;
    }
    Ok(())
}

/// Sends one request to the node serving `socket` and waits up to
/// `timeout` for its answer (the CLI side).
pub async fn call(socket: &Path, request: &ControlRequest, timeout: Duration) -> anyhow::Result<ControlResponse> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the node's control socket {}: {e} (is `chordphone node` running?)",
            socket.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut lines = BufReader::new(r).lines();
    let answer = tokio::time::timeout(timeout, lines.next_line())
        .await
        .map_err(|_| anyhow::anyhow!("the node did not answer within {timeout:?}"))??
        .ok_or_else(|| anyhow::anyhow!("the node closed the control connection"))?;
    Ok(serde_json::from_str(&answer)?)
}
