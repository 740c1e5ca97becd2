//! The DTLS socket task: one UDP socket, every datagram classified by its
//! first byte (RFC 7983), DTLS records routed to the [`DtlsLink`] of their
//! source address, all machines and their timers driven from this one task.
//!
//! A new server machine starts only for a DTLS ClientHello; sessions and
//! handshakes are capped ([`MAX_SESSIONS`], [`MAX_PENDING_HANDSHAKES`]).
//! A ClientHello from the address of an established link starts a second
//! machine beside it (the peer may have restarted on the same port); if it
//! authenticates it replaces the old link, if not the old one lives on.
//! Both get the address's datagrams meanwhile: each silently drops records
//! it cannot decrypt (RFC 6347 §4.1.2.7).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{
    Command, Counters, Link, LinkError, LinkEvent, LinkId, LinkIds, LinkKind, LinkSecurity, MAX_PENDING_HANDSHAKES,
    SEND_QUEUE, new_link, unix_now,
};
use crate::link::{DtlsContexts, DtlsLink, Event, Role, client_hello_random, is_client_hello};
use crate::nat::{PacketClass, classify};
use crate::wire::NodeId;

pub use crate::link::dtls::{DTLS_MTU, DTLS_RECORD_OVERHEAD, MAX_FRAME_PAYLOAD};
pub use crate::link::sr::{SR_INITIAL_RTO, SR_MAX_TRANSMISSIONS};

/// Sessions (established or not) one socket serves.
pub const MAX_SESSIONS: usize = 4096;
/// Datagrams read in one go before timers and commands get a turn.
const RECV_BATCH: usize = 64;
/// Commands taken in one go.
const COMMAND_BATCH: usize = 64;
/// How often links whose owner lagged are offered their events again.
const RETRY_EVENTS: Duration = Duration::from_millis(5);

/// The listener side: the socket task and where it puts accepted links.
pub(crate) struct DtlsListener {
    local: SocketAddr,
    commands: mpsc::Sender<Command>,
    links: mpsc::UnboundedReceiver<Link>,
    counters: Arc<Counters>,
    /// Dropping it tells the task to close every link and stop.
    _stop: oneshot::Sender<()>,
}

