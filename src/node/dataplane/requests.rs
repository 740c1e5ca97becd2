//! The control-socket requests on forwarding entries (`chordphone forward
//! add/remove/list`) and their JSON answers.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Action, DataPlane, EntryId, EntryInfo};

/// What an operator (or a benchmark) asks of the data plane.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "forward", rename_all = "snake_case")]
pub enum ForwardRequest {
    /// Forward datagrams from `from` to `to` and from `to` to `from`; both
    /// send to the answer's `via`.
    Add {
        from: SocketAddr,
        to: SocketAddr,
    },
    Remove {
        id: EntryId,
    },
    /// Every entry with its counters, each worker's totals.
    List,
}

impl DataPlane {
    /// Answers one request: `Ok` with the JSON result, `Err` with the
    /// message the operator sees.
    pub fn handle(&mut self, req: &ForwardRequest) -> Result<Value, String> {
        match *req {
            ForwardRequest::Add { from, to } => {
                let info = self.install(from, to, Action::Forward).map_err(|e| e.to_string())?;
                tracing::info!(id = info.id, %from, %to, via = %info.via, "forwarding entry installed");
                Ok(entry_json(info))
            }
            ForwardRequest::Remove { id } => {
                let info = self.remove(id).map_err(|e| e.to_string())?;
                tracing::info!(id, "forwarding entry removed");
                Ok(entry_json(&info))
            }
            ForwardRequest::List => Ok(json!({
                "entries": self.entries().map(entry_json).collect::<Vec<_>>(),
                "workers": self.workers_json(),
                "totals": self.totals(),
            })),
        }
    }

    /// The summary `status --json` shows.
    pub fn status_json(&self) -> Value {
        json!({
            "enabled": !self.sockets().is_empty(),
            "entries": self.len(),
            "sockets": self.sockets(),
            "totals": self.totals(),
        })
    }

    /// Totals for Prometheus, as (name, help, value) counters.
    pub fn metric_counters(&self) -> [(&'static str, &'static str, u64); 5] {
        let t = self.totals();
        [
            ("chordphone_dataplane_forwarded_packets_total", "datagrams forwarded by data-plane entries", t.forwarded),
            (
                "chordphone_dataplane_forwarded_bytes_total",
                "payload bytes forwarded by data-plane entries",
                t.forwarded_bytes,
            ),
            ("chordphone_dataplane_received_packets_total", "datagrams received on data-plane sockets", t.received),
            ("chordphone_dataplane_dropped_packets_total", "datagrams of an entry not sent", t.dropped),
            ("chordphone_dataplane_unmatched_packets_total", "datagrams from no entry's address", t.unmatched),
        ]
    }

    fn workers_json(&self) -> Vec<Value> {
        self.sockets()
            .into_iter()
            .zip(self.worker_stats())
            .map(|(socket, stats)| json!({"socket": socket, "stats": stats}))
            .collect()
    }
}

fn entry_json(e: &EntryInfo) -> Value {
    json!({
        "id": e.id,
        "from": e.a,
        "to": e.b,
        "action": e.action,
        "worker": e.worker,
        "via": e.via,
        "counters": e.counters(),
    })
}
