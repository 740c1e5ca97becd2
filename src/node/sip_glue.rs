//! The SIP edge inside a node's event loop: sockets in, the sans-IO
//! [`SipEdge`] in the middle, the overlay machine for registrations
//! (RFC 7904 §3: SIP-REGISTRATION under the AOR, signed as the AOR) and
//! AppAttach (application 5060) to reach the node serving a callee.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::super::sip_io::{self, SipInput};
use super::{Node, Pending, wall_ms};
use crate::overlay::{Command, Failure, Outcome, RequestId};
use crate::sip::edge::{EdgeConfig, EdgeOutput, OverlayOpId, OverlayResult, SipEdge};
use crate::sip::transaction::Transport;
use crate::wire::attach::{APPLICATION_SIP, IceCandidate, OverlayLinkType};
use crate::wire::codec::Codec;
use crate::wire::kinds::SipRegistration;
use crate::wire::storage::{DataValue, DictionaryEntry, StoredDataValue};
use crate::wire::types::IpAddressPort;
use crate::wire::{Destination, KindId, NodeId, ResourceId};

/// Lifetime of the tombstone a removed registration leaves (§7.2.1).
const TOMBSTONE_S: u32 = 300;
/// Messages held for a node while its SIP connection is being set up.
const MAX_WAITING: usize = 64;

/// What an overlay request made for the edge answers.
#[derive(Clone, Copy, Debug)]
pub(super) enum SipOp {
    Store(OverlayOpId),
    Fetch(OverlayOpId),
    Attach(NodeId),
}

/// The node's SIP state.
pub(super) struct SipState {
    pub edge: SipEdge,
    udp: Option<Arc<UdpSocket>>,
    flows: HashMap<u64, mpsc::Sender<Vec<u8>>>,
    nodes: HashMap<NodeId, (u64, mpsc::Sender<Vec<u8>>)>,
    waiting: HashMap<NodeId, Vec<Vec<u8>>>,
    attaching: HashSet<NodeId>,
    pub inputs_tx: mpsc::Sender<SipInput>,
    pub listening: Vec<String>,
}

/// The address others should use for a socket bound to `addr`: itself, or
/// for a wildcard bind the IP of `fallback` (the configured `advertise`),
/// else 127.0.0.1.
pub(super) fn advertised(addr: SocketAddr, fallback: Option<SocketAddr>) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = fallback.map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
        SocketAddr::new(ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()), addr.port())
    } else {
        addr
    }
}

