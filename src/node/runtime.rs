//! One node's control loop: it owns the sans-IO [`Peer`] and feeds it link
//! input, timer expiries, SIP input and operator requests, then carries out
//! what the peer asks (transmits, dials, link closes, SIP sends).
//!
//! Order of work in each turn (style.md: local work before new remote
//! input): shutdown, operator requests, expired timers, finished dials,
//! new links, then bytes from peers and from phones — each input source
//! with a budget per turn, so a flood on one neither starves the others
//! nor delays timers. Every queue is bounded:
//! - each link's send queue (`queue_depth` messages): when full the
//!   message is dropped and counted (`chordphone_link_queue_drops_total`);
//!   RELOAD's end-to-end retransmission (§6.2.1) recovers it;
//! - link input is one shared queue of `queue_depth`; a full queue makes
//!   the link reader wait, which back-pressures that peer's socket.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use rand::RngExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, info_span, warn};

use super::config::{LocalSettings, NodePaths};
use super::control::{self, ControlCall};
use super::db::{HostCacheEntry, NodeDb, RecordRow};
use super::link::{self, Link, LinkEvent, LinkKind, LinkSecurity};
use super::metrics::{self, Snapshot};
use crate::overlay::document::{LinkType, OverlayDocument};
use crate::overlay::{CertCrypto, OverlayNode, RequestId, TrustAnchor};
use crate::peer::{DialId, LinkId, Peer, PeerConfig, PeerEvent, PeerState};
use crate::security::KeyPair;
use crate::time::WallTime;
use crate::wire::NodeId;
use crate::wire::attach::OverlayLinkType;

#[path = "sip_glue.rs"]
mod sip_glue;

pub use sip_glue::advertised;

/// How often the host cache and records are written to the database.
const PERSIST_EVERY: Duration = Duration::from_secs(2);
/// How long a graceful leave may take before the node exits anyway.
const LEAVE_GRACE: Duration = Duration::from_secs(3);
/// Link-layer handshake bound for a dial.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Inputs taken from one source per turn of the loop.
const BUDGET_OVERLAY: usize = 256;
const BUDGET_SIP: usize = 128;

/// What `chordphone node` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub data_dir: PathBuf,
    pub listen: Option<SocketAddr>,
    pub client: bool,
}

/// Everything a node needs before its loop starts.
struct Setup {
    paths: NodePaths,
    settings: LocalSettings,
    doc: OverlayDocument,
    db: NodeDb,
    node_id: NodeId,
    kind: LinkKind,
    sec: Arc<LinkSecurity>,
    machine: OverlayNode,
}

/// Runs a node until SIGTERM/SIGINT (then leaves gracefully) or a fatal error.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let setup = prepare(&opts)?;
    let mut node = Node::start(setup, opts.client).await?;
    node.run().await
}

/// The system's wall clock: the one place a core's `WallTime` comes from.
pub(super) fn wall_now() -> WallTime {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    WallTime::from_millis(ms.unwrap_or(0))
}

/// Reads and verifies the node's identity, overlay document and settings.
fn prepare(opts: &RunOptions) -> anyhow::Result<Setup> {
    let paths = NodePaths { data_dir: opts.data_dir.clone() };
    let mut settings = LocalSettings::load(&paths)?;
    if let Some(l) = opts.listen {
        settings.listen = l;
    }
    settings.client |= opts.client;
    let db = NodeDb::open(&paths.db())?;
    let identity = db.identity()?.ok_or_else(|| {
        anyhow!(
            "{} holds no identity: enroll first (`chordphone enroll --overlay DIR --out NODE_DIR`)",
            paths.db().display()
        )
    })?;
    let doc = load_document(&paths.overlay_xml(), &identity.ca_der)?;
    let kind = pick_link(&doc, settings.link.as_deref())?;
    let key = KeyPair::from_pkcs8_der(&identity.key_pkcs8).context("the stored node key is unreadable")?;
    let anchor = TrustAnchor::new(&doc.name, identity.ca_der.clone());
    let crypto = CertCrypto::new(anchor, key, identity.cert_der.clone(), identity.node_id, wall_now())
        .map_err(|e| anyhow!("the node certificate is not usable: {e}"))?;
    let mut config = doc.to_overlay_config();
    config.client = settings.client;
    let sec = Arc::new(LinkSecurity {
        overlay: doc.name.clone(),
        ca_der: identity.ca_der.clone(),
        cert_der: identity.cert_der.clone(),
        key_pkcs8: identity.key_pkcs8.clone(),
        max_message_size: config.max_message_size.max(16 * 1024),
    });
    let seed: u64 = rand::rng().random();
    let machine = OverlayNode::new(config, identity.node_id, Box::new(crypto), seed, Instant::now(), wall_now());
    Ok(Setup { paths, settings, doc, db, node_id: identity.node_id, kind, sec, machine })
}

