//! What a simulation measured: raw counters while it runs, and the report
//! (`--json`: one JSON object on the last line of stdout).

use std::collections::BTreeMap;

use serde::Serialize;

use super::net::{Micros, US_PER_S};
use super::options::{CryptoMode, SimOptions};
use super::reference::RingCheck;
use super::world::Simulation;
use crate::overlay::node::Counters;

/// Hop counts above this are counted in the last histogram bucket.
const MAX_HOPS: usize = 255;

/// Counters kept while the simulation runs.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub events: u64,
    pub timeouts: u64,
    pub timer_stalls: u64,
    pub messages: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub dropped_loss: u64,
    pub dropped_dead: u64,
    pub dropped_no_link: u64,
    pub dropped_partition: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub links_opened: u64,
    pub spawned: u64,
    pub spawn_errors: u64,
    pub joins: u64,
    pub join_us_total: u128,
    pub join_us_max: Micros,
    pub joined_events: u64,
    pub join_retries: u64,
    pub join_failures: u64,
    pub rejoins: u64,
    pub leaves: u64,
    pub crashes: u64,
    pub killed: u64,
    pub command_errors: u64,
    pub unmatched_completions: u64,
    pub abandoned: u64,
    pub stores: u64,
    pub stores_ok: u64,
    pub stores_skipped: u64,
    pub lookups: u64,
    pub lookups_ok: u64,
    pub lookups_correct: u64,
    pub hops: Vec<u64>,
    pub fetches: u64,
    pub fetches_ok: u64,
    /// Failed requests by "command: reason".
    pub failures: BTreeMap<String, u64>,
    /// Live-node microseconds, for per-node rates.
    pub node_us: u128,
    /// The machines' own counters, summed over nodes already gone.
    pub departed_totals: Counters,
}

/// The node machines' own counters, summed over every node.
impl Metrics {
    pub(super) fn note_join(&mut self, took: Micros) {
        self.joins += 1;
        self.join_us_total += u128::from(took);
        self.join_us_max = self.join_us_max.max(took);
    }

    pub(super) fn note_hops(&mut self, hops: u32) {
        let h = (hops as usize).min(MAX_HOPS);
        if self.hops.len() <= h {
            self.hops.resize(h + 1, 0);
        }
        if let Some(c) = self.hops.get_mut(h) {
            *c += 1;
        }
    }

    pub(super) fn note_failure(&mut self, what: &str, why: String) {
        *self.failures.entry(format!("{what}: {why}")).or_insert(0) += 1;
    }

    fn hops_mean(&self) -> Option<f64> {
        let n: u64 = self.hops.iter().sum();
        let total: u64 = self.hops.iter().enumerate().map(|(h, c)| h as u64 * c).sum();
        (n > 0).then(|| total as f64 / n as f64)
    }

    fn hops_quantile(&self, q: f64) -> Option<u64> {
        let n: u64 = self.hops.iter().sum();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (h, c) in self.hops.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(h as u64);
            }
        }
        None
    }
}

