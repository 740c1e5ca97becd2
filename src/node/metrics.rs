//! Prometheus exposition (text format 0.0.4) of a node's counters, served
//! over HTTP at `/metrics` on the address `metrics_listen` names.
//!
//! Every metric is declared once, in the [`Metric`] table below (name,
//! help text, type); the event loop fills a [`Snapshot`] by key and
//! publishes it through a watch channel. The HTTP side only renders the
//! latest one, so a scrape never touches the overlay machine.

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

/// A metric's Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// Declares [`Metric`] and its table from one line per metric:
/// `Variant => Type, "name", "help";`.
macro_rules! metric_table {
    ($($variant:ident => $kind:ident, $name:literal, $help:literal;)*) => {
        /// Every metric the node exports.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Metric {
            $($variant,)*
        }

        impl Metric {
            /// The whole table, in declaration order.
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)*];

            /// The exposed name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Metric::$variant => $name,)*
                }
            }

            /// The `# HELP` text.
            pub const fn help(self) -> &'static str {
                match self {
                    $(Metric::$variant => $help,)*
                }
            }

            /// The `# TYPE`.
            pub const fn kind(self) -> MetricType {
                match self {
                    $(Metric::$variant => MetricType::$kind,)*
                }
            }
        }
    };
}

metric_table! {
    ReloadMessagesSent => Counter, "chordphone_reload_messages_sent_total", "RELOAD messages sent";
    ReloadMessagesReceived => Counter, "chordphone_reload_messages_received_total", "RELOAD messages received";
    ReloadForwarded => Counter, "chordphone_reload_forwarded_total", "RELOAD messages forwarded for others";
    ReloadDroppedMalformed => Counter, "chordphone_reload_dropped_malformed_total", "malformed RELOAD messages dropped";
    ReloadDroppedSignature => Counter, "chordphone_reload_dropped_signature_total", "messages dropped for a bad signature";
    ReloadDroppedUnroutable => Counter, "chordphone_reload_dropped_unroutable_total", "messages that could not be routed";
    ReloadRetransmissions => Counter, "chordphone_reload_retransmissions_total", "end-to-end retransmissions";
    ReloadTransactionsFailed => Counter, "chordphone_reload_transactions_failed_total", "transactions that failed";
    ReloadErrorsSent => Counter, "chordphone_reload_errors_sent_total", "RELOAD Error responses sent";
    ReloadSignFailures => Counter, "chordphone_reload_sign_failures_total", "messages or values not sent: signing failed";
    LinkQueueDrops => Counter, "chordphone_link_queue_drops_total", "messages dropped on a full link queue";
    LinksRejected => Counter, "chordphone_links_rejected_total", "incoming links refused (handshake, certificate, garbage)";
    Links => Gauge, "chordphone_links", "open overlay links";
    Joined => Gauge, "chordphone_joined", "1 when the node is in the ring";
    UptimeSeconds => Gauge, "chordphone_uptime_seconds", "seconds since start";
    SipRegisterOk => Counter, "chordphone_sip_register_ok_total", "REGISTERs answered 200";
    SipRegisterFail => Counter, "chordphone_sip_register_fail_total", "REGISTERs refused";
    SipAuthChallenges => Counter, "chordphone_sip_auth_challenges_total", "digest challenges sent";
    SipForwardedLocal => Counter, "chordphone_sip_forwarded_local_total", "requests sent to local phones";
    SipForwardedNode => Counter, "chordphone_sip_forwarded_node_total", "requests sent to other nodes";
    SipResponses => Counter, "chordphone_sip_responses_total", "responses sent";
    SipMalformedRejected => Counter, "chordphone_sip_malformed_rejected_total", "malformed requests answered 400";
    SipMalformedDropped => Counter, "chordphone_sip_malformed_dropped_total", "malformed messages dropped";
    SipTlsHandshakeFailures => Counter, "chordphone_sip_tls_handshake_failures_total", "phone TLS handshakes that failed or timed out";
    Records => Gauge, "chordphone_records", "records held, by kind";
    DataplaneForwardedPackets => Counter, "chordphone_dataplane_forwarded_packets_total", "datagrams forwarded by data-plane entries";
    DataplaneForwardedBytes => Counter, "chordphone_dataplane_forwarded_bytes_total", "payload bytes forwarded by data-plane entries";
    DataplaneReceivedPackets => Counter, "chordphone_dataplane_received_packets_total", "datagrams received on data-plane sockets";
    DataplaneDroppedPackets => Counter, "chordphone_dataplane_dropped_packets_total", "datagrams of an entry not sent";
    DataplaneUnmatchedPackets => Counter, "chordphone_dataplane_unmatched_packets_total", "datagrams from no entry's address";
}

/// One sample: the metric, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub metric: Metric,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// What a scrape returns: samples in the order they were set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub samples: Vec<Sample>,
}

impl Snapshot {
    /// Sets a counter (or any unlabelled metric) to a count.
    pub fn count(&mut self, metric: Metric, value: u64) {
        self.samples.push(Sample { metric, labels: vec![], value: value as f64 });
    }

    /// Sets an unlabelled metric.
    pub fn set(&mut self, metric: Metric, value: f64) {
        self.samples.push(Sample { metric, labels: vec![], value });
    }

    /// Sets one labelled series of a metric.
    pub fn set_labelled(&mut self, metric: Metric, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push(Sample { metric, labels, value });
    }

    /// The text exposition format: HELP/TYPE once per metric name.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut described: Vec<Metric> = Vec::new();
        for s in &self.samples {
            let name = s.metric.name();
            if !described.contains(&s.metric) {
                described.push(s.metric);
                let _ = writeln!(out, "# HELP {name} {}", s.metric.help());
                let _ = writeln!(out, "# TYPE {name} {}", s.metric.kind().as_str());
            }
            out.push_str(name);
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
        s.count(Metric::ReloadMessagesSent, 7);
        s.set_labelled(Metric::Records, vec![("kind", "SIP-REGISTRATION".into())], 3.0);
        s.set_labelled(Metric::Records, vec![("kind", "a\"b".into())], 1.0);
        s.set(Metric::UptimeSeconds, 1.5);
        let text = s.render();
        assert_eq!(
            text,
            "# HELP chordphone_reload_messages_sent_total RELOAD messages sent\n\
             # TYPE chordphone_reload_messages_sent_total counter\n\
             chordphone_reload_messages_sent_total 7\n\
             # HELP chordphone_records records held, by kind\n\
             # TYPE chordphone_records gauge\n\
             chordphone_records{kind=\"SIP-REGISTRATION\"} 3\n\
             chordphone_records{kind=\"a\\\"b\"} 1\n\
             # HELP chordphone_uptime_seconds seconds since start\n\
             # TYPE chordphone_uptime_seconds gauge\n\
             chordphone_uptime_seconds 1.5\n"
        );
    }

    #[test]
    fn the_table_is_well_formed() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len(), "a metric name is declared twice");
        for m in Metric::ALL {
            let name = m.name();
            // Prometheus naming: a chordphone_ prefix, `_total` exactly on counters.
            assert!(name.starts_with("chordphone_"), "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
            assert_eq!(name.ends_with("_total"), m.kind() == MetricType::Counter, "{name}");
            assert!(!m.help().is_empty() && !m.help().contains('\n'), "{name}");
        }
    }
}