impl Node {
    /// Opens the SIP listeners named in node.toml and builds the edge;
    /// `None` when SIP is switched off (no udp/tcp listener) or for clients.
    pub(super) async fn start_sip(&mut self, inputs_tx: mpsc::Sender<SipInput>) -> anyhow::Result<Option<SipState>> {
        let cfg = self.settings.sip.clone();
        if self.client || (cfg.udp.is_none() && cfg.tcp.is_none() && cfg.tls.is_none()) {
            return Ok(None);
        }
        let mut listening = Vec::new();
        let udp = match cfg.udp {
            Some(a) => {
                let s = sip_io::udp(a, inputs_tx.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen for SIP on udp {a}: {e}"))?;
                listening.push(format!("udp:{}", s.local_addr()?));
                Some(s)
            }
            None => None,
        };
        let tcp_local = match cfg.tcp {
            Some(a) => {
                let l = sip_io::tcp(a, inputs_tx.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen for SIP on tcp {a}: {e}"))?;
                listening.push(format!("tcp:{l}"));
                Some(l)
            }
            None => None,
        };
        // Phones' SIP over TLS: flows like TCP ones, into the same edge.
        let tls_local = match cfg.tls {
            Some(a) => {
                let acceptor = sip_io::tls_context::acceptor(&cfg, &self.paths.data_dir, &self.sec)?;
                let l = sip_io::tls(a, acceptor, inputs_tx.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen for SIP on tls {a}: {e}"))?;
                listening.push(format!("tls:{l}"));
                Some(l)
            }
            None => None,
        };
        if let Some(a) = cfg.node_tls {
            let l = sip_io::node_tls(a, Arc::clone(&self.sec), inputs_tx.clone())
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for node SIP on {a}: {e}"))?;
            listening.push(format!("node-tls:{l}"));
            let adv = advertised(l, self.advertise);
            let cand = IceCandidate::host(IpAddressPort(adv), OverlayLinkType::TLS_TCP_FH_NO_ICE, b"1".to_vec(), 1);
            self.machine.set_app_candidates(vec![(APPLICATION_SIP, vec![cand])]);
        }
        let local =
            udp.as_ref().and_then(|u| u.local_addr().ok()).or(tcp_local).or(tls_local).unwrap_or(self.settings.listen);
        let adv = advertised(local, self.advertise);
        let domain = cfg.domain.clone().unwrap_or_else(|| self.doc.name.clone());
        let mut ec = EdgeConfig::new(self.id, &domain, (adv.ip().to_string(), adv.port()), self.nonce_secret()?);
        ec.advertise_tls_port = tls_local.map(|l| advertised(l, self.advertise).port());
        ec.md5_first = cfg.md5_first;
        ec.md5_only = cfg.md5_only;
        ec.location_cache = std::time::Duration::from_secs(u64::from(cfg.location_cache_s));
        if let Some(r) = &cfg.realm {
            ec.realm = r.clone();
        }
        let mut edge = SipEdge::new(ec)?;
        edge.retire_nonces_before(wall_ms());
        edge.set_users(self.db.sip_users()?);
        info!(listening = ?listening, %domain, "SIP edge up");
        Ok(Some(SipState {
            edge,
            udp,
            flows: HashMap::new(),
            nodes: HashMap::new(),
            waiting: HashMap::new(),
            attaching: HashSet::new(),
            inputs_tx,
            listening,
        }))
    }

    /// The digest nonce key, kept across restarts so phones' nonces stay valid.
    fn nonce_secret(&self) -> anyhow::Result<[u8; 32]> {
        if let Some(v) = self.db.meta("sip-nonce-secret")?
            && let Ok(k) = <[u8; 32]>::try_from(v.as_slice())
        {
            return Ok(k);
        }
        let k: [u8; 32] = rand::random();
        self.db.put_meta("sip-nonce-secret", &k)?;
        Ok(k)
    }

    pub(super) fn on_sip_input(&mut self, input: SipInput) {
        let now = Instant::now();
        let wall = wall_ms();
        let Some(sip) = self.sip.as_mut() else { return };
        match input {
            SipInput::Local { bytes, from } => sip.edge.handle_local(now, wall, &bytes, from),
            SipInput::FlowOpened { flow, tx } => {
                sip.flows.insert(flow, tx);
            }
            SipInput::FlowClosed { flow } => {
                sip.flows.remove(&flow);
                sip.edge.handle_flow_closed(now, wall, flow);
            }
            SipInput::Node { from, bytes, .. } => sip.edge.handle_node(now, wall, from, &bytes),
            SipInput::NodeConnected { node, conn, tx } => {
                sip.attaching.remove(&node);
                for m in sip.waiting.remove(&node).unwrap_or_default() {
                    let _ = tx.try_send(m);
                }
                sip.nodes.insert(node, (conn, tx));
                debug!(%node, "node SIP connection up");
            }
            SipInput::NodeClosed { node, conn } => {
                if sip.nodes.get(&node).is_some_and(|(c, _)| *c == conn) {
                    sip.nodes.remove(&node);
                }
            }
            SipInput::NodeDialFailed { node, reason } => {
                warn!(%node, %reason, "cannot open a SIP connection to the node");
                sip.attaching.remove(&node);
                sip.waiting.remove(&node);
                sip.edge.handle_node_unreachable(now, wall, node);
            }
        }
    }

    /// Carries out what the edge asks; returns whether it asked anything.
    pub(super) fn pump_sip(&mut self) -> bool {
        let mut any = false;
        loop {
            let Some(out) = self.sip.as_mut().and_then(|s| s.edge.poll_output()) else { return any };
            any = true;
            self.sip_output(out);
        }
    }

    fn sip_output(&mut self, out: EdgeOutput) {
        let now = Instant::now();
        let wall = wall_ms();
        match out {
            EdgeOutput::SendLocal { to, bytes } => {
                let Some(sip) = self.sip.as_mut() else { return };
                let sent = match (to.transport, to.flow) {
                    (Transport::Udp, _) => sip.udp.as_ref().is_some_and(|u| u.try_send_to(&bytes, to.addr).is_ok()),
                    (_, Some(flow)) => sip.flows.get(&flow).is_some_and(|tx| tx.try_send(bytes).is_ok()),
                    (_, None) => false,
                };
                if !sent {
                    debug!(to = %to.addr, "cannot send to the phone");
                    sip.edge.handle_local_unreachable(now, wall, to);
                }
            }
            EdgeOutput::SendNode { node, bytes } => {
                let Some(sip) = self.sip.as_mut() else { return };
                if let Some((_, tx)) = sip.nodes.get(&node) {
                    if tx.try_send(bytes).is_err() {
                        debug!(%node, "node SIP queue full: message dropped");
                    }
                    return;
                }
                let q = sip.waiting.entry(node).or_default();
                if q.len() < MAX_WAITING {
                    q.push(bytes);
                }
                if sip.attaching.insert(node) {
                    match self.machine.command(now, Command::AppAttach { node, application: APPLICATION_SIP }) {
                        Ok(id) => {
                            self.pending.insert(id, Pending::Sip(SipOp::Attach(node)));
                        }
                        Err(e) => self.sip_attach_failed(node, &e.to_string()),
                    }
                }
            }
            EdgeOutput::StoreRegistration { op, aor, expires_s } => {
                let reg = SipRegistration::Route {
                    contact_prefs: vec![],
                    destination_list: vec![Destination::Node(self.id)],
                };
                let value = match reg.to_entry(self.id) {
                    Ok(e) => StoredDataValue::Dictionary(e),
                    Err(e) => return self.sip_overlay_done(op, OverlayResult::Failed(e.to_string())),
                };
                self.sip_store(op, aor, value, expires_s);
            }
            EdgeOutput::RemoveRegistration { op, aor } => {
                let value = StoredDataValue::Dictionary(DictionaryEntry {
                    key: self.id.0.to_vec(),
                    value: DataValue { exists: false, value: Vec::new() },
                });
                self.sip_store(op, aor, value, TOMBSTONE_S);
            }
            EdgeOutput::FetchRegistration { op, aor } => {
                let cmd =
                    Command::Fetch { resource: ResourceId::from_name(aor.as_bytes()), kind: KindId::SIP_REGISTRATION };
                match self.machine.command(now, cmd) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Sip(SipOp::Fetch(op)));
                    }
                    Err(e) => self.sip_overlay_done(op, OverlayResult::Failed(e.to_string())),
                }
            }
        }
    }

