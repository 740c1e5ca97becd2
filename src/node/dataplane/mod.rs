//! The data plane: worker threads that forward UDP datagrams for entries
//! the control loop installs (docs/architecture.md, "Data plane").
//!
//! The control loop owns a [`DataPlane`]. Each worker owns one UDP socket
//! (sharded by socket) and a table of entries keyed by remote source
//! address, so one `recvmmsg` batch spans every entry of that socket.
//! Entries go to a worker through its bounded command queue; a full queue
//! refuses the install (the caller retries) rather than blocking the loop.
//! The workers report through atomics the control loop reads at will.

mod batch;
mod entry;
mod requests;
mod settings;
mod sys;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use thiserror::Error;

pub use entry::{Action, CountersSnapshot, EntryId, FlowSnapshot, StatsSnapshot};
pub use requests::ForwardRequest;
pub use settings::DataPlaneSettings;

use entry::{Command, EntryCounters, WorkerStats};
use sys::Wake;

/// Why an install or removal was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DataPlaneError {
    #[error("the data plane is disabled ([dataplane] enabled = false in node.toml)")]
    Disabled,
    #[error("{0} is not a usable remote address (unspecified, multicast, broadcast or port 0)")]
    BadAddress(SocketAddr),
    #[error("--from and --to are the same address {0}")]
    SameAddress(SocketAddr),
    #[error("{0} is this node's data-plane socket: forwarding there would loop")]
    Loop(SocketAddr),
    #[error("{addr} is already an address of entry {id}")]
    InUse { addr: SocketAddr, id: EntryId },
    #[error("{0} is IPv6 but the data plane listens on IPv4 ([dataplane] address)")]
    Family(SocketAddr),
    #[error("{0} entries are installed, the most [dataplane] max_entries allows")]
    Full(usize),
    #[error("worker {0}'s command queue is full ([dataplane] queue_depth); retry")]
    QueueFull(usize),
    #[error("worker {0} has stopped")]
    WorkerGone(usize),
    #[error("no entry {0}")]
    NoEntry(EntryId),
}

/// An installed entry as the control loop sees it.
#[derive(Clone, Debug)]
pub struct EntryInfo {
    pub id: EntryId,
    pub a: SocketAddr,
    pub b: SocketAddr,
    pub action: Action,
    pub worker: usize,
    /// The worker socket both sides send to.
    pub via: SocketAddr,
    counters: Arc<EntryCounters>,
}

impl EntryInfo {
    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }
}

struct WorkerHandle {
    local: SocketAddr,
    commands: SyncSender<Command>,
    wake: Arc<Wake>,
    stats: Arc<WorkerStats>,
    thread: Option<JoinHandle<()>>,
    entries: usize,
}

/// The control loop's handle on the workers. Dropping it stops and joins them.
pub struct DataPlane {
    settings: DataPlaneSettings,
    workers: Vec<WorkerHandle>,
    stop: Arc<AtomicBool>,
    entries: BTreeMap<EntryId, EntryInfo>,
    by_addr: HashMap<SocketAddr, EntryId>,
    next_id: EntryId,
}

