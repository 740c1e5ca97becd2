//! A short-lived cache of where AORs are served (sans-IO).
//!
//! RFC 7904 §4 has a proxy Fetch the callee's SIP-REGISTRATION for every
//! request; a phone that calls the same AOR again seconds later (a call
//! followed by its re-INVITE-less retry, a MESSAGE burst, a PBX trunk) would
//! pay a signed overlay round trip each time. The edge remembers the serving
//! nodes of a successful Fetch for a few seconds and forgets them as soon as
//! a request forwarded on their strength fails (timeout, 404/408/480/500/503
//! from the node), so a moved or vanished registration costs at most one
//! failed request. A TTL of zero disables the cache.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::account::NodeRef;

/// AOR → serving nodes, each entry valid for a fixed time.
#[derive(Debug)]
pub struct LocationCache {
    ttl: Duration,
    max_entries: usize,
    entries: HashMap<String, (Instant, Vec<NodeRef>)>,
    /// (expiry, AOR) in insertion order: all entries live the same `ttl`,
    /// so the front expires first. Entries replaced or forgotten leave a
    /// stale pair here that is skipped when it reaches the front.
    order: VecDeque<(Instant, String)>,
}

impl LocationCache {
    /// A cache keeping entries for `ttl`, at most `max_entries` at once
    /// (the oldest goes first beyond that).
    pub fn new(ttl: Duration, max_entries: usize) -> LocationCache {
        LocationCache { ttl, max_entries, entries: HashMap::new(), order: VecDeque::new() }
    }

    /// The serving nodes of `aor` if known and still fresh at `now`.
    pub fn get(&self, now: Instant, aor: &str) -> Option<&[NodeRef]> {
        match self.entries.get(aor) {
            Some((until, nodes)) if *until > now && !nodes.is_empty() => Some(nodes),
            _ => None,
        }
    }

    /// Remembers that `aor` is served by `nodes` (ignored when empty or
    /// when the cache is disabled).
    pub fn put(&mut self, now: Instant, aor: &str, nodes: Vec<NodeRef>) {
        if self.ttl.is_zero() || self.max_entries == 0 || nodes.is_empty() {
            return;
        }
        self.expire(now);
        let until = now + self.ttl;
        self.entries.insert(aor.to_owned(), (until, nodes));
        self.order.push_back((until, aor.to_owned()));
        while self.entries.len() > self.max_entries {
            let Some((at, old)) = self.order.pop_front() else { break };
            self.remove_if_same(&old, at);
        }
        // Stale pairs (replaced entries) never outnumber live ones by much.
        if self.order.len() > 2 * self.max_entries.max(self.entries.len()) {
            let entries = &self.entries;
            self.order.retain(|(at, a)| entries.get(a).is_some_and(|(u, _)| u == at));
        }
    }

    /// Drops what is known about `aor` (a request sent there failed).
    pub fn forget(&mut self, aor: &str) {
        self.entries.remove(aor);
    }

    /// Entries held (fresh or not yet swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((at, aor)) = self.order.pop_front() {
                self.remove_if_same(&aor, at);
            }
        }
    }

    /// Removes `aor` only if its entry is the one that expires at `at`.
    fn remove_if_same(&mut self, aor: &str, at: Instant) {
        if self.entries.get(aor).is_some_and(|(until, _)| *until == at) {
            self.entries.remove(aor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(b: u8) -> NodeRef {
        NodeRef([b; 16])
    }

    #[test]
    fn entries_live_for_the_ttl_and_can_be_forgotten() {
        let t0 = Instant::now(); // layering: allowed (test-only: the fake clock's origin)
        let mut c = LocationCache::new(Duration::from_secs(5), 100);
        assert_eq!(c.get(t0, "bob@example.org"), None);
        c.put(t0, "bob@example.org", vec![n(2), n(3)]);
        assert_eq!(c.get(t0 + Duration::from_secs(4), "bob@example.org"), Some(&[n(2), n(3)][..]));
        assert_eq!(c.get(t0 + Duration::from_secs(5), "bob@example.org"), None, "expired at the TTL");
        c.put(t0, "carol@example.org", vec![n(4)]);
        c.forget("carol@example.org");
        assert_eq!(c.get(t0, "carol@example.org"), None);
        // Empty node lists are not cached.
        c.put(t0, "dave@example.org", Vec::new());
        assert_eq!(c.get(t0, "dave@example.org"), None);
    }

    #[test]
    fn refresh_replaces_and_expiry_sweeps() {
        let t0 = Instant::now(); // layering: allowed (test-only: the fake clock's origin)
        let mut c = LocationCache::new(Duration::from_secs(5), 100);
        c.put(t0, "bob@example.org", vec![n(2)]);
        // Re-learned later elsewhere: the newer entry wins and outlives the
        // first one's expiry.
        c.put(t0 + Duration::from_secs(3), "bob@example.org", vec![n(7)]);
        c.put(t0 + Duration::from_secs(6), "x@example.org", vec![n(1)]);
        assert_eq!(c.get(t0 + Duration::from_secs(6), "bob@example.org"), Some(&[n(7)][..]));
        c.put(t0 + Duration::from_secs(9), "y@example.org", vec![n(1)]);
        assert_eq!(c.get(t0 + Duration::from_secs(9), "bob@example.org"), None);
        assert_eq!(c.len(), 2, "bob's entry was swept");
    }

    #[test]
    fn bounded_and_disabled() {
        let t0 = Instant::now(); // layering: allowed (test-only: the fake clock's origin)
        let mut c = LocationCache::new(Duration::from_secs(5), 2);
        for (i, aor) in ["a@x", "b@x", "c@x"].iter().enumerate() {
            c.put(t0 + Duration::from_millis(i as u64), aor, vec![n(1)]);
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(t0, "a@x"), None, "the oldest went first");
        assert!(c.get(t0, "c@x").is_some());
        let mut off = LocationCache::new(Duration::ZERO, 2);
        off.put(t0, "a@x", vec![n(1)]);
        assert!(off.is_empty());
    }
}
