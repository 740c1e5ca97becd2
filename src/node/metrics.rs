//! Prometheus exposition (text format 0.0.4) of a node's counters, served
//! over HTTP at `/metrics` on the address `metrics_listen` names.
//!
//! The event loop publishes a fresh [`Snapshot`] through a watch channel;
//! the HTTP side only renders the latest one, so a scrape never touches
//! the overlay machine.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One sample: name, help, type ("counter"/"gauge"), labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// What a scrape returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub samples: Vec<Sample>,
}

impl Snapshot {
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.samples.push(Sample { name, help, kind: "counter", labels: vec![], value: value as f64 });
    }

    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push(Sample { name, help, kind: "gauge", labels, value });
    }

    /// The text exposition format: HELP/TYPE once per metric name.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut described: Vec<&str> = Vec::new();
        for s in &self.samples {
            if !described.contains(&s.name) {
                described.push(s.name);
                let _ = writeln!(out, "# HELP {} {}", s.name, s.help);
                let _ = writeln!(out, "# TYPE {} {}", s.name, s.kind);
            }
            out.push_str(s.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                    let _ = write!(out, "{k}=\"{v}\"");
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
        out
    }
}

/// Serves `/metrics` until the snapshot sender is dropped.
pub async fn serve(listener: TcpListener, snapshots: watch::Receiver<Snapshot>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = snapshots.borrow().render();
                async move { Ok::<_, Infallible>(answer(&req, body)) }
            });
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

fn answer(req: &Request<hyper::body::Incoming>, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    if req.method() != hyper::Method::GET {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    *resp.body_mut() = Full::new(Bytes::from(body));
    if let Ok(v) = hyper::header::HeaderValue::from_str("text/plain; version=0.0.4") {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Binds the metrics listener (an error names the address).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let mut s = Snapshot::default();
        s.counter("chordphone_messages_sent_total", "RELOAD messages sent", 7);
        s.gauge("chordphone_records", "records held", vec![("kind", "SIP-REGISTRATION".into())], 3.0);
        s.gauge("chordphone_records", "records held", vec![("kind", "a\"b".into())], 1.0);
        let text = s.render();
        assert_eq!(
            text,
            "# HELP chordphone_messages_sent_total RELOAD messages sent\n\
             # TYPE chordphone_messages_sent_total counter\n\
             chordphone_messages_sent_total 7\n\
             # HELP chordphone_records records held\n\
             # TYPE chordphone_records gauge\n\
             chordphone_records{kind=\"SIP-REGISTRATION\"} 3\n\
             chordphone_records{kind=\"a\\\"b\"} 1\n"
        );
    }
}
