//! What the node does for its operator: control-socket requests (status,
//! store/fetch/lookup, SIP accounts), `status --json` and Prometheus.

use std::time::Instant;

use serde_json::json;
use tracing::{debug, error, info, info_span, warn};

use super::accounts::{UserIdentityRecord, account_identity, delete_account, save_account};
use super::control::{ControlCall, ControlRequest, ControlResponse};
use super::lookups::PendingCall;
use super::metrics::{Metric, Snapshot};
use super::runtime::Node;
use crate::overlay::{Command, Failure, Outcome};
use crate::sip::SipUser;
use crate::usage;
use crate::wire::storage::{DataValue, StoredDataValue};
use crate::wire::{KindId, NodeId, ResourceId};

impl Node {
    pub(super) fn on_control(&mut self, call: ControlCall) {
        let now = Instant::now();
        let ControlCall { request, reply } = call;
        let _span = info_span!("control", op = request.name()).entered();
        let cmd = match &request {
            ControlRequest::Status => {
                let _ = reply.send(ControlResponse::ok(self.status(now)));
                return;
            }
            ControlRequest::Forward(req) => {
                let _ = reply.send(self.dataplane.handle(req).map_or_else(ControlResponse::error, ControlResponse::ok));
                return;
            }
            ControlRequest::AddUser { account, key_b64, cert_b64 } => {
                let _ = reply.send(self.add_user(now, account, key_b64, cert_b64));
                return;
            }
            ControlRequest::RemoveUser { aor } => {
                let answer = match self.remove_user(aor) {
                    Ok(removed) => ControlResponse::ok(json!(removed)),
                    Err(e) => ControlResponse::error(format!("{e:#}")),
                };
                let _ = reply.send(answer);
                return;
            }
            ControlRequest::ListUsers => {
                let answer = match self.db.sip_users() {
                    Ok(u) => ControlResponse::ok(serde_json::to_value(u).unwrap_or_default()),
                    Err(e) => ControlResponse::error(e.to_string()),
                };
                let _ = reply.send(answer);
                return;
            }
            ControlRequest::Store { name, value, lifetime_s } => Command::Store {
                resource_name: name.as_bytes().to_vec(),
                kind: KindId::CHORDPHONE_TEST,
                value: StoredDataValue::Single(DataValue::new(value.as_bytes().to_vec())),
                lifetime_s: *lifetime_s,
            },
            ControlRequest::Fetch { name, kind } => {
                let kind = match kind.as_deref() {
                    None | Some("test") => KindId::CHORDPHONE_TEST,
                    Some("sip-registration") => KindId::SIP_REGISTRATION,
                    Some(other) => {
                        let _ = reply.send(ControlResponse::error(format!(
                            "unknown kind '{other}' (known: test, sip-registration)"
                        )));
                        return;
                    }
                };
                match kind {
                    KindId::SIP_REGISTRATION => usage::fetch_command(name),
                    _ => Command::Fetch { resource: ResourceId::from_name(name.as_bytes()), kind },
                }
            }
            ControlRequest::Lookup { name } => Command::Lookup { resource: ResourceId::from_name(name.as_bytes()) },
            ControlRequest::LookupSeries { prefix, count } => {
                let (prefix, count) = (prefix.clone(), *count);
                self.start_lookup_series(now, reply, request, prefix, count);
                return;
            }
        };
        match self.peer.command(now, cmd) {
            Ok(id) => {
                self.pending.insert(id, PendingCall::new(reply, request, now));
            }
            Err(e) => {
                let _ = reply.send(ControlResponse::error(e.to_string()));
            }
        }
    }

