//! What the control loop installs in a worker, and the counters the worker
//! reports back through shared atomics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// An entry's number, unique for the life of the node.
pub type EntryId = u64;

/// What a worker does with a datagram that matched an entry. Each entry
/// joins two remote addresses on one worker socket; the action applies in
/// both directions.
///
/// Later kinds (same table, same batch loop): a media leg that
/// unprotects SRTP from one side and protects it towards the other (or
/// transcodes); a TURN allocation (RFC 8656), keyed on its relay port for
/// peer data and on the client's address for ChannelData on the server
/// port, adding or stripping the 4-byte ChannelData header (§12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send the datagram unchanged to the other side.
    Forward,
}

/// A command to one worker.
pub enum Command {
    Install { id: EntryId, a: SocketAddr, b: SocketAddr, action: Action, counters: Arc<EntryCounters> },
    Remove { id: EntryId },
}

/// Packets and bytes sent in one direction.
#[derive(Debug, Default)]
pub struct Flow {
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// An entry's counters. The owning worker is the only writer, so it
/// adds with a plain load and store (no locked instruction per packet);
/// the control loop reads them at any time.
#[derive(Debug, Default)]
pub struct EntryCounters {
    pub a_to_b: Flow,
    pub b_to_a: Flow,
    /// Datagrams that matched but were not sent (truncated, send error).
    pub drops: AtomicU64,
}

/// Adds `n` to a counter only this thread writes.
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Flow {
    pub fn add(&self, bytes: usize) {
        bump(&self.packets, 1);
        bump(&self.bytes, bytes as u64);
    }

    pub fn snapshot(&self) -> FlowSnapshot {
        FlowSnapshot { packets: self.packets.load(Ordering::Relaxed), bytes: self.bytes.load(Ordering::Relaxed) }
    }
}

impl EntryCounters {
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            a_to_b: self.a_to_b.snapshot(),
            b_to_a: self.b_to_a.snapshot(),
            drops: self.drops.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowSnapshot {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    pub a_to_b: FlowSnapshot,
    pub b_to_a: FlowSnapshot,
    pub drops: u64,
}

/// One worker's totals over all its entries, past and present.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    /// Matched an entry but not sent.
    pub dropped: AtomicU64,
    /// From an address no entry names (dropped).
    pub unmatched: AtomicU64,
    /// `recvmmsg` calls that returned datagrams (received / batches is
    /// the mean batch size).
    pub batches: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub received: u64,
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    pub dropped: u64,
    pub unmatched: u64,
    pub batches: u64,
}

impl WorkerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: l(&self.received),
            forwarded: l(&self.forwarded),
            forwarded_bytes: l(&self.forwarded_bytes),
            dropped: l(&self.dropped),
            unmatched: l(&self.unmatched),
            batches: l(&self.batches),
        }
    }
}

impl std::ops::AddAssign for StatsSnapshot {
    fn add_assign(&mut self, o: StatsSnapshot) {
        self.received += o.received;
        self.forwarded += o.forwarded;
        self.forwarded_bytes += o.forwarded_bytes;
        self.dropped += o.dropped;
        self.unmatched += o.unmatched;
        self.batches += o.batches;
    }
}
