//! The `[dataplane]` section of `node.toml`.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// Most workers a node starts (one socket and one thread each).
pub const MAX_WORKERS: usize = 256;

/// Where and how the data-plane workers run.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataPlaneSettings {
    /// Start the workers at all; when false, `forward add` is refused.
    pub enabled: bool,
    /// Worker threads, each owning one UDP socket; 0 means one per CPU.
    pub workers: usize,
    /// The address the workers' sockets bind to.
    pub address: IpAddr,
    /// Worker `w` binds `port_base + w`; 0 lets the OS pick each port.
    pub port_base: u16,
    /// Bound of each worker's command queue; an install that finds it
    /// full is refused (the caller may retry), never blocked on.
    pub queue_depth: usize,
    /// Most forwarding entries installed at once (over all workers).
    pub max_entries: usize,
    /// SO_RCVBUF/SO_SNDBUF asked for each socket, in bytes (the kernel caps
    /// it at net.core.rmem_max/wmem_max). A deep receive buffer absorbs a
    /// worker being descheduled for a few milliseconds without loss.
    pub socket_buffer: usize,
}

impl Default for DataPlaneSettings {
    fn default() -> Self {
        DataPlaneSettings {
            enabled: true,
            workers: 0,
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port_base: 0,
            queue_depth: 1024,
            max_entries: 65_536,
            socket_buffer: 4 << 20,
        }
    }
}

impl DataPlaneSettings {
    /// The number of workers to start: `workers`, or one per CPU.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// Why these settings are unusable: (key, message).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.workers > MAX_WORKERS {
            return Some(("dataplane.workers", format!("at most {MAX_WORKERS}")));
        }
        if self.queue_depth == 0 {
            return Some(("dataplane.queue_depth", "must be at least 1".into()));
        }
        if self.max_entries == 0 {
            return Some(("dataplane.max_entries", "must be at least 1".into()));
        }
        let last = usize::from(self.port_base) + self.worker_count().saturating_sub(1);
        if self.port_base != 0 && last > usize::from(u16::MAX) {
            return Some(("dataplane.port_base", format!("port_base + workers - 1 = {last} is above 65535")));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_usable() {
        let d = DataPlaneSettings::default();
        assert_eq!(d.problem(), None);
        assert!(d.worker_count() >= 1);
        assert_eq!(DataPlaneSettings { workers: 3, ..d }.worker_count(), 3);
    }

    #[test]
    fn bad_values_are_named() {
        let d = DataPlaneSettings::default();
        assert_eq!(
            DataPlaneSettings { queue_depth: 0, ..d.clone() }.problem().map(|p| p.0),
            Some("dataplane.queue_depth")
        );
        assert_eq!(
            DataPlaneSettings { max_entries: 0, ..d.clone() }.problem().map(|p| p.0),
            Some("dataplane.max_entries")
        );
        assert_eq!(DataPlaneSettings { workers: 1000, ..d.clone() }.problem().map(|p| p.0), Some("dataplane.workers"));
        let p = DataPlaneSettings { workers: 4, port_base: 65_534, ..d }.problem();
        assert_eq!(p, Some(("dataplane.port_base", "port_base + workers - 1 = 65537 is above 65535".into())));
    }
}