impl DataPlane {
    /// Binds the workers' sockets and starts their threads (none when the
    /// settings disable the data plane).
    pub fn start(settings: &DataPlaneSettings) -> std::io::Result<DataPlane> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut dp = DataPlane {
            settings: settings.clone(),
            workers: Vec::new(),
            stop,
            entries: BTreeMap::new(),
            by_addr: HashMap::new(),
            next_id: 1,
        };
        if !settings.enabled {
            return Ok(dp);
        }
        for w in 0..settings.worker_count() {
            let handle = dp.spawn(w)?;
            dp.workers.push(handle);
        }
        let addrs: Vec<String> = dp.workers.iter().map(|w| w.local.to_string()).collect();
        tracing::info!(workers = dp.workers.len(), sockets = ?addrs, "data plane started");
        Ok(dp)
    }

    fn spawn(&self, w: usize) -> std::io::Result<WorkerHandle> {
        let port = match self.settings.port_base {
            0 => 0,
            base => u16::try_from(usize::from(base) + w).unwrap_or(0),
        };
        let addr = SocketAddr::new(self.settings.address, port);
        let socket = UdpSocket::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("worker {w} cannot bind {addr}: {e}")))?;
        sys::set_buffers(socket.as_raw_fd(), self.settings.socket_buffer)?;
        let local = socket.local_addr()?;
        let (commands, rx) = sync_channel(self.settings.queue_depth);
        let wake = Arc::new(Wake::new()?);
        let stats = Arc::new(WorkerStats::default());
        let spec = worker::WorkerSpec {
            socket,
            commands: rx,
            wake: Arc::clone(&wake),
            stop: Arc::clone(&self.stop),
            stats: Arc::clone(&stats),
        };
        let thread = std::thread::Builder::new().name(format!("dataplane-{w}")).spawn(move || {
            if let Err(e) = worker::run(spec) {
                tracing::error!(worker = w, error = %e, "data-plane worker stopped");
            }
        })?;
        Ok(WorkerHandle { local, commands, wake, stats, thread: Some(thread), entries: 0 })
    }

    /// The workers' socket addresses, in worker order.
    pub fn sockets(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.local).collect()
    }

    /// Installs an entry joining `a` and `b` on the least loaded worker.
    pub fn install(&mut self, a: SocketAddr, b: SocketAddr, action: Action) -> Result<&EntryInfo, DataPlaneError> {
        if self.workers.is_empty() {
            return Err(DataPlaneError::Disabled);
        }
        self.check(a, b)?;
        let (w, handle) =
            self.workers.iter_mut().enumerate().min_by_key(|(_, h)| h.entries).ok_or(DataPlaneError::Disabled)?;
        let id = self.next_id;
        let counters = Arc::new(EntryCounters::default());
        let cmd = Command::Install { id, a, b, action, counters: Arc::clone(&counters) };
        send(handle, w, cmd)?;
        handle.entries += 1;
        self.next_id += 1;
        self.by_addr.insert(a, id);
        self.by_addr.insert(b, id);
        let info = EntryInfo { id, a, b, action, worker: w, via: handle.local, counters };
        Ok(self.entries.entry(id).or_insert(info))
    }

    /// Removes entry `id`; returns it with its final counters.
    pub fn remove(&mut self, id: EntryId) -> Result<EntryInfo, DataPlaneError> {
        let info = self.entries.get(&id).ok_or(DataPlaneError::NoEntry(id))?;
        let w = info.worker;
        let handle = self.workers.get_mut(w).ok_or(DataPlaneError::WorkerGone(w))?;
        send(handle, w, Command::Remove { id })?;
        handle.entries = handle.entries.saturating_sub(1);
        let info = self.entries.remove(&id).ok_or(DataPlaneError::NoEntry(id))?;
        self.by_addr.remove(&info.a);
        self.by_addr.remove(&info.b);
        Ok(info)
    }

    pub fn entries(&self) -> impl Iterator<Item = &EntryInfo> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each worker's totals, in worker order.
    pub fn worker_stats(&self) -> Vec<StatsSnapshot> {
        self.workers.iter().map(|w| w.stats.snapshot()).collect()
    }

    /// The sum over all workers.
    pub fn totals(&self) -> StatsSnapshot {
        let mut t = StatsSnapshot::default();
        for s in self.worker_stats() {
            t += s;
        }
        t
    }

    fn check(&self, a: SocketAddr, b: SocketAddr) -> Result<(), DataPlaneError> {
        if a == b {
            return Err(DataPlaneError::SameAddress(a));
        }
        if self.entries.len() >= self.settings.max_entries {
            return Err(DataPlaneError::Full(self.entries.len()));
        }
        for addr in [a, b] {
            let ip = addr.ip();
            let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
            if addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
                return Err(DataPlaneError::BadAddress(addr));
            }
            if addr.is_ipv6() && !self.settings.address.is_ipv6() {
                return Err(DataPlaneError::Family(addr));
            }
            if self.is_own_socket(addr) {
                return Err(DataPlaneError::Loop(addr));
            }
        }
        for addr in [a, b] {
            if let Some(&id) = self.by_addr.get(&addr) {
                return Err(DataPlaneError::InUse { addr, id });
            }
        }
        Ok(())
    }

    /// Whether datagrams sent to `addr` would arrive at a worker socket.
    fn is_own_socket(&self, addr: SocketAddr) -> bool {
        self.workers.iter().filter(|w| w.local.port() == addr.port()).any(|w| {
            let bound = w.local.ip();
            if bound.is_unspecified() {
                sys::is_local(addr.ip())
            } else {
                sys::Key::of(SocketAddr::new(bound, 0)) == sys::Key::of(SocketAddr::new(addr.ip(), 0))
            }
        })
    }
}

/// Queues `cmd` for worker `w` and wakes it.
fn send(handle: &WorkerHandle, w: usize, cmd: Command) -> Result<(), DataPlaneError> {
    match handle.commands.try_send(cmd) {
        Ok(()) => {
            handle.wake.notify();
            Ok(())
        }
        Err(TrySendError::Full(_)) => {
            // Wake it anyway: the queue drains only when it runs.
            handle.wake.notify();
            Err(DataPlaneError::QueueFull(w))
        }
        Err(TrySendError::Disconnected(_)) => Err(DataPlaneError::WorkerGone(w)),
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in &self.workers {
            w.wake.notify();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests;