/// The outcome of `chordphone sim`. `wall_s` and `peak_rss_mb` are left
/// `null` by [`super::run`] (the simulation never reads the clock); the
/// CLI fills them in, so two runs with the same options compare equal.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SimReport {
    pub nodes: usize,
    pub seed: u64,
    pub crypto: CryptoMode,
    pub duration_s: f64,
    pub latency_ms: f64,
    pub loss: f64,
    pub session_median_s: Option<f64>,
    pub kill_fraction: f64,
    /// Virtual seconds simulated in all (build, workload, quiescence, checks).
    pub sim_s: f64,
    /// Virtual seconds until every initial node had joined (or gave up).
    pub build_s: f64,
    pub build_complete: bool,
    pub join_s_mean: Option<f64>,
    pub join_s_max: f64,
    pub live_nodes: usize,
    pub joined_nodes: usize,
    pub lookups: u64,
    pub lookup_success_rate: Option<f64>,
    /// Lookups that named the reference's responsible peer at completion.
    pub lookup_correct_rate: Option<f64>,
    pub hops_mean: Option<f64>,
    pub hops_p99: Option<u64>,
    /// Completed lookups by hop count (index = hops).
    pub hops_histogram: Vec<u64>,
    pub stores: u64,
    pub stores_ok: u64,
    /// Stores not issued: no joined peer without a record could be found.
    pub stores_skipped: u64,
    pub fetches: u64,
    pub fetch_success_rate: Option<f64>,
    /// After quiescence: stored records nobody could fetch although a live
    /// node holds a copy, or a node seen holding one is still alive
    /// (surveys every 5 simulated seconds). Must be 0.
    pub records_lost_with_live_replica: u64,
    /// Stored records not fetchable whose every known holder died.
    pub records_lost_all_replicas_dead: u64,
    /// After quiescence: records with a live copy that their responsible
    /// peer does not hold.
    pub records_not_at_responsible: u64,
    /// After quiescence: records held by fewer than 1 + replicas of the
    /// reference replica set.
    pub records_under_replicated: u64,
    pub ring_correct: bool,
    pub ring: RingCheck,
    /// Virtual seconds from the mass kill until the ring was correct and
    /// every record with a surviving copy sat at its responsible peer;
    /// `null` without a kill or if that never happened.
    pub repair_s: Option<f64>,
    pub killed: u64,
    pub departures_graceful: u64,
    pub departures_crash: u64,
    pub join_retries: u64,
    pub rejoins: u64,
    pub messages: u64,
    pub messages_per_node_per_s: Option<f64>,
    pub bytes_per_node_per_s: Option<f64>,
    pub dropped_loss: u64,
    pub dropped_dead: u64,
    pub dropped_no_link: u64,
    pub dropped_partition: u64,
    pub connect_failures: u64,
    pub command_errors: u64,
    /// Requests whose node crashed or left before they completed.
    pub requests_abandoned: u64,
    pub timer_stalls: u64,
    pub events: u64,
    /// Scripted phones (`--phones`).
    pub phones: usize,
    /// REGISTER procedures started (first registrations and re-homing).
    pub registrations: u64,
    pub registration_success_rate: Option<f64>,
    /// Phones of dead peers that registered at another peer.
    pub phones_rehomed: u64,
    /// Calls placed between registered phones whose serving peers were alive.
    pub calls: u64,
    /// Established / (established + failed), not counting calls whose
    /// serving peer died while they were set up.
    pub call_success_rate: Option<f64>,
    /// Calls that failed because a serving peer died meanwhile.
    pub calls_failed_node_lost: u64,
    /// Calls to phones re-registered at another peer after theirs died,
    /// placed after that REGISTER succeeded; and how many failed.
    pub calls_to_rehomed: u64,
    pub calls_to_rehomed_failed: u64,
    /// INVITE to ACK in virtual time (the callee answers at once).
    pub call_setup_ms_p50: Option<f64>,
    pub call_setup_ms_p99: Option<f64>,
    /// Seconds from the mass kill to the start of the last call that still
    /// failed (0 when none did); `null` without a kill.
    pub call_recovery_s: Option<f64>,
    pub sip_messages: u64,
    pub messages_delivered_rate: Option<f64>,
    /// Phones registered at a live peer whose AOR does not resolve to that
    /// peer through the overlay at the end. Must be 0.
    pub registrations_lost: u64,
    pub failures: BTreeMap<String, u64>,
    /// The node machines' counters summed over every node that ever ran.
    pub node_totals: Counters,
    /// Why the simulation could not run, if it could not.
    pub error: Option<String>,
    pub wall_s: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