impl DtlsListener {
    pub(crate) async fn bind(addr: SocketAddr, sec: Arc<LinkSecurity>) -> io::Result<Self> {
        if crate::link::private_key(&sec.key_pkcs8).is_ok_and(|k| k.id() == openssl::pkey::Id::ED25519) {
            // OpenSSL 3.0 offers no DTLS 1.2 cipher suite for an Ed25519
            // server certificate; dialing out from this socket still works.
            tracing::warn!("DTLS listener with an Ed25519 certificate: OpenSSL will refuse every incoming handshake");
        }
        let (accepted, links) = mpsc::unbounded_channel();
        let (task, commands, stop) = SocketTask::bind(addr, sec, Some(accepted)).await.map_err(|e| match e {
            LinkError::Io(e) => e,
            other => io::Error::other(other),
        })?;
        let (local, counters) = (task.local, task.counters.clone());
        tokio::spawn(task.run().instrument(tracing::info_span!("dtls_socket", %local)));
        Ok(DtlsListener { local, commands, links, counters, _stop: stop })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    pub(crate) async fn accept(&mut self) -> Link {
        match self.links.recv().await {
            Some(link) => link,
            None => std::future::pending().await,
        }
    }
}

/// Dials through a socket task.
pub(crate) async fn dial_on(
    commands: &mpsc::Sender<Command>,
    addr: SocketAddr,
    expected: Option<NodeId>,
) -> Result<Link, LinkError> {
    let (reply, result) = oneshot::channel();
    commands.send(Command::Dial { addr, expected, reply }).await.map_err(|_| LinkError::SocketClosed)?;
    result.await.unwrap_or(Err(LinkError::SocketClosed))
}

/// Moves a link of a socket task to another remote address.
pub(crate) async fn set_remote_on(
    commands: &mpsc::Sender<Command>,
    id: LinkId,
    addr: SocketAddr,
) -> Result<(), LinkError> {
    let (reply, result) = oneshot::channel();
    commands.send(Command::SetRemote { id, addr, reply }).await.map_err(|_| LinkError::SocketClosed)?;
    result.await.unwrap_or(Err(LinkError::SocketClosed))
}

/// Dials from a fresh ephemeral socket whose task ends with its one link.
pub(crate) async fn dial_ephemeral(
    addr: SocketAddr,
    sec: Arc<LinkSecurity>,
    expected: Option<NodeId>,
) -> Result<Link, LinkError> {
    let any: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let (task, commands, stop) = SocketTask::bind(any, sec, None).await?;
    let local = task.local;
    tokio::spawn(async move {
        // The task stops by itself when its link ends.
        let _stop = stop;
        task.run().instrument(tracing::info_span!("dtls_socket", %local)).await;
    });
    dial_on(&commands, addr, expected).await
}

/// What a session does once its handshake is done.
enum Purpose {
    Accept,
    Dial { expected: Option<NodeId>, reply: oneshot::Sender<Result<Link, LinkError>> },
}

struct Session {
    machine: DtlsLink,
    remote: SocketAddr,
    purpose: Option<Purpose>,
    /// Where its events go once the link is handed out.
    events: Option<mpsc::Sender<LinkEvent>>,
    /// Its entry in the timer set.
    deadline: Option<Instant>,
}

/// The sessions of one remote address.
struct Entry {
    main: LinkId,
    /// A new handshake from the address of an established link.
    candidate: Option<LinkId>,
}

struct SocketTask {
    socket: UdpSocket,
    local: SocketAddr,
    sec: Arc<LinkSecurity>,
    ctx: DtlsContexts,
    sessions: HashMap<LinkId, Session>,
    by_addr: HashMap<SocketAddr, Entry>,
    timers: BTreeSet<(Instant, LinkId)>,
    /// Links whose event channel was full when they had events.
    lagging: BTreeSet<LinkId>,
    accepted: Option<mpsc::UnboundedSender<Link>>,
    counters: Arc<Counters>,
    ids: LinkIds,
    commands_tx: mpsc::Sender<Command>,
    commands: mpsc::Receiver<Command>,
    closes_tx: mpsc::UnboundedSender<LinkId>,
    closes: mpsc::UnboundedReceiver<LinkId>,
    stop: oneshot::Receiver<()>,
}

impl SocketTask {
    async fn bind(
        addr: SocketAddr,
        sec: Arc<LinkSecurity>,
        accepted: Option<mpsc::UnboundedSender<Link>>,
    ) -> Result<(Self, mpsc::Sender<Command>, oneshot::Sender<()>), LinkError> {
        let mut secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut secret)?;
        let ctx = DtlsContexts::new(&sec, &secret)?;
        let socket = UdpSocket::bind(addr).await?;
        // Sends use `try_send_to`, which only tries once tokio has seen the
        // socket writable: have it seen now, or the first datagram is lost.
        socket.writable().await?;
        let local = socket.local_addr()?;
        let (commands_tx, commands) = mpsc::channel(SEND_QUEUE);
        let (closes_tx, closes) = mpsc::unbounded_channel();
        let (stop_tx, stop) = oneshot::channel();
        let task = SocketTask {
            socket,
            local,
            sec,
            ctx,
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BTreeSet::new(),
            lagging: BTreeSet::new(),
            accepted,
            counters: Arc::new(Counters::default()),
            ids: LinkIds::default(),
            commands_tx: commands_tx.clone(),
            commands,
            closes_tx,
            closes,
            stop,
        };
        Ok((task, commands_tx, stop_tx))
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; 65536];
        loop {
            let next_timer = self.timers.first().map(|(t, _)| tokio::time::Instant::from_std(*t));
            let retry = !self.lagging.is_empty();
            tokio::select! {
                biased;
                _ = &mut self.stop => return self.shutdown("socket closed"),
                () = sleep_until(next_timer) => self.fire_timers(Instant::now()),
                Some(id) = self.closes.recv() => self.on_close(id),
                Some(cmd) = self.commands.recv() => {
                    self.on_command(cmd);
                    for _ in 1..COMMAND_BATCH {
                        let Ok(cmd) = self.commands.try_recv() else { break };
                        self.on_command(cmd);
                    }
                }
                r = self.socket.recv_from(&mut buf) => {
                    self.on_received(r, &buf);
                    for _ in 1..RECV_BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            r => self.on_received(r, &buf),
                        }
                    }
                }
                () = tokio::time::sleep(RETRY_EVENTS), if retry => {
                    let ids: Vec<LinkId> = std::mem::take(&mut self.lagging).into_iter().collect();
                    ids.into_iter().for_each(|id| self.settle(id));
                }
            }
            if self.accepted.is_none() && self.sessions.is_empty() {
                // A dial-only socket whose link has ended.
                return;
            }
        }
    }

    fn on_received(&mut self, r: io::Result<(usize, SocketAddr)>, buf: &[u8]) {
        match r {
            Ok((n, from)) => self.route(Instant::now(), from, buf.get(..n).unwrap_or_default()),
            // E.g. an ICMP error reported on the socket: not fatal.
            Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
        }
    }

    /// RFC 7983 first, then the link of the source address, or a new
    /// server machine for a ClientHello, or the floor.
    fn route(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match classify(datagram) {
            PacketClass::Dtls => {}
            class => {
                // STUN will go to ICE, ChannelData to TURN; none run here yet.
                if class == PacketClass::Stun {
                    Counters::bump(&self.counters.stun);
                }
                Counters::bump(&self.counters.ignored);
                tracing::trace!(peer = %from, ?class, len = datagram.len(), "non-DTLS datagram dropped");
                return;
            }
        }
        let hello = is_client_hello(datagram);
        let Some(entry) = self.by_addr.get(&from) else { return self.new_peer(now, from, datagram, hello) };
        let (main, candidate) = (entry.main, entry.candidate);
        if !hello {
            self.feed(now, main, datagram);
            if let Some(c) = candidate {
                self.feed(now, c, datagram);
            }
            return;
        }
        if let Some(c) = candidate {
            return self.feed(now, c, datagram);
        }
        let Some(s) = self.sessions.get(&main) else { return };
        if s.machine.is_handshaking() {
            match s.machine.role() {
                Role::Server => self.feed(now, main, datagram),
                Role::Client => self.simultaneous_open(now, from, main, datagram),
            }
        } else if self.accepted.is_some() && self.pending() < MAX_PENDING_HANDSHAKES {
            tracing::debug!(peer = %from, "new handshake from the address of an established link");
            if let Some(id) = self.new_server(now, from, Purpose::Accept) {
                if let Some(e) = self.by_addr.get_mut(&from) {
                    e.candidate = Some(id);
                }
                self.feed(now, id, datagram);
            }
        }
    }

    fn new_peer(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], hello: bool) {
        if !hello || self.accepted.is_none() {
            Counters::bump(&self.counters.ignored);
            tracing::debug!(peer = %from, len = datagram.len(), "ignored datagram from an unknown address");
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS || self.pending() >= MAX_PENDING_HANDSHAKES {
            Counters::bump(&self.counters.rejected);
            // Could be a flood of spoofed hellos: no warning per datagram.
            tracing::debug!(peer = %from, sessions = self.sessions.len(), "ClientHello refused: session limit");
            return;
        }
        if let Some(id) = self.new_server(now, from, Purpose::Accept) {
            self.by_addr.insert(from, Entry { main: id, candidate: None });
            self.feed(now, id, datagram);
        }
    }

    /// Both ends dialed each other from their listening sockets: one
    /// 5-tuple, two ClientHellos. The smaller ClientHello random keeps the
    /// client role; the larger side's dial becomes the server of the
    /// other's handshake. Both ends compare the same two randoms, so they
    /// agree without another round trip.
    fn simultaneous_open(&mut self, now: Instant, from: SocketAddr, ours: LinkId, hello: &[u8]) {
        let mine = self.sessions.get(&ours).and_then(|s| s.machine.client_random());
        let (Some(mine), Some(theirs)) = (mine, client_hello_random(hello)) else { return };
        if mine <= theirs {
            tracing::debug!(peer = %from, "simultaneous open: we keep the client role");
            return;
        }
        tracing::debug!(peer = %from, "simultaneous open: our dial becomes the server side");
        let Some(old) = self.remove(ours) else { return };
        let purpose = old.purpose.unwrap_or(Purpose::Accept);
        if let Some(id) = self.new_server(now, from, purpose) {
            self.by_addr.insert(from, Entry { main: id, candidate: None });
            self.feed(now, id, hello);
        }
    }

    fn new_server(&mut self, now: Instant, from: SocketAddr, purpose: Purpose) -> Option<LinkId> {
        let binding = from.to_string();
        match DtlsLink::server(&self.ctx, &self.sec, now, unix_now(), binding.as_bytes()) {
            Ok(machine) => Some(self.insert(machine, from, purpose)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a DTLS server session");
                if let Purpose::Dial { reply, .. } = purpose {
                    let _ = reply.send(Err(e));
                }
                None
            }
        }
    }

    fn insert(&mut self, machine: DtlsLink, remote: SocketAddr, purpose: Purpose) -> LinkId {
        let id = self.ids.next();
        let s = Session { machine, remote, purpose: Some(purpose), events: None, deadline: None };
        self.sessions.insert(id, s);
        id
    }

    fn pending(&self) -> usize {
        self.sessions.values().filter(|s| s.machine.is_handshaking()).count()
    }

    fn feed(&mut self, now: Instant, id: LinkId, datagram: &[u8]) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.machine.handle_datagram(now, datagram);
        }
        self.settle(id);
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Send(id, message) => {
                let Some(s) = self.sessions.get_mut(&id) else { return };
                if let Err(e) = s.machine.send(now, message) {
                    Counters::bump(&self.counters.send_drops);
                    tracing::debug!(%id, error = %e, "message dropped");
                }
                self.settle(id);
            }
            Command::Dial { addr, expected, reply } => self.dial(now, addr, expected, reply),
            Command::SetRemote { id, addr, reply } => {
                let _ = reply.send(self.set_remote(id, addr));
            }
        }
    }

    fn dial(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expected: Option<NodeId>,
        reply: oneshot::Sender<Result<Link, LinkError>>,
    ) {
        if let Some(entry) = self.by_addr.get(&addr) {
            let main = entry.main;
            match self.sessions.get_mut(&main) {
                // The peer is already handshaking with us as client: our
                // dial is folded into that handshake.
                Some(s) if s.machine.is_handshaking() && matches!(s.purpose, Some(Purpose::Accept)) => {
                    tracing::debug!(peer = %addr, "dial folded into the peer's handshake");
                    s.purpose = Some(Purpose::Dial { expected, reply });
                }
                _ => {
                    let _ = reply.send(Err(LinkError::Busy(addr)));
                }
            }
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS {
            let _ = reply.send(Err(LinkError::TooManySessions));
            return;
        }
        match DtlsLink::client(&self.ctx, &self.sec, now, unix_now(), expected) {
            Ok(machine) => {
                let id = self.insert(machine, addr, Purpose::Dial { expected, reply });
                self.by_addr.insert(addr, Entry { main: id, candidate: None });
                self.settle(id);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Moves a link to `addr`: its datagrams go there, and datagrams from
    /// there reach it (ICE will call this when it selects a new pair).
    fn set_remote(&mut self, id: LinkId, addr: SocketAddr) -> Result<(), LinkError> {
        let old = self.sessions.get(&id).ok_or(LinkError::NoSuchLink)?.remote;
        if old == addr {
            return Ok(());
        }
        if self.by_addr.contains_key(&addr) {
            return Err(LinkError::Busy(addr));
        }
        self.unmap(id, old);
        self.by_addr.insert(addr, Entry { main: id, candidate: None });
        if let Some(s) = self.sessions.get_mut(&id) {
            s.remote = addr;
        }
        tracing::debug!(%id, from = %old, to = %addr, "link moved to a new remote address");
        Ok(())
    }

    fn on_close(&mut self, id: LinkId) {
        // Messages queued before the last sender went come first.
        while let Ok(cmd) = self.commands.try_recv() {
            self.on_command(cmd);
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            s.machine.close(Instant::now());
        }
        self.settle(id);
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, id));
            if let Some(s) = self.sessions.get_mut(&id) {
                s.deadline = None;
                s.machine.handle_timeout(now);
            }
            self.settle(id);
        }
    }

    /// After any input to a machine: send its datagrams, hand out its
    /// events, re-arm its timer, and forget it when it is finished.
    fn settle(&mut self, id: LinkId) {
        let Some(mut s) = self.sessions.remove(&id) else { return };
        self.flush(&mut s);
        let mut finished = false;
        loop {
            if s.events.as_ref().is_some_and(|tx| tx.capacity() == 0) {
                // The owner lags: the machine keeps the events (and stops
                // ACKing once it holds too many); offered again soon.
                self.lagging.insert(id);
                break;
            }
            let Some(ev) = s.machine.poll_event() else { break };
            match ev {
                Event::Connected(peer) => {
                    let kind = LinkKind::DtlsUdpSrNoIce;
                    let (commands, closes) = (self.commands_tx.clone(), self.closes_tx.clone());
                    let (link, events) = new_link(id, peer, s.remote, kind, commands, closes);
                    s.events = Some(events);
                    let purpose = s.purpose.take();
                    self.hand_out(id, link, purpose);
                }
                Event::Message(m) => {
                    if let Some(tx) = &s.events {
                        let _ = tx.try_send(LinkEvent::Message(m));
                    }
                }
                Event::Closed(reason) => {
                    tracing::debug!(%id, %reason, "DTLS link closed");
                    if let Some(tx) = &s.events {
                        let _ = tx.try_send(LinkEvent::Closed(reason));
                    }
                    finished = true;
                }
                Event::Failed(e) => {
                    self.on_failed(&mut s, e);
                    finished = true;
                }
            }
        }
        let done = finished || s.machine.is_done();
        let deadline = if done { None } else { s.machine.poll_timeout() };
        if s.deadline != deadline {
            if let Some(old) = s.deadline {
                self.timers.remove(&(old, id));
            }
            if let Some(new) = deadline {
                self.timers.insert((new, id));
            }
            s.deadline = deadline;
        }
        if done {
            self.lagging.remove(&id);
            self.unmap(id, s.remote);
        } else {
            self.sessions.insert(id, s);
        }
    }

    fn flush(&self, s: &mut Session) {
        while let Some(d) = s.machine.poll_transmit() {
            // UDP may lose datagrams anyway: a full send buffer is one more
            // loss for DTLS or Simple Reliability to repair, never a wait.
            if let Err(e) = self.socket.try_send_to(&d, s.remote) {
                tracing::trace!(error = %e, len = d.len(), "datagram not sent");
            }
        }
    }

    fn on_failed(&self, s: &mut Session, e: LinkError) {
        match s.purpose.take() {
            Some(Purpose::Dial { reply, .. }) => {
                let _ = reply.send(Err(e));
            }
            _ => {
                Counters::bump(&self.counters.rejected);
                tracing::warn!(peer = %s.remote, reason = %e, "refused DTLS peer");
            }
        }
    }

    /// A handshake finished: the link goes to its dialer or the listener;
    /// a candidate replaces the link it was started beside.
    fn hand_out(&mut self, id: LinkId, link: Link, purpose: Option<Purpose>) {
        let remote = link.remote;
        tracing::debug!(%id, peer = %remote, node = %link.peer.label(), "DTLS link up");
        if let Some(entry) = self.by_addr.get_mut(&remote)
            && entry.candidate == Some(id)
        {
            let old = std::mem::replace(&mut entry.main, id);
            entry.candidate = None;
            if let Some(s) = self.sessions.get_mut(&old) {
                s.machine.abort("replaced by a new session from the same address");
            }
            self.settle_detached(old);
        }
        let link = match purpose {
            Some(Purpose::Dial { expected, reply }) => match expected {
                Some(want) if !link.peer.node_ids.contains(&want) => {
                    // A folded dial met another node: it fails, the link is
                    // still a good incoming one.
                    let found = link.peer.node_ids.iter().map(|n| n.to_hex()).collect();
                    let _ = reply.send(Err(LinkError::WrongNodeId { expected: want, found }));
                    link
                }
                _ => match reply.send(Ok(link)) {
                    Ok(()) => return,
                    // The dialer gave up: dropping the link closes it.
                    Err(_) => return,
                },
            },
            _ => link,
        };
        match &self.accepted {
            Some(tx) => {
                let _ = tx.send(link);
            }
            None => drop(link),
        }
    }

    /// Finishes a session that no longer owns its address (replaced).
    fn settle_detached(&mut self, id: LinkId) {
        let Some(mut s) = self.sessions.remove(&id) else { return };
        self.flush(&mut s);
        while let Some(ev) = s.machine.poll_event() {
            if let (Event::Closed(reason), Some(tx)) = (ev, &s.events) {
                let _ = tx.try_send(LinkEvent::Closed(reason));
            }
        }
        if let Some(old) = s.deadline {
            self.timers.remove(&(old, id));
        }
        self.lagging.remove(&id);
    }

    fn remove(&mut self, id: LinkId) -> Option<Session> {
        let s = self.sessions.remove(&id)?;
        if let Some(t) = s.deadline {
            self.timers.remove(&(t, id));
        }
        self.lagging.remove(&id);
        self.unmap(id, s.remote);
        Some(s)
    }

    fn unmap(&mut self, id: LinkId, addr: SocketAddr) {
        let Some(entry) = self.by_addr.get_mut(&addr) else { return };
        if entry.main == id {
            match entry.candidate.take() {
                Some(c) => entry.main = c,
                None => {
                    self.by_addr.remove(&addr);
                }
            }
        } else if entry.candidate == Some(id) {
            entry.candidate = None;
        }
    }

    /// The listener was dropped: every link ends, the peers are told.
    fn shutdown(mut self, reason: &str) {
        let sessions = std::mem::take(&mut self.sessions);
        for mut s in sessions.into_values() {
            s.machine.abort(reason);
            self.flush(&mut s);
            // Best effort: an owner that lags misses it and sees the
            // channel close instead.
            if let Some(tx) = &s.events {
                let _ = tx.try_send(LinkEvent::Closed(reason.to_owned()));
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