    /// Takes a SIP account into service: its certificate must chain to the
    /// overlay root, bind this node and name the AOR.
    fn add_user(&mut self, now: Instant, account: &SipUser, key_b64: &str, cert_b64: &str) -> ControlResponse {
        let record = UserIdentityRecord { key_b64: key_b64.to_owned(), cert_b64: cert_b64.to_owned() };
        let Some((key, cert)) = record.decode() else {
            return ControlResponse::error("the user key or certificate is not base64");
        };
        match self.peer.overlay_mut().add_user_identity(now, &key, &cert) {
            Ok(name) if name == account.aor => {}
            Ok(name) => {
                return ControlResponse::error(format!("the certificate is for '{name}', not '{}'", account.aor));
            }
            Err(e) => return ControlResponse::error(format!("user certificate refused: {e}")),
        }
        match save_account(&self.db, account, &record) {
            Ok(()) => {
                info!(aor = %account.aor, "SIP account added");
                self.users_changed();
                ControlResponse::ok(json!({"aor": account.aor}))
            }
            Err(e) => ControlResponse::error(format!("cannot save the account: {e:#}")),
        }
    }

    fn remove_user(&mut self, aor: &str) -> anyhow::Result<bool> {
        let removed = delete_account(&self.db, aor)?;
        if removed {
            info!(%aor, "SIP account removed");
            self.users_changed();
        }
        Ok(removed)
    }

    /// Loads every stored user identity into the signer (start-up).
    pub(super) fn load_users(&mut self, now: Instant) {
        let users = match self.db.sip_users() {
            Ok(u) => u,
            Err(e) => {
                error!(error = %e, "cannot read SIP accounts");
                return;
            }
        };
        for u in users {
            let loaded = account_identity(&self.db, &u.aor).and_then(|r| r.decode());
            match loaded.map(|(k, c)| self.peer.overlay_mut().add_user_identity(now, &k, &c)) {
                Some(Ok(_)) => debug!(aor = %u.aor, "SIP account loaded"),
                Some(Err(e)) => warn!(aor = %u.aor, error = %e, "SIP account's certificate refused"),
                None => warn!(aor = %u.aor, "SIP account has no user certificate"),
            }
        }
        self.users_changed();
    }

    /// The SIP edge's account table follows the database.
    fn users_changed(&mut self) {
        if let Some(edge) = self.peer.sip_edge_mut() {
            match self.db.sip_users() {
                Ok(u) => edge.set_users(u),
                Err(e) => error!(error = %e, "cannot read SIP accounts"),
            }
        }
    }