impl SimReport {
    /// The single-line JSON object `--json` prints last.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A short human summary.
    pub fn summary(&self) -> String {
        let pct = |r: Option<f64>| r.map_or("n/a".to_owned(), |v| format!("{:.2}%", v * 100.0));
        let num = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
        let mut s = String::new();
        if let Some(e) = &self.error {
            s.push_str(&format!("simulation failed: {e}\n"));
        }
        s.push_str(&format!(
            "{} nodes, seed {}, {} crypto, {:.0} s simulated ({:.0} s build{})\n",
            self.nodes,
            self.seed,
            match self.crypto {
                CryptoMode::Real => "real",
                CryptoMode::Fast => "fast",
            },
            self.sim_s,
            self.build_s,
            if self.build_complete { "" } else { ", incomplete" }
        ));
        s.push_str(&format!(
            "ring: {} ({} live, {} joined, {} unjoined, {} wrong successors, {} wrong predecessors)\n",
            if self.ring_correct { "correct" } else { "WRONG" },
            self.live_nodes,
            self.joined_nodes,
            self.ring.unjoined,
            self.ring.wrong_successor,
            self.ring.wrong_predecessor
        ));
        s.push_str(&format!(
            "lookups: {} ({} ok, {} correct), hops mean {} p99 {}\n",
            self.lookups,
            pct(self.lookup_success_rate),
            pct(self.lookup_correct_rate),
            num(self.hops_mean),
            self.hops_p99.map_or("n/a".to_owned(), |h| h.to_string())
        ));
        s.push_str(&format!(
            "stores: {} ({} ok), fetches: {} ({} ok); lost with a live replica: {}, all replicas dead: {}\n",
            self.stores,
            self.stores_ok,
            self.fetches,
            pct(self.fetch_success_rate),
            self.records_lost_with_live_replica,
            self.records_lost_all_replicas_dead
        ));
        s.push_str(&format!(
            "churn: {} graceful, {} crashes, {} killed; repair {}\n",
            self.departures_graceful,
            self.departures_crash,
            self.killed,
            self.repair_s.map_or("n/a".to_owned(), |r| format!("{r:.0} s"))
        ));
        if self.phones > 0 {
            s.push_str(&format!(
                "phones: {} ({} registrations, {} ok, {} re-homed; {} lost), calls: {} ({} ok, setup p50 {} ms p99 {} ms), MESSAGEs: {} ({} delivered)\n",
                self.phones,
                self.registrations,
                pct(self.registration_success_rate),
                self.phones_rehomed,
                self.registrations_lost,
                self.calls,
                pct(self.call_success_rate),
                num(self.call_setup_ms_p50),
                num(self.call_setup_ms_p99),
                self.sip_messages,
                pct(self.messages_delivered_rate)
            ));
        }
        s.push_str(&format!("messages: {} ({} per node per s)", self.messages, num(self.messages_per_node_per_s)));
        if let Some(w) = self.wall_s {
            s.push_str(&format!("\nwall: {w:.1} s"));
        }
        if let Some(m) = self.peak_rss_mb {
            s.push_str(&format!(", peak RSS {m:.0} MB"));
        }
        s
    }

    /// A report for a simulation that could not start.
    pub(super) fn failed(opts: &SimOptions, error: String) -> Self {
        let mut r = empty(opts);
        r.error = Some(error);
        r
    }
}