/// Reads `overlay.xml` and checks its signature against the enrolled root.
pub fn load_document(path: &Path, ca_der: &[u8]) -> anyhow::Result<OverlayDocument> {
    let xml = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    OverlayDocument::verify_signed(&xml, Some(ca_der))
        .map_err(|e| anyhow!("overlay configuration {} refused: {e}", path.display()))
}

fn pick_link(doc: &OverlayDocument, wanted: Option<&str>) -> anyhow::Result<LinkKind> {
    let supported = |t: &LinkType| match t {
        LinkType::TlsTcpFhNoIce => Some(LinkKind::TlsTcpFhNoIce),
        LinkType::DtlsUdpSrNoIce => Some(LinkKind::DtlsUdpSrNoIce),
        _ => None,
    };
    match wanted {
        Some(w) => {
            let kind = match w {
                "TLS-TCP-FH-NO-ICE" => LinkKind::TlsTcpFhNoIce,
                "DTLS-UDP-SR-NO-ICE" => LinkKind::DtlsUdpSrNoIce,
                other => bail!("link type '{other}' is not supported (TLS-TCP-FH-NO-ICE or DTLS-UDP-SR-NO-ICE)"),
            };
            if !doc.link_types.iter().any(|t| supported(t) == Some(kind)) {
                bail!("link type '{w}' is not allowed by the overlay configuration");
            }
            Ok(kind)
        }
        None => doc
            .link_types
            .iter()
            .find_map(supported)
            .ok_or_else(|| anyhow!("the overlay configuration names no link type this node supports")),
    }
}

/// A link as the loop holds it.
pub(super) struct LinkEntry {
    tx: link::LinkSender,
    pub(super) remote: SocketAddr,
}

struct DialResult {
    dial: DialId,
    addr: SocketAddr,
    expect: Option<NodeId>,
    result: Result<Link, String>,
}

pub(super) struct Node {
    pub(super) paths: NodePaths,
    pub(super) settings: LocalSettings,
    pub(super) doc: OverlayDocument,
    pub(super) db: NodeDb,
    pub(super) id: NodeId,
    pub(super) kind: LinkKind,
    pub(super) sec: Arc<LinkSecurity>,
    pub(super) peer: Peer,
    pub(super) client: bool,
    pub(super) advertise: Option<SocketAddr>,
    pub(super) started: Instant,
    pub(super) links: HashMap<LinkId, LinkEntry>,
    next_link_id: u64,
    /// Operator requests waiting for the overlay.
    pub(super) pending: BTreeMap<RequestId, super::lookups::PendingCall>,
    saved_store_version: Option<u64>,
    pub(super) queue_drops: u64,
    inbound_tx: mpsc::Sender<(LinkId, LinkEvent)>,
    inbound_rx: mpsc::Receiver<(LinkId, LinkEvent)>,
    accepted_rx: mpsc::Receiver<Link>,
    dial_tx: mpsc::Sender<DialResult>,
    dial_rx: mpsc::Receiver<DialResult>,
    dialer: Option<link::LinkDialer>,
    pub(super) sip: Option<sip_glue::SipSockets>,
    sip_rx: mpsc::Receiver<super::sip_io::SipInput>,
    control_rx: mpsc::Receiver<ControlCall>,
    pub(super) metrics_tx: watch::Sender<Snapshot>,
    pub(super) listener_rejected: Arc<std::sync::atomic::AtomicU64>,
    /// Forwarding entries served by the data-plane workers.
    pub(super) dataplane: super::dataplane::DataPlane,
}

