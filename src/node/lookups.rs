//! Operator requests waiting for the overlay, timed inside the node: from
//! the moment the node issues the overlay command to its completion, so
//! the figure excludes the CLI's start-up and the control socket. Every
//! overlay answer carries it as `elapsed_us`.
//!
//! A lookup series (`chordphone lookup --repeat K PREFIX`) issues K
//! lookups of `PREFIX0`, `PREFIX1`, … back to back — the next one when the
//! previous one completes, so no sample waits behind another — and answers
//! once with every sample: thousands of samples for one CLI call
//! (interop/bench/lookup-latency.sh).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::oneshot;

use super::control::{ControlRequest, ControlResponse, MAX_LOOKUP_SERIES};
use super::runtime::Node;
use crate::overlay::{Command, Failure, Outcome, RequestId};
use crate::wire::ResourceId;

/// An operator request whose overlay command is in flight.
pub(super) struct PendingCall {
    reply: oneshot::Sender<ControlResponse>,
    request: ControlRequest,
    issued: Instant,
    series: Option<Series>,
}

impl PendingCall {
    pub(super) fn new(reply: oneshot::Sender<ControlResponse>, request: ControlRequest, issued: Instant) -> Self {
        PendingCall { reply, request, issued, series: None }
    }
}

/// What a lookup series has measured so far.
struct Series {
    prefix: String,
    count: u32,
    elapsed_us: Vec<u64>,
    hops: Vec<u32>,
    failed: u32,
    first_error: Option<String>,
}

impl Series {
    fn issued(&self) -> u32 {
        u32::try_from(self.elapsed_us.len()).unwrap_or(u32::MAX).saturating_add(self.failed)
    }

    fn record(&mut self, outcome: Outcome, elapsed_us: u64) {
        match outcome {
            Outcome::LookedUp { hops, .. } => {
                self.elapsed_us.push(elapsed_us);
                self.hops.push(hops);
            }
            other => {
                self.failed += 1;
                self.first_error.get_or_insert_with(|| describe_failure(&other));
            }
        }
    }

    fn answer(self) -> ControlResponse {
        ControlResponse::ok(json!({
            "count": self.count,
            "failed": self.failed,
            "first_error": self.first_error,
            "elapsed_us": self.elapsed_us,
            "hops": self.hops,
        }))
    }
}

impl Node {
    /// Starts a series of `count` lookups of `prefix0`, `prefix1`, ….
    pub(super) fn start_lookup_series(
        &mut self,
        now: Instant,
        reply: oneshot::Sender<ControlResponse>,
        request: ControlRequest,
        prefix: String,
        count: u32,
    ) {
        if count == 0 || count > MAX_LOOKUP_SERIES {
            let _ = reply.send(ControlResponse::error(format!("a lookup series has 1 to {MAX_LOOKUP_SERIES} lookups")));
            return;
        }
        let series = Series {
            prefix,
            count,
            elapsed_us: Vec::with_capacity(count as usize),
            hops: Vec::with_capacity(count as usize),
            failed: 0,
            first_error: None,
        };
        self.issue_series_lookup(now, PendingCall { reply, request, issued: now, series: Some(series) });
    }

    /// Answers the operator request that `id` completes (with its
    /// `elapsed_us`), or takes the sample and issues the series' next lookup.
    pub(super) fn on_completed(&mut self, id: RequestId, outcome: Outcome) {
        let Some(mut call) = self.pending.remove(&id) else { return };
        let now = Instant::now();
        let elapsed_us = micros(now.saturating_duration_since(call.issued));
        let Some(series) = call.series.as_mut() else {
            let mut answer = super::ops::control_answer(&call.request, outcome);
            if let Some(fields) = answer.result.as_mut().and_then(serde_json::Value::as_object_mut) {
                fields.insert("elapsed_us".to_owned(), json!(elapsed_us));
            }
            let _ = call.reply.send(answer);
            return;
        };
        series.record(outcome, elapsed_us);
        if series.issued() < series.count {
            self.issue_series_lookup(now, call);
        } else if let Some(series) = call.series.take() {
            let _ = call.reply.send(series.answer());
        }
    }

    fn issue_series_lookup(&mut self, now: Instant, mut call: PendingCall) {
        let Some(series) = call.series.as_ref() else { return };
        // Nobody waits for the answer any more (the CLI gave up): stop.
        if call.reply.is_closed() {
            return;
        }
        let i = series.issued();
        let resource = ResourceId::from_name(format!("{}{i}", series.prefix).as_bytes());
        match self.peer.command(now, Command::Lookup { resource }) {
            Ok(id) => {
                call.issued = now;
                self.pending.insert(id, call);
            }
            Err(e) => {
                let _ = call
                    .reply
                    .send(ControlResponse::error(format!("lookup {i} of the series could not be issued: {e}")));
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn describe_failure(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Failed(Failure::Error(code, reason)) => format!("{code}: {reason}"),
        Outcome::Failed(Failure::Timeout) => "no answer from the overlay (timeout)".to_owned(),
        Outcome::Failed(Failure::NotJoined) => "the node has not joined the overlay".to_owned(),
        _ => "unexpected answer to a lookup".to_owned(),
    }
}
