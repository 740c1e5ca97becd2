//! The SIP sockets of a node: phones' UDP/TCP/TLS listeners and the
//! node-to-node SIP connections. The SIP logic (edge, RFC 7904 usage) is
//! in the [`Peer`](crate::peer::Peer); this only moves bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::super::config::{LocalSettings, NodePaths};
use super::super::db::NodeDb;
use super::super::link::LinkSecurity;
use super::super::sip_io::{self, SipInput, SipInputs};
use super::{Node, wall_now};
use crate::overlay::document::OverlayDocument;
use crate::peer::host_candidate;
use crate::sip::edge::{EdgeConfig, SipEdge};
use crate::sip::transaction::Transport;
use crate::usage::{UsageEvent, node_ref};
use crate::wire::NodeId;
use crate::wire::attach::{APPLICATION_SIP, IceCandidate, OverlayLinkType};

/// The node's SIP sockets and connections.
pub(in crate::node) struct SipSockets {
    udp: Option<Arc<UdpSocket>>,
    flows: HashMap<u64, mpsc::Sender<Vec<u8>>>,
    nodes: HashMap<NodeId, (u64, mpsc::Sender<Vec<u8>>)>,
    inputs_tx: SipInputs,
    pub listening: Vec<String>,
    /// Phones' TLS connections refused (counted by the TLS listener).
    tls_failures: Arc<AtomicU64>,
}

impl SipSockets {
    /// Phones' TLS connections refused so far: failed or timed-out
    /// handshakes, or too many at once.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.tls_failures.load(Ordering::Relaxed)
    }
}

/// The address others should use for a socket bound to `addr`: itself, or
/// for a wildcard bind the IP of `fallback` (the configured `advertise`),
/// else 127.0.0.1.
pub fn advertised(addr: SocketAddr, fallback: Option<SocketAddr>) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = fallback.map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
        SocketAddr::new(ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()), addr.port())
    } else {
        addr
    }
}

/// Where this node serves node-to-node SIP, for AppAttach answers (§6.5.2).
type AppCandidates = Vec<(u16, Vec<IceCandidate>)>;

