//! A data-plane worker: one thread owning one UDP socket, its entry table
//! and its packet memory. It sleeps in epoll until the socket is readable
//! or the control loop rings its eventfd, and forwards whole batches:
//! one `recvmmsg`, one hash lookup per datagram, one `sendmmsg`.

use std::collections::HashMap;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use super::batch::{BATCH, Batch};
use super::entry::{Action, Command, EntryCounters, EntryId, WorkerStats, bump};
use super::sys::{Epoll, Key, KeyHasher, RawAddr, Wake};

const TOKEN_WAKE: u64 = 0;
const TOKEN_SOCKET: u64 = 1;
/// Batches taken from the socket before commands are looked at again.
const BATCHES_PER_WAKE: usize = 16;

/// What a worker thread is given.
pub struct WorkerSpec {
    pub socket: UdpSocket,
    pub commands: Receiver<Command>,
    pub wake: Arc<Wake>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<WorkerStats>,
}

/// Which side of an entry a datagram came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

struct Entry {
    id: EntryId,
    /// Where a datagram from A goes (B), and from B (A).
    to_b: RawAddr,
    to_a: RawAddr,
    keys: [Key; 2],
    action: Action,
    counters: Arc<EntryCounters>,
}

/// The worker's entries: a slab, and its remote addresses mapped to slots.
#[derive(Default)]
struct Table {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_key: HashMap<Key, (usize, Side), KeyHasher>,
    by_id: HashMap<EntryId, usize>,
}

impl Table {
    fn apply(&mut self, cmd: Command, v6: bool) {
        match cmd {
            Command::Install { id, a, b, action, counters } => {
                // The control loop checked both addresses against the socket.
                let (Some(to_a), Some(to_b)) = (RawAddr::new(a, v6), RawAddr::new(b, v6)) else {
                    tracing::warn!(id, %a, %b, "entry not installed: address family of the socket");
                    return;
                };
                let keys = [Key::of(a), Key::of(b)];
                let entry = Entry { id, to_b, to_a, keys, action, counters };
                let slot = match self.free.pop() {
                    Some(s) => {
                        if let Some(place) = self.slots.get_mut(s) {
                            *place = Some(entry);
                        }
                        s
                    }
                    None => {
                        self.slots.push(Some(entry));
                        self.slots.len() - 1
                    }
                };
                self.by_key.insert(keys[0], (slot, Side::A));
                self.by_key.insert(keys[1], (slot, Side::B));
                self.by_id.insert(id, slot);
            }
            Command::Remove { id } => {
                let Some(slot) = self.by_id.remove(&id) else { return };
                if let Some(entry) = self.slots.get_mut(slot).and_then(Option::take) {
                    for k in entry.keys {
                        self.by_key.remove(&k);
                    }
                    self.free.push(slot);
                    tracing::debug!(id = entry.id, "entry removed from its worker");
                }
            }
        }
    }

    fn lookup(&self, key: Key) -> Option<(usize, &Entry, Side)> {
        let &(slot, side) = self.by_key.get(&key)?;
        Some((slot, self.slots.get(slot)?.as_ref()?, side))
    }
}

/// The worker thread's body: returns when `stop` is set.
pub fn run(spec: WorkerSpec) -> io::Result<()> {
    let v6 = spec.socket.local_addr()?.is_ipv6();
    let fd = spec.socket.as_raw_fd();
    let epoll = Epoll::new()?;
    epoll.add(spec.wake.fd(), TOKEN_WAKE)?;
    epoll.add(fd, TOKEN_SOCKET)?;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
    let mut table = Table::default();
    let mut batch = Batch::new();
    // (slot, side, length) of each queued datagram, for the counters.
    let mut meta: Vec<(usize, Side, usize)> = Vec::with_capacity(BATCH);
    while !spec.stop.load(Ordering::Acquire) {
        let n = epoll.wait(&mut events, -1)?;
        for ev in events.iter().take(n) {
            if ev.u64 == TOKEN_WAKE {
                spec.wake.drain();
                while let Ok(cmd) = spec.commands.try_recv() {
                    table.apply(cmd, v6);
                }
            } else {
                drain_socket(fd, &table, &mut batch, &mut meta, &spec.stats)?;
            }
        }
    }
    Ok(())
}

/// Forwards what the socket holds, up to `BATCHES_PER_WAKE` batches.
fn drain_socket(
    fd: RawFd,
    table: &Table,
    batch: &mut Batch,
    meta: &mut Vec<(usize, Side, usize)>,
    stats: &WorkerStats,
) -> io::Result<()> {
    for _ in 0..BATCHES_PER_WAKE {
        let n = batch.recv(fd)?;
        if n == 0 {
            return Ok(());
        }
        bump(&stats.batches, 1);
        bump(&stats.received, n as u64);
        forward(fd, table, batch, meta, n, stats);
        if n < BATCH {
            return Ok(());
        }
    }
    Ok(())
}

/// Matches each of the `n` datagrams to its entry and sends the batch.
fn forward(
    fd: RawFd,
    table: &Table,
    batch: &mut Batch,
    meta: &mut Vec<(usize, Side, usize)>,
    n: usize,
    stats: &WorkerStats,
) {
    batch.clear_tx();
    meta.clear();
    for i in 0..n {
        let r = batch.received(i);
        let Some((slot, entry, side)) = r.source.and_then(|k| table.lookup(k)) else {
            bump(&stats.unmatched, 1);
            continue;
        };
        if r.truncated {
            bump(&entry.counters.drops, 1);
            bump(&stats.dropped, 1);
            continue;
        }
        match entry.action {
            Action::Forward => {
                let dest = if side == Side::A { &entry.to_b } else { &entry.to_a };
                batch.push_tx(i, r.len, dest);
                meta.push((slot, side, r.len));
            }
        }
    }
    let mut from = 0;
    while from < batch.tx_len() {
        let (sent, failed) = match batch.send(fd, from) {
            Ok(0) => (0, 1),
            Ok(k) => (k, 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Datagram `from` itself failed (e.g. no route): drop it alone.
            Err(e) => {
                tracing::trace!(error = %e, "data-plane send failed");
                (0, 1)
            }
        };
        for &(slot, side, len) in meta.iter().skip(from).take(sent + failed) {
            count(table, slot, side, len, failed == 0, stats);
        }
        from += sent + failed;
    }
}

fn count(table: &Table, slot: usize, side: Side, len: usize, sent: bool, stats: &WorkerStats) {
    let Some(Some(entry)) = table.slots.get(slot) else { return };
    if !sent {
        bump(&entry.counters.drops, 1);
        bump(&stats.dropped, 1);
        return;
    }
    match side {
        Side::A => entry.counters.a_to_b.add(len),
        Side::B => entry.counters.b_to_a.add(len),
    }
    bump(&stats.forwarded, 1);
    bump(&stats.forwarded_bytes, len as u64);
}