    pub(super) fn status(&self, now: Instant) -> serde_json::Value {
        let ids = |v: Vec<NodeId>| v.into_iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let records: serde_json::Map<String, serde_json::Value> =
            self.peer.overlay().records_by_kind().into_iter().map(|(k, n)| (kind_name(k), json!(n))).collect();
        let links: Vec<serde_json::Value> = self
            .peer
            .links()
            .filter_map(|(n, id)| {
                self.links.get(&id).map(|l| json!({"peer": n.to_string(), "remote": l.remote.to_string()}))
            })
            .collect();
        json!({
            "node_id": self.id.to_string(),
            "overlay": self.doc.name,
            "state": format!("{:?}", self.peer.state()).to_lowercase(),
            "joined": self.peer.overlay().is_joined(),
            "client": self.client,
            "link_type": format!("{:?}", self.kind),
            "advertise": self.advertise.map(|a| a.to_string()),
            "successors": ids(self.peer.overlay().successors()),
            "predecessors": ids(self.peer.overlay().predecessors()),
            "fingers": ids(self.peer.overlay().fingers()),
            "links": links,
            "records_by_kind": records,
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
            "ring_uptime_s": self.peer.overlay().uptime(now),
            "counters": self.peer.overlay().counters(),
            "link_queue_drops": self.queue_drops,
            "sip": self.sip.as_ref().zip(self.peer.sip_edge()).map(|(s, e)| json!({
                "listening": s.listening,
                "counters": e.counters(),
            })),
            "dataplane": self.dataplane.status_json(),
            "links_rejected": self.listener_rejected.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    pub(super) fn publish_metrics(&self, now: Instant) {
        let c = self.peer.overlay().counters();
        let mut s = Snapshot::default();
        s.count(Metric::ReloadMessagesSent, c.messages_sent);
        s.count(Metric::ReloadMessagesReceived, c.messages_received);
        s.count(Metric::ReloadForwarded, c.forwarded);
        s.count(Metric::ReloadDroppedMalformed, c.dropped_malformed);
        s.count(Metric::ReloadDroppedSignature, c.dropped_signature);
        s.count(Metric::ReloadDroppedUnroutable, c.dropped_unroutable);
        s.count(Metric::ReloadRetransmissions, c.retransmissions);
        s.count(Metric::ReloadTransactionsFailed, c.transactions_failed);
        s.count(Metric::ReloadErrorsSent, c.errors_sent);
        s.count(Metric::ReloadSignFailures, c.sign_failures);
        s.count(Metric::LinkQueueDrops, self.queue_drops);
        s.count(Metric::LinksRejected, self.listener_rejected.load(std::sync::atomic::Ordering::Relaxed));
        s.set(Metric::Links, self.links.len() as f64);
        s.set(Metric::Joined, f64::from(u8::from(self.peer.overlay().is_joined())));
        s.set(Metric::UptimeSeconds, now.saturating_duration_since(self.started).as_secs_f64());
        if let Some(edge) = self.peer.sip_edge() {
            let e = edge.counters();
            s.count(Metric::SipRegisterOk, e.register_ok);
            s.count(Metric::SipRegisterFail, e.register_fail);
            s.count(Metric::SipAuthChallenges, e.auth_challenges);
            s.count(Metric::SipForwardedLocal, e.requests_forwarded_local);
            s.count(Metric::SipForwardedNode, e.requests_forwarded_node);
            s.count(Metric::SipResponses, e.responses);
            s.count(Metric::SipMalformedRejected, e.malformed_rejected);
            s.count(Metric::SipMalformedDropped, e.malformed_dropped);
            s.count(Metric::SipTlsHandshakeFailures, self.sip.as_ref().map_or(0, |s| s.tls_handshake_failures()));
        }
        for (k, n) in self.peer.overlay().records_by_kind() {
            s.set_labelled(Metric::Records, vec![("kind", kind_name(k))], n as f64);
        }
        self.dataplane.metric_counters().into_iter().for_each(|(metric, v)| s.count(metric, v));
        let _ = self.metrics_tx.send(s);
    }
}

/// A kind's name in status output.
pub fn kind_name(k: KindId) -> String {
    match k.name() {
        Some(n) => n.to_owned(),
        None if k == KindId::CHORDPHONE_TEST => "CHORDPHONE-TEST".to_owned(),
        None => format!("{:#x}", k.0),
    }
}

pub(super) fn control_answer(req: &ControlRequest, outcome: Outcome) -> ControlResponse {
    match outcome {
        Outcome::Failed(f) => ControlResponse::error(match f {
            Failure::Error(code, reason) => format!("{code}: {reason}"),
            Failure::Timeout => "no answer from the overlay (timeout)".to_owned(),
            Failure::NotJoined => "the node has not joined the overlay".to_owned(),
        }),
        Outcome::Stored { generation, replicas } => ControlResponse::ok(json!({
            "generation": generation,
            "replicas": replicas.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        })),
        Outcome::Fetched { values } => {
            let vals: Vec<serde_json::Value> = values
                .iter()
                .filter_map(|v| match v {
                    StoredDataValue::Single(d) if d.exists => Some(json!(String::from_utf8_lossy(&d.value))),
                    StoredDataValue::Dictionary(e) if e.value.exists => Some(json!(usage::describe_registration(e))),
                    _ => None,
                })
                .collect();
            match (req, vals.first()) {
                (ControlRequest::Fetch { name, .. }, None) => {
                    ControlResponse::error(format!("no value stored under '{name}'"))
                }
                (_, _) => ControlResponse::ok(json!({ "values": vals })),
            }
        }
        Outcome::LookedUp { responsible, hops, route } => ControlResponse::ok(json!({
            "responsible": responsible.to_string(),
            "hops": hops,
            "route": route.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        })),
        Outcome::Left => ControlResponse::ok(json!({"left": true})),
        Outcome::AppAttached { peer, application, candidates } => ControlResponse::ok(json!({
            "peer": peer.to_string(),
            "application": application,
            "candidates": candidates.iter().map(|c| c.addr_port.0.to_string()).collect::<Vec<_>>(),
        })),
    }
}
