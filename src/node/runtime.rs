//! One node's event loop: it owns the overlay machine and feeds it link
//! input, timer expiries and operator requests, then carries out what the
//! machine asks (transmits, connects, disconnects).
//!
//! Order of work in each turn (style.md: local work before new remote
//! input): shutdown, operator requests, expired timers, finished dials,
//! new links, and only then bytes from peers. Every queue is bounded:
//! - each link's send queue (`queue_depth` messages): when full the
//!   message is dropped and counted (`chordphone_link_queue_drops_total`);
//!   RELOAD's end-to-end retransmission (§6.2.1) recovers it;
//! - link input is one shared queue of `queue_depth`; a full queue makes
//!   the link reader wait, which back-pressures that peer's socket.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use rand::RngExt;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, info_span, warn};

use super::cli::{UserIdentityRecord, account_identity, delete_account, save_account};
use super::config::{LocalSettings, NodePaths};
use super::control::{self, ControlCall, ControlRequest, ControlResponse};
use super::db::{HostCacheEntry, NodeDb, RecordRow, SipUser};
use super::link::{self, Link, LinkEvent, LinkKind, LinkSecurity};
use super::metrics::{self, Snapshot};
use super::overlay_doc::{LinkType, OverlayDocument};
use crate::overlay::{CertCrypto, Command, Event, Failure, Outcome, OverlayNode, RequestId, TrustAnchor};
use crate::security::KeyPair;
use crate::wire::attach::{IceCandidate, OverlayLinkType};
use crate::wire::storage::{DataValue, StoredDataValue};
use crate::wire::types::IpAddressPort;
use crate::wire::{KindId, NodeId, ResourceId};

#[path = "sip_glue.rs"]
mod sip_glue;

/// How often the host cache and records are written to the database.
const PERSIST_EVERY: Duration = Duration::from_secs(2);
/// How long a graceful leave may take before the node exits anyway.
const LEAVE_GRACE: Duration = Duration::from_secs(3);
/// Back-off bounds between bootstrap rounds.
const BOOTSTRAP_MIN: Duration = Duration::from_millis(500);
const BOOTSTRAP_MAX: Duration = Duration::from_secs(15);
/// Link-layer handshake bound for a dial.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

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

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
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
    let wall_s = wall_ms() / 1000;
    let crypto = CertCrypto::new(anchor, key, identity.cert_der.clone(), identity.node_id, wall_s)
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
    let machine = OverlayNode::new(config, identity.node_id, Box::new(crypto), seed, Instant::now(), wall_ms());
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

fn link_type_code(kind: LinkKind) -> OverlayLinkType {
    match kind {
        LinkKind::TlsTcpFhNoIce => OverlayLinkType::TLS_TCP_FH_NO_ICE,
        LinkKind::DtlsUdpSrNoIce => OverlayLinkType::DTLS_UDP_SR_NO_ICE,
    }
}

/// A peer's link as the loop holds it.
struct LinkEntry {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    /// Who opened it: decides which link survives a simultaneous open.
    dialer: NodeId,
    remote: SocketAddr,
}

/// Why a dial was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DialPurpose {
    /// A bootstrap round: the first success is joined through.
    Bootstrap { round: u64 },
    /// The machine asked for a link to this peer.
    Connect(NodeId),
}

struct DialResult {
    purpose: DialPurpose,
    addr: SocketAddr,
    result: Result<Link, String>,
}

/// What a pending machine request answers.
enum Pending {
    Control(tokio::sync::oneshot::Sender<ControlResponse>, ControlRequest),
    Sip(sip_glue::SipOp),
    Join,
    Leave,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Not in the ring; bootstrap round `round` is running or waiting.
    Bootstrapping,
    Joining,
    Joined,
    Leaving,
}