/// Assembles the report once the final checks have run.
pub(super) fn build(sim: &Simulation, ring: RingCheck) -> SimReport {
    let m = &sim.metrics;
    let w = &sim.work;
    let rate = |ok: u64, n: u64| (n > 0).then(|| ok as f64 / n as f64);
    let node_s = m.node_us as f64 / US_PER_S as f64;
    let per_node_s = |v: u64| (node_s > 0.0).then(|| v as f64 / node_s);
    let secs = |us: Micros| us as f64 / US_PER_S as f64;
    let mut r = empty(&sim.opts);
    r.sim_s = secs(sim.now);
    r.build_s = secs(w.build_us);
    r.build_complete = w.build_complete;
    r.join_s_mean = (m.joins > 0).then(|| m.join_us_total as f64 / m.joins as f64 / US_PER_S as f64);
    r.join_s_max = secs(m.join_us_max);
    r.live_nodes = ring.live;
    r.joined_nodes = ring.joined;
    r.lookups = m.lookups;
    r.lookup_success_rate = rate(m.lookups_ok, m.lookups);
    r.lookup_correct_rate = rate(m.lookups_correct, m.lookups);
    r.hops_mean = m.hops_mean();
    r.hops_p99 = m.hops_quantile(0.99);
    r.hops_histogram = m.hops.clone();
    r.hops_histogram = m.hops.clone();
    r.stores = m.stores;
    r.stores_ok = m.stores_ok;
    r.stores_skipped = m.stores_skipped;
    r.fetches = m.fetches;
    r.fetch_success_rate = rate(m.fetches_ok, m.fetches);
    r.records_lost_with_live_replica = w.lost_with_live_replica;
    r.records_lost_all_replicas_dead = w.lost_all_replicas_dead;
    r.records_not_at_responsible = w.not_at_responsible;
    r.records_under_replicated = w.under_replicated;
    r.ring_correct = ring.correct;
    r.ring = ring;
    r.repair_s = w.repair_us.map(secs);
    r.killed = m.killed;
    r.departures_graceful = m.leaves;
    r.departures_crash = m.crashes;
    r.join_retries = m.join_retries;
    r.rejoins = m.rejoins;
    r.messages = m.messages;
    r.messages_per_node_per_s = per_node_s(m.messages);
    r.bytes_per_node_per_s = per_node_s(m.bytes);
    r.dropped_loss = m.dropped_loss;
    r.dropped_dead = m.dropped_dead;
    r.dropped_no_link = m.dropped_no_link;
    r.dropped_partition = m.dropped_partition;
    r.connect_failures = m.connect_failures;
    r.command_errors = m.command_errors;
    r.requests_abandoned = m.abandoned;
    r.timer_stalls = m.timer_stalls;
    r.events = m.events;
    let p = &sim.phone_metrics;
    r.phones = sim.phones.list.len();
    r.registrations = p.registrations;
    r.registration_success_rate = rate(p.registrations_ok, p.registrations);
    r.phones_rehomed = p.rehomed;
    r.calls = p.calls;
    r.call_success_rate = rate(p.calls_ok, p.calls_ok + p.calls_failed);
    r.calls_failed_node_lost = p.calls_failed_node_lost;
    r.calls_to_rehomed = p.calls_to_rehomed;
    r.calls_to_rehomed_failed = p.calls_to_rehomed_failed;
    let mut setup = p.setup_us.clone();
    setup.sort_unstable();
    let q = |f: f64| {
        let i = ((setup.len() as f64 - 1.0) * f).round() as usize;
        setup.get(i).map(|us| *us as f64 / 1000.0)
    };
    r.call_setup_ms_p50 = q(0.5);
    r.call_setup_ms_p99 = q(0.99);
    r.call_recovery_s = w.kill_time.map(|k| p.last_failure_after_kill.map_or(0.0, |t| secs(t.saturating_sub(k))));
    r.sip_messages = p.messages;
    r.messages_delivered_rate = rate(p.messages_ok, p.messages);
    r.registrations_lost = p.registrations_lost;
    r.failures = m.failures.clone();
    let mut totals = m.departed_totals;
    for s in sim.alive.values() {
        if let Some(node) = sim.slot(*s).and_then(|sl| sl.overlay()) {
            totals.add(&node.counters());
        }
    }
    r.node_totals = totals;
    r.error = w.error.clone();
    r
}

fn empty(opts: &SimOptions) -> SimReport {
    SimReport {
        nodes: opts.nodes,
        seed: opts.seed,
        crypto: opts.crypto,
        duration_s: opts.duration,
        latency_ms: opts.latency_ms,
        loss: opts.loss,
        session_median_s: opts.session_median,
        kill_fraction: opts.kill_fraction,
        ..SimReport::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_statistics() {
        let mut m = Metrics::default();
        assert_eq!(m.hops_mean(), None);
        assert_eq!(m.hops_quantile(0.99), None);
        for h in [1, 2, 2, 3, 300] {
            m.note_hops(h);
        }
        assert_eq!(m.hops_mean(), Some((1 + 2 + 2 + 3 + 255) as f64 / 5.0));
        assert_eq!(m.hops_quantile(0.5), Some(2));
        assert_eq!(m.hops_quantile(0.99), Some(255));
        assert_eq!(m.hops_quantile(0.2), Some(1));
    }

    #[test]
    fn json_is_one_line_with_the_required_fields() {
        let r = empty(&SimOptions::default());
        let j = r.to_json();
        assert!(!j.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        for k in [
            "nodes",
            "seed",
            "lookups",
            "lookup_success_rate",
            "hops_mean",
            "hops_p99",
            "hops_histogram",
            "hops_histogram",
            "stores",
            "fetch_success_rate",
            "records_lost_with_live_replica",
            "records_lost_all_replicas_dead",
            "ring_correct",
            "repair_s",
            "messages_per_node_per_s",
            "wall_s",
            "peak_rss_mb",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["crypto"], "real");
        assert!(v["repair_s"].is_null());
    }
}