/// Opens the SIP listeners named in node.toml and builds the edge; `None`
/// when SIP is switched off (no listener) or for clients.
#[allow(clippy::too_many_arguments)]
pub(super) async fn start_sip(
    paths: &NodePaths,
    settings: &LocalSettings,
    doc: &OverlayDocument,
    db: &NodeDb,
    sec: &Arc<LinkSecurity>,
    id: NodeId,
    client: bool,
    advertise: Option<SocketAddr>,
    inputs_tx: SipInputs,
) -> anyhow::Result<Option<(SipSockets, SipEdge, AppCandidates)>> {
    let cfg = settings.sip.clone();
    if client || (cfg.udp.is_none() && cfg.tcp.is_none() && cfg.tls.is_none()) {
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
    let tls_failures = Arc::new(AtomicU64::new(0));
    let tls_local = match cfg.tls {
        Some(a) => {
            let acceptor = sip_io::tls_context::acceptor(&cfg, &paths.data_dir, sec)?;
            let l = sip_io::tls(a, acceptor, inputs_tx.clone(), Arc::clone(&tls_failures))
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for SIP on tls {a}: {e}"))?;
            listening.push(format!("tls:{l}"));
            Some(l)
        }
        None => None,
    };
    let mut app = Vec::new();
    if let Some(a) = cfg.node_tls {
        let l = sip_io::node_tls(a, Arc::clone(sec), inputs_tx.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for node SIP on {a}: {e}"))?;
        listening.push(format!("node-tls:{l}"));
        let adv = advertised(l, advertise);
        app.push((APPLICATION_SIP, vec![host_candidate(adv, OverlayLinkType::TLS_TCP_FH_NO_ICE)]));
    }
    let local = udp.as_ref().and_then(|u| u.local_addr().ok()).or(tcp_local).or(tls_local).unwrap_or(settings.listen);
    let adv = advertised(local, advertise);
    let domain = cfg.domain.clone().unwrap_or_else(|| doc.name.clone());
    let mut ec = EdgeConfig::new(node_ref(id), &domain, (adv.ip().to_string(), adv.port()), nonce_secret(db)?);
    ec.advertise_tls_port = tls_local.map(|l| advertised(l, advertise).port());
    ec.md5_first = cfg.md5_first;
    ec.md5_only = cfg.md5_only;
    ec.location_cache = std::time::Duration::from_secs(u64::from(cfg.location_cache_s));
    if let Some(r) = &cfg.realm {
        ec.realm = r.clone();
    }
    let mut edge = SipEdge::new(ec)?;
    edge.retire_nonces_before(wall_now());
    edge.set_users(db.sip_users()?);
    info!(listening = ?listening, %domain, "SIP edge up");
    let sockets = SipSockets { udp, flows: HashMap::new(), nodes: HashMap::new(), inputs_tx, listening, tls_failures };
    Ok(Some((sockets, edge, app)))
}

/// The digest nonce key, kept across restarts so phones' nonces stay valid.
fn nonce_secret(db: &NodeDb) -> anyhow::Result<[u8; 32]> {
    if let Some(v) = db.meta("sip-nonce-secret")?
        && let Ok(k) = <[u8; 32]>::try_from(v.as_slice())
    {
        return Ok(k);
    }
    let k: [u8; 32] = rand::random();
    db.put_meta("sip-nonce-secret", &k)?;
    Ok(k)
}

impl Node {
    pub(super) fn on_sip_input(&mut self, input: SipInput) {
        let now = Instant::now();
        let Some(sip) = self.sip.as_mut() else { return };
        match input {
            SipInput::Local { bytes, from } => self.peer.handle_sip_local(now, &bytes, from),
            SipInput::FlowOpened { flow, tx } => {
                sip.flows.insert(flow, tx);
            }
            SipInput::FlowClosed { flow } => {
                sip.flows.remove(&flow);
                self.peer.handle_sip_flow_closed(now, flow);
            }
            SipInput::Node { from, bytes, .. } => self.peer.handle_sip_node(now, from, &bytes),
            SipInput::NodeConnected { node, conn, tx } => {
                sip.nodes.insert(node, (conn, tx));
                self.peer.handle_sip_node_connected(now, node);
            }
            SipInput::NodeClosed { node, conn } => {
                if sip.nodes.get(&node).is_some_and(|(c, _)| *c == conn) {
                    sip.nodes.remove(&node);
                    self.peer.handle_sip_node_closed(node);
                }
            }
            SipInput::NodeDialFailed { node, reason } => self.peer.handle_sip_node_failed(now, node, &reason),
        }
    }

    /// Carries out one SIP request of the peer.
    pub(super) fn on_sip_event(&mut self, ev: UsageEvent) {
        let now = Instant::now();
        let Some(sip) = self.sip.as_mut() else { return };
        match ev {
            UsageEvent::SendLocal { to, bytes } => {
                let sent = match (to.transport, to.flow) {
                    (Transport::Udp, _) => sip.udp.as_ref().is_some_and(|u| u.try_send_to(&bytes, to.addr).is_ok()),
                    (_, Some(flow)) => sip.flows.get(&flow).is_some_and(|tx| tx.try_send(bytes).is_ok()),
                    (_, None) => false,
                };
                if !sent {
                    debug!(to = %to.addr, "cannot send to the phone");
                    self.peer.handle_sip_local_unreachable(now, to);
                }
            }
            UsageEvent::SendNode { node, bytes } => match sip.nodes.get(&node) {
                Some((_, tx)) => {
                    if tx.try_send(bytes).is_err() {
                        debug!(%node, "node SIP queue full: message dropped");
                    }
                }
                None => {
                    // Closed since the peer learned it was open: tell it,
                    // and let the transaction's retransmission re-attach.
                    self.peer.handle_sip_node_closed(node);
                }
            },
            UsageEvent::DialNode { node, addr } => {
                sip_io::dial_node(addr, node, Arc::clone(&self.sec), sip.inputs_tx.clone());
            }
        }
    }
}