struct Node {
    paths: NodePaths,
    settings: LocalSettings,
    doc: OverlayDocument,
    db: NodeDb,
    id: NodeId,
    kind: LinkKind,
    sec: Arc<LinkSecurity>,
    machine: OverlayNode,
    client: bool,
    advertise: Option<SocketAddr>,
    started: Instant,
    state: State,
    links: HashMap<NodeId, LinkEntry>,
    next_link_id: u64,
    dialing: HashSet<NodeId>,
    pending: BTreeMap<RequestId, Pending>,
    bootstrap_round: u64,
    bootstrap_outstanding: usize,
    bootstrap_joined_via: bool,
    next_bootstrap: Option<Instant>,
    bootstrap_backoff: Duration,
    saved_store_version: Option<u64>,
    queue_drops: u64,
    // channels
    inbound_tx: mpsc::Sender<(NodeId, u64, LinkEvent)>,
    inbound_rx: mpsc::Receiver<(NodeId, u64, LinkEvent)>,
    accepted_rx: mpsc::Receiver<Link>,
    dial_tx: mpsc::Sender<DialResult>,
    dial_rx: mpsc::Receiver<DialResult>,
    dialer: Option<link::LinkDialer>,
    sip: Option<sip_glue::SipState>,
    sip_rx: mpsc::Receiver<super::sip_io::SipInput>,
    control_rx: mpsc::Receiver<ControlCall>,
    metrics_tx: watch::Sender<Snapshot>,
    listener_rejected: Arc<std::sync::atomic::AtomicU64>,
    dataplane: super::dataplane::DataPlane,
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
            // Outgoing TLS links may share the listener's security; DTLS
            // links are dialed from an ephemeral socket: two peers dialing
            // each other at once from their listening sockets would share
            // one UDP 5-tuple, which holds only one DTLS association, and
            // the link layer has no tie-break for that yet.
            if kind == LinkKind::TlsTcpFhNoIce {
                dialer = Some(listener.dialer());
            }
            info!(node = %node_id, %local, link = ?kind, "listening for overlay links");
            if advertise.is_none() {
                if local.ip().is_unspecified() {
                    warn!(%local, "listening on a wildcard address without `advertise` in node.toml: peers are told 127.0.0.1");
                }
                advertise = Some(sip_glue::advertised(local, None));
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
        if let Some(a) = advertise {
            machine.set_candidates(vec![IceCandidate::host(IpAddressPort(a), link_type_code(kind), b"1".to_vec(), 1)]);
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
        let dataplane = super::dataplane::DataPlane::start(&settings.dataplane).context("data plane")?;
        let (sip_tx, sip_rx) = mpsc::channel(depth);
        let mut node = Node {
            paths,
            settings,
            doc,
            db,
            id: node_id,
            kind,
            sec,
            machine,
            client,
            advertise,
            started: Instant::now(),
            state: State::Bootstrapping,
            links: HashMap::new(),
            next_link_id: 1,
            dialing: HashSet::new(),
            pending: BTreeMap::new(),
            bootstrap_round: 0,
            bootstrap_outstanding: 0,
            bootstrap_joined_via: false,
            next_bootstrap: Some(Instant::now()),
            bootstrap_backoff: BOOTSTRAP_MIN,
            saved_store_version,
            queue_drops: 0,
            inbound_tx,
            inbound_rx,
            accepted_rx,
            dial_tx,
            dial_rx,
            dialer,
            sip: None,
            sip_rx,
            control_rx,
            metrics_tx,
            listener_rejected,
            dataplane,
        };
        node.sip = node.start_sip(sip_tx).await?;
        Ok(node)
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
            if self.state == State::Leaving && leave_deadline.is_some_and(|d| Instant::now() >= d) {
                warn!("leave not confirmed within {LEAVE_GRACE:?}; exiting anyway");
                break;
            }
            if self.state == State::Leaving && !self.pending.values().any(|p| matches!(p, Pending::Leave)) {
                break;
            }
            let timer = self.machine.poll_timeout().map(|(t, _)| t);
            let bootstrap = self.next_bootstrap;
            let sip_timer = self.sip.as_ref().and_then(|s| s.edge.poll_timeout());
            let wake = [timer, bootstrap, leave_deadline, sip_timer].into_iter().flatten().min();
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
                _ = sleep => self.on_wake(),
                Some(d) = self.dial_rx.recv() => self.on_dial(d),
                Some(link) = self.accepted_rx.recv() => {
                    self.on_link(link, false, None);
                }
                // Overlay input before new SIP input: answers to our Stores
                // and Fetches finish work already accepted, so under load the
                // phones' new requests wait (and UDP ones are retransmitted)
                // rather than accepted ones timing out.
                Some((peer, id, ev)) = self.inbound_rx.recv() => self.on_inbound(peer, id, ev),
                Some(input) = self.sip_rx.recv() => self.on_sip_input(input),
                _ = persist.tick() => self.persist(false),
                _ = clock.tick() => self.on_clock(),
            }
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

    fn begin_leave(&mut self, why: &str) -> Option<Instant> {
        if self.state == State::Leaving {
            return Some(Instant::now());
        }
        info!(signal = why, "leaving the overlay");
        self.persist(true);
        let joined = self.state == State::Joined;
        self.state = State::Leaving;
        if joined {
            match self.machine.command(Instant::now(), Command::Leave) {
                Ok(id) => {
                    self.pending.insert(id, Pending::Leave);
                }
                Err(e) => warn!(error = %e, "cannot leave gracefully"),
            }
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
                self.doc = doc;
            }
            Err(e) => error!(error = %e, "keeping the running configuration"),
        }
    }