    fn sip_store(&mut self, op: OverlayOpId, aor: String, value: StoredDataValue, lifetime_s: u32) {
        let cmd = Command::StoreAs {
            user: aor.clone(),
            resource_name: aor.into_bytes(),
            kind: KindId::SIP_REGISTRATION,
            value,
            lifetime_s,
        };
        match self.machine.command(Instant::now(), cmd) {
            Ok(id) => {
                self.pending.insert(id, Pending::Sip(SipOp::Store(op)));
            }
            Err(e) => self.sip_overlay_done(op, OverlayResult::Failed(e.to_string())),
        }
    }

    fn sip_overlay_done(&mut self, op: OverlayOpId, result: OverlayResult) {
        if let Some(sip) = self.sip.as_mut() {
            sip.edge.handle_overlay(Instant::now(), wall_ms(), op, result);
        }
    }

    fn sip_attach_failed(&mut self, node: NodeId, why: &str) {
        warn!(%node, reason = why, "AppAttach for SIP failed");
        if let Some(sip) = self.sip.as_mut() {
            sip.attaching.remove(&node);
            sip.waiting.remove(&node);
            sip.edge.handle_node_unreachable(Instant::now(), wall_ms(), node);
        }
    }

    /// An overlay request made for the edge completed.
    pub(super) fn on_sip_completed(&mut self, _id: RequestId, op: SipOp, outcome: Outcome) {
        match (op, outcome) {
            (SipOp::Store(op), Outcome::Stored { .. }) => self.sip_overlay_done(op, OverlayResult::Stored),
            (SipOp::Fetch(op), Outcome::Fetched { values }) => {
                let regs = values
                    .into_iter()
                    .filter_map(|v| match v {
                        StoredDataValue::Dictionary(e) => {
                            let node = NodeId(<[u8; 16]>::try_from(e.key.as_slice()).ok()?);
                            if !e.value.exists {
                                return None;
                            }
                            let reg = SipRegistration::from_bytes(&e.value.value).ok()?;
                            Some((node, reg, true))
                        }
                        _ => None,
                    })
                    .collect();
                self.sip_overlay_done(op, OverlayResult::Fetched(regs));
            }
            (SipOp::Attach(node), Outcome::AppAttached { peer, candidates, .. }) => {
                let addr = candidates
                    .iter()
                    .find(|c| c.overlay_link == OverlayLinkType::TLS_TCP_FH_NO_ICE)
                    .map(|c| c.addr_port.0);
                match (addr, self.sip.as_ref()) {
                    (Some(addr), Some(sip)) if peer == node => {
                        sip_io::dial_node(addr, node, Arc::clone(&self.sec), sip.inputs_tx.clone());
                    }
                    _ => self.sip_attach_failed(node, "no usable SIP candidate in the AppAttach answer"),
                }
            }
            (SipOp::Attach(node), Outcome::Failed(f)) => self.sip_attach_failed(node, &failure_text(&f)),
            (SipOp::Store(op) | SipOp::Fetch(op), Outcome::Failed(f)) => {
                self.sip_overlay_done(op, OverlayResult::Failed(failure_text(&f)));
            }
            (SipOp::Store(op) | SipOp::Fetch(op), other) => {
                self.sip_overlay_done(op, OverlayResult::Failed(format!("unexpected outcome {other:?}")));
            }
            (SipOp::Attach(node), other) => self.sip_attach_failed(node, &format!("unexpected outcome {other:?}")),
        }
    }
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Error(code, reason) => format!("{code}: {reason}"),
        Failure::Timeout => "overlay timeout".into(),
        Failure::NotJoined => "not joined to the overlay".into(),
    }
}