impl Node {
    async fn start(setup: Setup, client: bool) -> anyhow::Result<Node> {
        let Setup { paths, settings, doc, db, node_id, kind, sec, mut machine } = setup;
        let depth = settings.queue_depth.max(16);
        let client = client || settings.client;
        // Listening: peers listen on their link port; a non-routing
        // client only dials its admitting peer (§4.2).
        let (accepted_tx, accepted_rx) = mpsc::channel(depth);
        let listener_rejected = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut advertise = settings.advertise;
        let mut dialer: Option<link::LinkDialer> = None;
        if !client {
            let mut listener = link::listen(kind, settings.listen, Arc::clone(&sec))
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen))?;
            let local = listener.local_addr();
            // Links are dialed from the listening socket (the link layer
            // breaks the tie when two peers dial each other at once).
            dialer = Some(listener.dialer());
            info!(node = %node_id, %local, link = ?kind, "listening for overlay links");
            if advertise.is_none() {
                if local.ip().is_unspecified() {
                    warn!(%local, "listening on a wildcard address without `advertise` in node.toml: peers are told 127.0.0.1");
                }
                advertise = Some(advertised(local, None));
            }
            let rejected = Arc::clone(&listener_rejected);
            tokio::spawn(async move {
                // The refusal counter lives in the listener; publish it
                // after every accept and twice a second in between.
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        link = listener.accept() => {
                            rejected.store(listener.rejected(), std::sync::atomic::Ordering::Relaxed);
                            if accepted_tx.send(link).await.is_err() {
                                return;
                            }
                        }
                        _ = tick.tick() => rejected.store(listener.rejected(), std::sync::atomic::Ordering::Relaxed),
                    }
                }
            });
        }
        // Restore what was stored before the last stop.
        let rows: Vec<Vec<u8>> = db.records()?.into_iter().map(|r| r.data).collect();
        if !rows.is_empty() {
            let (n, problems) = machine.restore_records(Instant::now(), &rows);
            info!(restored = n, rows = rows.len(), "records restored from the database");
            for p in problems {
                warn!(problem = %p, "record not restored");
            }
        }
        let (sip_tx, sip_rx) = mpsc::channel(depth);
        let sip_start = sip_glue::start_sip(
            &paths,
            &settings,
            &doc,
            &db,
            &sec,
            node_id,
            client,
            advertise,
            super::sip_io::SipInputs::new(sip_tx),
        )
        .await?;
        let (sip, edge) = match sip_start {
            Some((sockets, edge, app)) => {
                machine.set_app_candidates(app);
                (Some(sockets), Some(edge))
            }
            None => (None, None),
        };
        let dataplane = super::dataplane::DataPlane::start(&settings.dataplane).context("data plane")?;
        let (control_tx, control_rx) = mpsc::channel(64);
        let socket = paths.control_socket();
        let control_listener =
            control::bind(&socket).with_context(|| format!("control socket {}", socket.display()))?;
        tokio::spawn(control::serve(control_listener, control_tx));
        let (metrics_tx, metrics_rx) = watch::channel(Snapshot::default());
        if let Some(addr) = settings.metrics_listen {
            let l = metrics::bind(addr).await?;
            info!(addr = %l.local_addr().unwrap_or(addr), "serving Prometheus metrics at /metrics");
            tokio::spawn(metrics::serve(l, metrics_rx));
        }
        let (inbound_tx, inbound_rx) = mpsc::channel(depth);
        let (dial_tx, dial_rx) = mpsc::channel(64);
        let saved_store_version = Some(machine.store_version());
        let cfg = PeerConfig { link_type: link_type_code(kind), advertise, bootstrap: doc.bootstrap.clone(), client };
        let now = Instant::now();
        let mut peer = Peer::new(cfg, machine, edge, now, wall_now());
        let cache = db.host_cache().unwrap_or_default();
        peer.set_host_cache(cache.into_iter().map(|e| (e.node_id, e.addr)).collect());
        Ok(Node {
            paths,
            settings,
            doc,
            db,
            id: node_id,
            kind,
            sec,
            peer,
            client,
            advertise,
            started: now,
            links: HashMap::new(),
            next_link_id: 1,
            pending: BTreeMap::new(),
            saved_store_version,
            queue_drops: 0,
            inbound_tx,
            inbound_rx,
            accepted_rx,
            dial_tx,
            dial_rx,
            dialer,
            sip,
            sip_rx,
            control_rx,
            metrics_tx,
            listener_rejected,
            dataplane,
        })
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut persist = tokio::time::interval(PERSIST_EVERY);
        persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut clock = tokio::time::interval(Duration::from_secs(1));
        let mut leave_deadline: Option<Instant> = None;
        self.load_users(Instant::now());
        info!(node = %self.id, overlay = %self.doc.name, client = self.client, "node started");
        loop {
            self.pump();
            if self.peer.state() == PeerState::Leaving {
                if leave_deadline.is_some_and(|d| Instant::now() >= d) {
                    warn!("leave not confirmed within {LEAVE_GRACE:?}; exiting anyway");
                    break;
                }
                if self.peer.leave_done() {
                    break;
                }
            }
            let wake = [self.peer.poll_timeout(), leave_deadline].into_iter().flatten().min();
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = sigterm.recv() => leave_deadline = self.begin_leave("SIGTERM"),
                _ = sigint.recv() => leave_deadline = self.begin_leave("SIGINT"),
                _ = sighup.recv() => self.reload_document(),
                Some(call) = self.control_rx.recv() => self.on_control(call),
                _ = sleep => self.peer.handle_timeout(Instant::now()),
                Some(d) = self.dial_rx.recv() => self.on_dial(d),
                Some(link) = self.accepted_rx.recv() => self.on_link(link, None),
                // Overlay input before new SIP input: answers to our Stores
                // and Fetches finish work already accepted, so under load the
                // phones' new requests wait (and UDP ones are retransmitted)
                // rather than accepted ones timing out.
                Some((id, ev)) = self.inbound_rx.recv() => self.on_inbound(id, ev),
                Some(input) = self.sip_rx.recv() => self.on_sip_input(input),
                _ = persist.tick() => self.persist(false),
                _ = clock.tick() => self.on_clock(),
            }
            self.drain_inputs();
        }
        self.pump();
        // Closing the send queues lets each link flush what is queued.
        let links: Vec<LinkEntry> = self.links.drain().map(|(_, l)| l).collect();
        for l in &links {
            let _ = tokio::time::timeout(Duration::from_millis(500), l.tx.reserve()).await;
        }
        drop(links);
        self.persist(true);
        let _ = std::fs::remove_file(self.paths.control_socket());
        info!(node = %self.id, "node stopped");
        Ok(())
    }

    /// Takes what is already queued from each input source, up to its
    /// budget, overlay first: under a flood from one source the others and
    /// the timers still get their turn every loop.
    fn drain_inputs(&mut self) {
        for _ in 0..BUDGET_OVERLAY {
            match self.inbound_rx.try_recv() {
                Ok((id, ev)) => self.on_inbound(id, ev),
                Err(_) => break,
            }
        }
        self.pump();
        for _ in 0..BUDGET_SIP {
            match self.sip_rx.try_recv() {
                Ok(input) => self.on_sip_input(input),
                Err(_) => break,
            }
        }
    }

    fn begin_leave(&mut self, why: &str) -> Option<Instant> {
        if self.peer.state() == PeerState::Leaving {
            return Some(Instant::now());
        }
        info!(signal = why, "leaving the overlay");
        self.persist(true);
        if !self.peer.leave(Instant::now()) {
            return Some(Instant::now());
        }
        Some(Instant::now() + LEAVE_GRACE)
    }

    fn reload_document(&mut self) {
        let path = self.paths.overlay_xml();
        match load_document(&path, &self.sec.ca_der) {
            Ok(doc) if doc.name != self.doc.name => {
                error!(path = %path.display(), new = %doc.name, running = %self.doc.name,
                    "overlay configuration names another overlay; keeping the running configuration");
            }
            Ok(doc) => {
                info!(path = %path.display(), sequence = doc.sequence, "overlay configuration reloaded (bootstrap list)");
                self.peer.set_bootstrap(doc.bootstrap.clone());
                self.doc = doc;
            }
            Err(e) => error!(error = %e, "keeping the running configuration"),
        }
    }

    fn on_clock(&mut self) {
        let now = Instant::now();
        self.peer.set_wall_clock(now, wall_now());
        self.publish_metrics(now);
    }

    /// Carries out everything the peer has queued.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.peer.poll_transmit() {
                progressed = true;
                match self.links.get(&t.link) {
                    Some(l) => {
                        if l.tx.try_send(t.bytes).is_err() {
                            self.queue_drops += 1;
                            debug!(peer = %t.peer, "link send queue full or closed: message dropped");
                        }
                    }
                    None => debug!(peer = %t.peer, "no link for a transmit"),
                }
            }
            while let Some(ev) = self.peer.poll_event() {
                progressed = true;
                self.on_event(ev);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_event(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Dial { dial, addr, expect } => self.dial(dial, addr, expect),
            PeerEvent::CloseLink { link } => {
                if self.links.remove(&link).is_some() {
                    debug!(?link, "link closed at the peer's request");
                }
            }
            PeerEvent::Joined => self.persist(false),
            PeerEvent::Rejoining | PeerEvent::Left | PeerEvent::JoinFailed { .. } => {}
            PeerEvent::Completed { id, outcome } => self.on_completed(id, outcome),
            PeerEvent::Sip(ev) => self.on_sip_event(ev),
        }
    }

    fn dial(&mut self, dial: DialId, addr: SocketAddr, expect: Option<NodeId>) {
        let (kind, sec, tx) = (self.kind, Arc::clone(&self.sec), self.dial_tx.clone());
        let dialer = self.dialer.clone();
        tokio::spawn(async move {
            let attempt = async {
                match dialer {
                    Some(d) => d.dial(addr, expect).await,
                    None => link::dial(kind, addr, sec, expect).await,
                }
            };
            let result = match tokio::time::timeout(DIAL_TIMEOUT, attempt).await {
                Ok(Ok(l)) => Ok(l),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no handshake within {DIAL_TIMEOUT:?}")),
            };
            let _ = tx.send(DialResult { dial, addr, expect, result }).await;
        });
    }

    fn on_dial(&mut self, d: DialResult) {
        match d.result {
            Ok(link) => self.on_link_with(link, Some(d.dial), d.expect),
            Err(e) => {
                debug!(addr = %d.addr, error = %e, "dial failed");
                self.peer.handle_dial_failed(Instant::now(), d.dial, &e);
            }
        }
    }

    fn on_link(&mut self, link: Link, dial: Option<DialId>) {
        self.on_link_with(link, dial, None);
    }

    /// Takes a new link into service if the peer keeps it.
    fn on_link_with(&mut self, link: Link, dial: Option<DialId>, expect: Option<NodeId>) {
        let now = Instant::now();
        // A certificate may bind several Node-IDs: the expected one if it
        // is among them, else the first.
        let peer = match expect {
            Some(p) if link.peer.node_ids.contains(&p) => Some(p),
            _ => link.peer.node_ids.first().copied(),
        };
        let Some(peer) = peer else {
            if let Some(d) = dial {
                self.peer.handle_dial_failed(now, d, "the certificate binds no Node-ID");
            }
            return;
        };
        let id = LinkId(self.next_link_id);
        self.next_link_id += 1;
        if !self.peer.handle_link_opened(now, id, peer, dial) {
            return; // dropping the link closes it
        }
        let Link { tx, mut rx, remote, .. } = link;
        let inbound = self.inbound_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let closed = matches!(ev, LinkEvent::Closed(_));
                if inbound.send((id, ev)).await.is_err() || closed {
                    return;
                }
            }
            let _ = inbound.send((id, LinkEvent::Closed("link task ended".into()))).await;
        });
        debug!(%peer, %remote, ?id, "link up");
        self.links.insert(id, LinkEntry { tx, remote });
    }

    fn on_inbound(&mut self, id: LinkId, ev: LinkEvent) {
        let now = Instant::now();
        match ev {
            LinkEvent::Message(bytes) => {
                if self.links.contains_key(&id) {
                    let _span = info_span!("reload_input", link = id.0, len = bytes.len()).entered();
                    self.peer.handle_input(now, id, &bytes);
                }
            }
            LinkEvent::Closed(reason) => {
                if self.links.remove(&id).is_some() {
                    info!(link = id.0, reason = %reason, "link lost");
                }
                self.peer.handle_link_closed(now, id);
            }
        }
    }

    /// Writes the host cache and (when changed) the records. A failure is
    /// logged; the node keeps running on what it holds in memory.
    fn persist(&mut self, force: bool) {
        let now = Instant::now();
        let now_s = wall_now().as_secs();
        let linked: Vec<HostCacheEntry> = self
            .peer
            .linked_addresses()
            .into_iter()
            .map(|(node_id, addr)| HostCacheEntry { node_id, addr, last_seen_unix_s: now_s })
            .collect();
        if !linked.is_empty() {
            if let Err(e) = self.db.record_peers(&linked) {
                warn!(error = %e, "host cache not saved");
            }
            if let Err(e) = self.db.prune_host_cache(self.settings.host_cache_size) {
                warn!(error = %e, "host cache not pruned");
            }
        }
        let version = self.peer.overlay().store_version();
        if force || self.saved_store_version != Some(version) {
            let rows: Vec<RecordRow> = self
                .peer
                .overlay()
                .export_records(now)
                .into_iter()
                .map(|(r, data)| RecordRow { resource: r.0, kind: 0, data })
                .collect();
            match self.db.replace_records(&rows) {
                Ok(()) => self.saved_store_version = Some(version),
                Err(e) => warn!(error = %e, "records not saved"),
            }
        }
    }
}

fn link_type_code(kind: LinkKind) -> OverlayLinkType {
    match kind {
        LinkKind::TlsTcpFhNoIce => OverlayLinkType::TLS_TCP_FH_NO_ICE,
        LinkKind::DtlsUdpSrNoIce => OverlayLinkType::DTLS_UDP_SR_NO_ICE,
    }
}