    fn on_clock(&mut self) {
        let now = Instant::now();
        self.machine.set_wall_clock(now, wall_ms());
        self.publish_metrics(now);
    }

    /// Carries out everything the machine has queued.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.machine.poll_transmit() {
                progressed = true;
                match self.links.get(&t.to) {
                    Some(l) => {
                        if l.tx.try_send(t.bytes).is_err() {
                            self.queue_drops += 1;
                            debug!(peer = %t.to, "link send queue full or closed: message dropped");
                        }
                    }
                    None => debug!(peer = %t.to, "no link for a transmit"),
                }
            }
            while let Some(ev) = self.machine.poll_event() {
                progressed = true;
                self.on_event(ev);
            }
            progressed |= self.pump_sip();
            if !progressed {
                break;
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Connect { peer, candidates } => {
                if self.links.contains_key(&peer) {
                    self.machine.handle_link_up(now, peer);
                    return;
                }
                if self.dialing.contains(&peer) {
                    return;
                }
                let want = link_type_code(self.kind);
                let addr = candidates.iter().find(|c| c.overlay_link == want).map(|c| c.addr_port.0);
                match addr {
                    Some(addr) => {
                        self.dialing.insert(peer);
                        self.dial(DialPurpose::Connect(peer), addr, Some(peer));
                    }
                    None => {
                        debug!(%peer, "no candidate with our link type");
                        self.machine.handle_link_down(now, peer);
                    }
                }
            }
            Event::Disconnect { peer } => {
                if self.links.remove(&peer).is_some() {
                    debug!(%peer, "link closed at the overlay's request");
                }
            }
            Event::Joined => {
                info!(node = %self.id, successors = ?self.machine.successors(), "joined the overlay");
                self.state = State::Joined;
                self.bootstrap_backoff = BOOTSTRAP_MIN;
                self.next_bootstrap = None;
                self.persist(false);
            }
            Event::Rejoining => {
                warn!("lost every successor; re-joining");
                if self.state != State::Leaving {
                    self.state = State::Joining;
                    if self.links.is_empty() {
                        self.state = State::Bootstrapping;
                        self.next_bootstrap = Some(now + self.bootstrap_backoff);
                    }
                }
            }
            Event::Completed { id, outcome } => match self.pending.remove(&id) {
                Some(Pending::Control(reply, req)) => {
                    let _ = reply.send(control_answer(&req, outcome));
                }
                Some(Pending::Join) => {
                    if let Outcome::Failed(f) = outcome {
                        warn!(failure = ?f, "join failed; bootstrapping again");
                        if self.state != State::Leaving && self.state != State::Joined {
                            self.state = State::Bootstrapping;
                            self.schedule_bootstrap(now);
                        }
                    }
                }
                Some(Pending::Leave) => info!(outcome = ?outcome, "left the overlay"),
                Some(Pending::Sip(op)) => self.on_sip_completed(id, op, outcome),
                None => {}
            },
        }
    }

    fn schedule_bootstrap(&mut self, now: Instant) {
        self.next_bootstrap = Some(now + self.bootstrap_backoff);
        self.bootstrap_backoff = (self.bootstrap_backoff * 2).min(BOOTSTRAP_MAX);
    }

    fn on_wake(&mut self) {
        let now = Instant::now();
        if self.machine.poll_timeout().is_some_and(|(t, _)| t <= now) {
            self.machine.handle_timeout(now);
        }
        if let Some(sip) = self.sip.as_mut()
            && sip.edge.poll_timeout().is_some_and(|t| t <= now)
        {
            sip.edge.handle_timeout(now, wall_ms());
        }
        if self.next_bootstrap.is_some_and(|t| t <= now) {
            self.next_bootstrap = None;
            if self.state == State::Bootstrapping {
                self.start_bootstrap(now);
            }
        }
    }

    /// Where to look for the ring: host cache first (newest first), then
    /// the configuration's bootstrap nodes (§11.4), never ourselves.
    fn bootstrap_candidates(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        let cache = self.db.host_cache().unwrap_or_default();
        for e in cache.iter().filter(|e| e.node_id != self.id) {
            if !out.contains(&e.addr) {
                out.push(e.addr);
            }
        }
        for a in &self.doc.bootstrap {
            if !out.contains(a) {
                out.push(*a);
            }
        }
        out.retain(|a| Some(*a) != self.advertise && *a != self.settings.listen);
        out
    }

    /// Whether this node is one of the configuration's bootstrap nodes
    /// (which start the ring when they reach nobody).
    fn is_seed(&self) -> bool {
        self.advertise.is_some_and(|a| self.doc.bootstrap.contains(&a))
    }

    fn start_bootstrap(&mut self, now: Instant) {
        self.bootstrap_round += 1;
        let round = self.bootstrap_round;
        let candidates = self.bootstrap_candidates();
        // With no bootstrap list at all, a peer alone starts its own ring.
        let may_start_ring = self.is_seed() || (self.doc.bootstrap.is_empty() && !self.client);
        if candidates.is_empty() {
            if may_start_ring {
                self.create_ring(now);
            } else {
                warn!("no bootstrap peer is configured and the host cache is empty; retrying");
                self.schedule_bootstrap(now);
            }
            return;
        }
        info!(round, peers = candidates.len(), "bootstrapping");
        self.bootstrap_outstanding = candidates.len();
        self.bootstrap_joined_via = false;
        for addr in candidates {
            self.dial(DialPurpose::Bootstrap { round }, addr, None);
        }
    }

    fn create_ring(&mut self, now: Instant) {
        match self.machine.command(now, Command::CreateRing) {
            Ok(_) => info!(node = %self.id, "no peer answered: this bootstrap node starts the ring"),
            Err(e) => warn!(error = %e, "cannot create the ring"),
        }
    }

    fn dial(&mut self, purpose: DialPurpose, addr: SocketAddr, expected: Option<NodeId>) {
        let (kind, sec, tx) = (self.kind, Arc::clone(&self.sec), self.dial_tx.clone());
        let dialer = self.dialer.clone();
        tokio::spawn(async move {
            let attempt = async {
                match dialer {
                    Some(d) => d.dial(addr, expected).await,
                    None => link::dial(kind, addr, sec, expected).await,
                }
            };
            let result = match tokio::time::timeout(DIAL_TIMEOUT, attempt).await {
                Ok(Ok(l)) => Ok(l),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no handshake within {DIAL_TIMEOUT:?}")),
            };
            let _ = tx.send(DialResult { purpose, addr, result }).await;
        });
    }

    fn on_dial(&mut self, d: DialResult) {
        let now = Instant::now();
        match d.purpose {
            DialPurpose::Connect(peer) => {
                self.dialing.remove(&peer);
                match d.result {
                    Ok(link) => {
                        self.on_link(link, true, Some(peer));
                    }
                    Err(e) => {
                        debug!(%peer, addr = %d.addr, error = %e, "connect failed");
                        if !self.links.contains_key(&peer) {
                            self.machine.handle_link_down(now, peer);
                        }
                    }
                }
            }
            DialPurpose::Bootstrap { round } => {
                if round != self.bootstrap_round {
                    if let Ok(link) = d.result {
                        self.on_link(link, true, None);
                    }
                    return;
                }
                self.bootstrap_outstanding = self.bootstrap_outstanding.saturating_sub(1);
                match d.result {
                    Ok(link) => {
                        let peer = self.on_link(link, true, None);
                        if let Some(peer) = peer
                            && !self.bootstrap_joined_via
                            && self.state == State::Bootstrapping
                        {
                            self.bootstrap_joined_via = true;
                            let cand =
                                IceCandidate::host(IpAddressPort(d.addr), link_type_code(self.kind), b"1".to_vec(), 1);
                            self.machine.add_known_peer(peer, vec![cand]);
                            match self.machine.command(now, Command::Join { via: peer }) {
                                Ok(id) => {
                                    info!(via = %peer, addr = %d.addr, "joining");
                                    self.state = State::Joining;
                                    self.pending.insert(id, Pending::Join);
                                }
                                Err(e) => {
                                    warn!(error = %e, "cannot join");
                                    self.schedule_bootstrap(now);
                                }
                            }
                        }
                    }
                    Err(e) => info!(addr = %d.addr, error = %e, "bootstrap peer unreachable"),
                }
                if self.bootstrap_outstanding == 0 && !self.bootstrap_joined_via && self.state == State::Bootstrapping {
                    if self.is_seed() {
                        self.create_ring(now);
                    } else {
                        self.schedule_bootstrap(now);
                    }
                }
            }
        }
    }

    /// Takes a new link into service; returns the peer it is bound to.
    fn on_link(&mut self, link: Link, dialed: bool, expected: Option<NodeId>) -> Option<NodeId> {
        let now = Instant::now();
        let peer = match expected {
            Some(p) if link.peer.node_ids.contains(&p) => p,
            Some(p) => {
                warn!(expected = %p, remote = %link.remote, "link bound to another Node-ID; closed");
                return None;
            }
            None => *link.peer.node_ids.first()?,
        };
        if peer == self.id {
            debug!(remote = %link.remote, "link to ourselves; closed");
            return None;
        }
        let dialer = if dialed { self.id } else { peer };
        if let Some(existing) = self.links.get(&peer) {
            // Simultaneous open: both ends keep the link the smaller
            // Node-ID dialed; a re-dial by the same side replaces.
            let keep_new = existing.dialer == dialer || dialer < existing.dialer;
            if !keep_new {
                debug!(%peer, "duplicate link; keeping the existing one");
                return Some(peer);
            }
        }
        let id = self.next_link_id;
        self.next_link_id += 1;
        let Link { tx, mut rx, remote, .. } = link;
        let inbound = self.inbound_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let closed = matches!(ev, LinkEvent::Closed(_));
                if inbound.send((peer, id, ev)).await.is_err() || closed {
                    return;
                }
            }
            let _ = inbound.send((peer, id, LinkEvent::Closed("link task ended".into()))).await;
        });
        let had = self.links.insert(peer, LinkEntry { id, tx, dialer, remote }).is_some();
        debug!(%peer, %remote, dialed, "link up");
        if !had {
            self.machine.handle_link_up(now, peer);
        }
        Some(peer)
    }

    fn on_inbound(&mut self, peer: NodeId, id: u64, ev: LinkEvent) {
        let now = Instant::now();
        let current = self.links.get(&peer).is_some_and(|l| l.id == id);
        match ev {
            LinkEvent::Message(bytes) => {
                if current {
                    let _span = info_span!("reload_input", peer = %peer, len = bytes.len()).entered();
                    self.machine.handle_input(now, peer, &bytes);
                }
            }
            LinkEvent::Closed(reason) => {
                if current {
                    self.links.remove(&peer);
                    info!(%peer, reason = %reason, "link lost");
                    self.machine.handle_link_down(now, peer);
                }
            }
        }
    }

    fn on_control(&mut self, call: ControlCall) {
        let now = Instant::now();
        let ControlCall { request, reply } = call;
        let _span = info_span!("control", op = request.name()).entered();
        let cmd = match &request {
            ControlRequest::Status => {
                let _ = reply.send(ControlResponse::ok(self.status(now)));
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
            ControlRequest::Forward(req) => {
                let _ = reply.send(self.dataplane.handle(req).map_or_else(ControlResponse::error, ControlResponse::ok));
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
                // SIP registrations are stored under the AOR without "sip:".
                let name = match kind {
                    KindId::SIP_REGISTRATION => name.strip_prefix("sip:").unwrap_or(name),
                    _ => name.as_str(),
                };
                Command::Fetch { resource: ResourceId::from_name(name.as_bytes()), kind }
            }
            ControlRequest::Lookup { name } => Command::Lookup { resource: ResourceId::from_name(name.as_bytes()) },
        };
        match self.machine.command(now, cmd) {
            Ok(id) => {
                self.pending.insert(id, Pending::Control(reply, request));
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
        match self.machine.add_user_identity(now, &key, &cert) {
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
    fn load_users(&mut self, now: Instant) {
        let users = match self.db.sip_users() {
            Ok(u) => u,
            Err(e) => {
                error!(error = %e, "cannot read SIP accounts");
                return;
            }
        };
        for u in users {
            let loaded = account_identity(&self.db, &u.aor).and_then(|r| r.decode());
            match loaded.map(|(k, c)| self.machine.add_user_identity(now, &k, &c)) {
                Some(Ok(_)) => debug!(aor = %u.aor, "SIP account loaded"),
                Some(Err(e)) => warn!(aor = %u.aor, error = %e, "SIP account's certificate refused"),
                None => warn!(aor = %u.aor, "SIP account has no user certificate"),
            }
        }
        self.users_changed();
    }

    /// The SIP edge's account table follows the database.
    fn users_changed(&mut self) {
        if let Some(sip) = self.sip.as_mut() {
            match self.db.sip_users() {
                Ok(u) => sip.edge.set_users(u),
                Err(e) => error!(error = %e, "cannot read SIP accounts"),
            }
        }
    }

    fn status(&self, now: Instant) -> serde_json::Value {
        let ids = |v: Vec<NodeId>| v.into_iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let records: serde_json::Map<String, serde_json::Value> =
            self.machine.records_by_kind().into_iter().map(|(k, n)| (kind_name(k), json!(n))).collect();
        let links: Vec<serde_json::Value> = {
            let mut v: Vec<(&NodeId, &LinkEntry)> = self.links.iter().collect();
            v.sort_by_key(|(n, _)| **n);
            v.into_iter().map(|(n, l)| json!({"peer": n.to_string(), "remote": l.remote.to_string()})).collect()
        };
        json!({
            "node_id": self.id.to_string(),
            "overlay": self.doc.name,
            "state": format!("{:?}", self.state).to_lowercase(),
            "joined": self.machine.is_joined(),
            "client": self.client,
            "link_type": format!("{:?}", self.kind),
            "advertise": self.advertise.map(|a| a.to_string()),
            "successors": ids(self.machine.successors()),
            "predecessors": ids(self.machine.predecessors()),
            "fingers": ids(self.machine.fingers()),
            "links": links,
            "records_by_kind": records,
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
            "ring_uptime_s": self.machine.uptime(now),
            "counters": self.machine.counters(),
            "link_queue_drops": self.queue_drops,
            "sip": self.sip.as_ref().map(|s| json!({
                "listening": s.listening,
                "counters": s.edge.counters(),
            })),
            "links_rejected": self.listener_rejected.load(std::sync::atomic::Ordering::Relaxed),
            "dataplane": self.dataplane.status_json(),
        })
    }

    fn publish_metrics(&self, now: Instant) {
        let c = self.machine.counters();
        let mut s = Snapshot::default();
        s.counter("chordphone_reload_messages_sent_total", "RELOAD messages sent", c.messages_sent);
        s.counter("chordphone_reload_messages_received_total", "RELOAD messages received", c.messages_received);
        s.counter("chordphone_reload_forwarded_total", "RELOAD messages forwarded for others", c.forwarded);
        s.counter(
            "chordphone_reload_dropped_malformed_total",
            "malformed RELOAD messages dropped",
            c.dropped_malformed,
        );
        s.counter(
            "chordphone_reload_dropped_signature_total",
            "messages dropped for a bad signature",
            c.dropped_signature,
        );
        s.counter(
            "chordphone_reload_dropped_unroutable_total",
            "messages that could not be routed",
            c.dropped_unroutable,
        );
        s.counter("chordphone_reload_retransmissions_total", "end-to-end retransmissions", c.retransmissions);
        s.counter("chordphone_reload_transactions_failed_total", "transactions that failed", c.transactions_failed);
        s.counter("chordphone_reload_errors_sent_total", "RELOAD Error responses sent", c.errors_sent);
        s.counter("chordphone_link_queue_drops_total", "messages dropped on a full link queue", self.queue_drops);
        s.counter(
            "chordphone_links_rejected_total",
            "incoming links refused (handshake, certificate, garbage)",
            self.listener_rejected.load(std::sync::atomic::Ordering::Relaxed),
        );
        s.gauge("chordphone_links", "open overlay links", vec![], self.links.len() as f64);
        s.gauge(
            "chordphone_joined",
            "1 when the node is in the ring",
            vec![],
            f64::from(u8::from(self.machine.is_joined())),
        );
        s.gauge(
            "chordphone_uptime_seconds",
            "seconds since start",
            vec![],
            now.saturating_duration_since(self.started).as_secs_f64(),
        );
        self.dataplane.metric_counters().into_iter().for_each(|(name, help, v)| s.counter(name, help, v));
        if let Some(sip) = &self.sip {
            let e = sip.edge.counters();
            s.counter("chordphone_sip_register_ok_total", "REGISTERs answered 200", e.register_ok);
            s.counter("chordphone_sip_register_fail_total", "REGISTERs refused", e.register_fail);
            s.counter("chordphone_sip_auth_challenges_total", "digest challenges sent", e.auth_challenges);
            s.counter(
                "chordphone_sip_forwarded_local_total",
                "requests sent to local phones",
                e.requests_forwarded_local,
            );
            s.counter("chordphone_sip_forwarded_node_total", "requests sent to other nodes", e.requests_forwarded_node);
            s.counter("chordphone_sip_responses_total", "responses sent", e.responses);
            s.counter(
                "chordphone_sip_malformed_rejected_total",
                "malformed requests answered 400",
                e.malformed_rejected,
            );
            s.counter("chordphone_sip_malformed_dropped_total", "malformed messages dropped", e.malformed_dropped);
            s.counter(
                "chordphone_sip_tls_handshake_failures_total",
                "phone TLS handshakes that failed or timed out",
                super::sip_io::tls_handshake_failures(),
            );
        }
        for (k, n) in self.machine.records_by_kind() {
            s.gauge("chordphone_records", "records held, by kind", vec![("kind", kind_name(k))], n as f64);
        }
        let _ = self.metrics_tx.send(s);
    }

    /// Writes the host cache and (when changed) the records. A failure is
    /// logged; the node keeps running on what it holds in memory.
    fn persist(&mut self, force: bool) {
        let now = Instant::now();
        let now_s = wall_ms() / 1000;
        let linked: Vec<HostCacheEntry> = self
            .machine
            .known_peer_candidates()
            .into_iter()
            .filter(|(n, _)| self.links.contains_key(n))
            .filter_map(|(n, c)| {
                let want = link_type_code(self.kind);
                let addr = c.iter().find(|c| c.overlay_link == want).map(|c| c.addr_port.0)?;
                Some(HostCacheEntry { node_id: n, addr, last_seen_unix_s: now_s })
            })
            .collect();
        if !linked.is_empty() {
            if let Err(e) = self.db.record_peers(&linked) {
                warn!(error = %e, "host cache not saved");
            }
            if let Err(e) = self.db.prune_host_cache(self.settings.host_cache_size) {
                warn!(error = %e, "host cache not pruned");
            }
        }
        let version = self.machine.store_version();
        if force || self.saved_store_version != Some(version) {
            let rows: Vec<RecordRow> = self
                .machine
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

/// One SIP-REGISTRATION dictionary entry for people: the node that stored
/// it and where it points (RFC 7904 §3.2).
fn describe_registration(e: &crate::wire::storage::DictionaryEntry) -> String {
    let node = hex::encode(&e.key);
    match <crate::wire::kinds::SipRegistration as crate::wire::codec::Codec>::from_bytes(&e.value.value) {
        Ok(crate::wire::kinds::SipRegistration::Route { destination_list, .. }) => {
            let route: Vec<String> = destination_list
                .iter()
                .map(|d| match d {
                    crate::wire::types::Destination::Node(n) => n.to_string(),
                    other => format!("{other:?}"),
                })
                .collect();
            format!("node {node} route {}", route.join(" "))
        }
        Ok(crate::wire::kinds::SipRegistration::Uri(uri)) => {
            format!("node {node} uri {}", String::from_utf8_lossy(&uri))
        }
        Ok(crate::wire::kinds::SipRegistration::Unknown { ty, .. }) => format!("node {node} unknown type {ty}"),
        Err(e) => format!("node {node} undecodable ({e})"),
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

fn control_answer(req: &ControlRequest, outcome: Outcome) -> ControlResponse {
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
                    StoredDataValue::Dictionary(e) if e.value.exists => Some(json!(describe_registration(e))),
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
