//! The `chordphone sim` scenario: build a ring at `--join-rate`, then run
//! the workload (stores, lookups, fetches) with churn and an optional mass
//! failure for `--duration`, stop both and let the overlay settle for
//! `--quiesce`, and finally check the ring and every stored record against
//! the reference model.

use rand::RngExt;

use super::SimError;
use super::net::{Ev, Micros, SlotId, Step, US_PER_S};
use super::reference;
use super::report::{self, SimReport};
use super::world::{Pending, Simulation, secs_to_us};
use crate::overlay::{Command, Failure, Outcome};
use crate::wire::storage::{DataValue, StoredDataValue};
use crate::wire::{KindId, NodeId, ResourceId};

/// Options of `chordphone sim`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SimOptions {
    /// Peers in the ring (kept roughly constant under churn).
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Seed of every random choice; the same seed gives the same report.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated seconds of workload and churn, after the ring is built.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Joins per simulated second while building the ring.
    #[arg(long, default_value_t = 50.0)]
    pub join_rate: f64,
    /// Median session length in simulated seconds (exponential sessions);
    /// each departed peer is replaced by a fresh one. No churn if absent.
    #[arg(long)]
    pub session_median: Option<f64>,
    /// Fraction of churn departures that Leave gracefully; the rest crash.
    #[arg(long, default_value_t = 0.5)]
    pub graceful_fraction: f64,
    /// Fraction of live peers crashed at once at `--kill-at` (no Leave).
    #[arg(long, default_value_t = 0.0)]
    pub kill_fraction: f64,
    /// Seconds into the workload of the mass failure (default: half of
    /// `--duration`).
    #[arg(long)]
    pub kill_at: Option<f64>,
    /// One-way latency per message in milliseconds (±20 % seeded jitter).
    #[arg(long, default_value_t = 50.0)]
    pub latency_ms: f64,
    /// Probability that a message is dropped.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// How long a peer takes to notice a crashed or unreachable neighbor
    /// (link keepalive / retransmission timeout), in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub detect_ms: u64,
    /// Records stored during the first quarter of the workload, each by a
    /// different peer under its own user name (CHORDPHONE_TEST kind).
    #[arg(long, default_value_t = 0)]
    pub stores: usize,
    /// Requests per simulated second from random peers: half Lookups of
    /// random Resource-IDs, half Fetches of stored records.
    #[arg(long, default_value_t = 0.0)]
    pub lookups_per_s: f64,
    /// Simulated seconds after the workload (no churn, no requests) before
    /// the final checks.
    #[arg(long, default_value_t = 120.0)]
    pub quiesce: f64,
    /// Signatures: `real` (Ed25519 certificates from a simulated overlay
    /// CA) or `fast` (a cheap insecure stand-in for very large N).
    #[arg(long, value_enum, default_value_t = CryptoMode::Real)]
    pub crypto: CryptoMode,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: 100,
            seed: 1,
            duration: 60.0,
            join_rate: 50.0,
            session_median: None,
            graceful_fraction: 0.5,
            kill_fraction: 0.0,
            kill_at: None,
            latency_ms: 50.0,
            loss: 0.0,
            detect_ms: 2000,
            stores: 0,
            lookups_per_s: 0.0,
            quiesce: 120.0,
            crypto: CryptoMode::Real,
            json: false,
        }
    }
}

impl SimOptions {
    pub(super) fn validate(&self) -> Result<(), SimError> {
        let bad = |what: &str| Err(SimError::InvalidOption(what.to_owned()));
        let fraction = |v: f64| (0.0..=1.0).contains(&v);
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if self.nodes == 0 || self.nodes > u32::MAX as usize / 2 {
            return bad("--nodes must be at least 1");
        }
        if !(self.join_rate.is_finite() && self.join_rate > 0.0) {
            return bad("--join-rate must be positive");
        }
        if !fraction(self.loss) || !fraction(self.kill_fraction) || !fraction(self.graceful_fraction) {
            return bad("--loss, --kill-fraction and --graceful-fraction must be within [0, 1]");
        }
        if self.session_median.is_some_and(|m| !(m.is_finite() && m > 0.0)) {
            return bad("--session-median must be positive");
        }
        let times = [self.duration, self.latency_ms, self.lookups_per_s, self.quiesce, self.kill_at.unwrap_or(0.0)];
        if !times.into_iter().all(nonneg) {
            return bad("times and rates must be non-negative");
        }
        Ok(())
    }
}

/// Where signatures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoMode {
    Real,
    Fast,
}

/// Runs the whole scenario. Never fails: a simulation that cannot start
/// returns a report whose `error` says why.
pub fn run(opts: &SimOptions) -> SimReport {
    try_run(opts).unwrap_or_else(|e| SimReport::failed(opts, e.to_string()))
}

/// Runs the whole scenario.
pub fn try_run(opts: &SimOptions) -> Result<SimReport, SimError> {
    let mut sim = Simulation::new(opts)?;
    sim.build_ring();
    sim.start_workload();
    let end = sim.work.start + secs_to_us(opts.duration);
    sim.run_until(end);
    sim.work.phase = Phase::Quiesce;
    sim.run_until(end + secs_to_us(opts.quiesce));
    let ring = sim.final_check();
    Ok(report::build(&sim, ring))
}

/// Where the scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Phase {
    #[default]
    Build,
    Workload,
    Quiesce,
    Final,
}

/// One record the workload stored.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub resource: ResourceId,
    pub point: NodeId,
    pub value: Vec<u8>,
    pub acked: bool,
    pub final_fetch: Option<bool>,
}

/// The scenario's state.
#[derive(Debug, Default)]
pub(super) struct Workload {
    pub phase: Phase,
    pub start: Micros,
    pub build_us: Micros,
    pub build_complete: bool,
    pub records: Vec<Record>,
    /// Indices of acknowledged records.
    pub acked: Vec<usize>,
    pub kill_time: Option<Micros>,
    /// Acknowledged records with a live copy right after the kill.
    pub repair_set: Vec<usize>,
    pub repair_us: Option<Micros>,
    pub final_pending: usize,
    pub lost_with_live_replica: u64,
    pub lost_all_replicas_dead: u64,
    pub not_at_responsible: u64,
    pub under_replicated: u64,
    pub error: Option<String>,
}

/// A build gives up this long after the last spawn.
const BUILD_GRACE: Micros = 120 * US_PER_S;
/// The final fetches get this long to complete.
const FINAL_FETCH_LIMIT: Micros = 120 * US_PER_S;
/// Records live well past the end of any run.
const RECORD_LIFETIME_S: u32 = 30 * 86_400;

impl Simulation {
    /// Spawns `--nodes` peers at `--join-rate` and runs until all joined.
    pub(super) fn build_ring(&mut self) -> bool {
        let start = self.now;
        let n = self.opts.nodes;
        let gap = US_PER_S as f64 / self.opts.join_rate;
        for i in 0..n {
            self.queue.push(start + (i as f64 * gap) as Micros, Ev::Step(Step::Spawn));
        }
        let limit = start + (n.saturating_sub(1) as f64 * gap) as Micros + BUILD_GRACE;
        let target = self.metrics.spawned + self.metrics.spawn_errors + n as u64;
        let complete = loop {
            self.run_until((self.now + US_PER_S).min(limit));
            let spawned = self.metrics.spawned + self.metrics.spawn_errors >= target;
            if spawned && self.alive.len() == self.ring.len() + self.leaving {
                break true;
            }
            if self.now >= limit {
                break false;
            }
        };
        self.work.build_us = self.now - start;
        self.work.build_complete = complete;
        complete
    }

    /// Starts churn, the mass failure, stores and lookups.
    pub(super) fn start_workload(&mut self) {
        self.work.phase = Phase::Workload;
        self.work.start = self.now;
        let duration = secs_to_us(self.opts.duration);
        if self.opts.session_median.is_some() {
            let live: Vec<SlotId> = self.alive.values().copied().collect();
            for s in live {
                self.schedule_departure(s);
            }
        }
        if self.opts.kill_fraction > 0.0 {
            let at = self.opts.kill_at.map_or(duration / 2, secs_to_us);
            self.queue.push(self.now + at, Ev::Step(Step::Kill));
        }
        let k = self.opts.stores as u64;
        for n in 0..self.opts.stores {
            let at = self.now + (duration / 4) * n as u64 / k.max(1);
            self.queue.push(at, Ev::Step(Step::Store { n }));
        }
        if self.opts.lookups_per_s > 0.0 {
            self.queue.push(self.now, Ev::Step(Step::Lookup));
        }
    }

    /// Called for every new node: replacements get a session too.
    pub(super) fn on_spawned(&mut self, s: SlotId) {
        if self.work.phase == Phase::Workload && self.opts.session_median.is_some() {
            self.schedule_departure(s);
        }
    }

    fn schedule_departure(&mut self, s: SlotId) {
        let Some(median) = self.opts.session_median else { return };
        // Exponential with the given median: mean = median / ln 2.
        let u: f64 = 1.0 - self.rng.random::<f64>();
        let session = -u.ln() * median / std::f64::consts::LN_2;
        let at = self.now + secs_to_us(session);
        self.queue.push(at, Ev::Step(Step::Depart { slot: s }));
    }

    pub(super) fn step(&mut self, step: Step) {
        match step {
            Step::Spawn => self.spawn_logged(),
            Step::Rebootstrap { slot } => {
                let Some(sl) = self.slot_mut(slot) else { return };
                sl.rebootstrap_queued = false;
                if sl.alive() && !sl.joined && !sl.leaving {
                    self.metrics.join_retries += 1;
                    self.bootstrap_later(slot, 0);
                }
            }
            Step::Depart { slot } => self.depart(slot),
            Step::Kill => self.kill(),
            Step::Store { n } => self.store(n),
            Step::Lookup => self.lookup(),
            Step::RepairPoll => self.repair_poll(),
        }
    }

    fn spawn_logged(&mut self) {
        if let Err(e) = self.spawn_node() {
            self.metrics.spawn_errors += 1;
            self.work.error.get_or_insert(e.to_string());
        }
    }

    fn depart(&mut self, s: SlotId) {
        if self.work.phase != Phase::Workload || !self.slot(s).is_some_and(|sl| sl.alive() && !sl.leaving) {
            return;
        }
        if self.rng.random_bool(self.opts.graceful_fraction) {
            self.metrics.leaves += 1;
            if self.slot(s).is_some_and(|sl| sl.joined) {
                self.start_leave(s);
            } else {
                // Not in the ring yet: nothing to hand over, just go.
                self.remove_node(s, true);
            }
        } else {
            self.metrics.crashes += 1;
            self.remove_node(s, false);
        }
        self.spawn_logged();
    }

    /// Crashes `--kill-fraction` of the live peers at once.
    fn kill(&mut self) {
        let mut victims: Vec<SlotId> =
            self.alive.values().copied().filter(|&s| self.slot(s).is_some_and(|sl| !sl.leaving)).collect();
        let k = ((victims.len() as f64) * self.opts.kill_fraction).round() as usize;
        // Partial Fisher–Yates: the first k are a uniform sample.
        for i in 0..k.min(victims.len()) {
            let j = self.rng.random_range(i..victims.len());
            victims.swap(i, j);
        }
        victims.truncate(k);
        for s in victims {
            self.remove_node(s, false);
        }
        self.metrics.killed += k as u64;
        self.work.kill_time = Some(self.now);
        let acked = self.work.acked.clone();
        self.work.repair_set = acked.into_iter().filter(|&r| reference::live_holders(self, r) > 0).collect();
        self.queue.push(self.now + US_PER_S, Ev::Step(Step::RepairPoll));
    }

    fn repair_poll(&mut self) {
        if self.work.repair_us.is_some() || self.work.phase == Phase::Final {
            return;
        }
        let repaired = reference::check_ring(self).correct
            && self.work.repair_set.iter().all(|&r| reference::responsible_holds(self, r));
        match (repaired, self.work.kill_time) {
            (true, Some(t)) => self.work.repair_us = Some(self.now - t),
            _ => self.queue.push(self.now + US_PER_S, Ev::Step(Step::RepairPoll)),
        }
    }

    /// Store number `n`: a peer that has not stored yet stores a value
    /// under its own user name (the kind is USER-MATCH, §7.3.1).
    fn store(&mut self, n: usize) {
        if self.work.phase != Phase::Workload {
            return;
        }
        let mut who = None;
        for _ in 0..16 {
            match self.pick_joined(None, None) {
                Some(s) if !self.slot(s).is_some_and(|sl| sl.stored) => {
                    who = Some(s);
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        let Some(s) = who else {
            self.metrics.stores_skipped += 1;
            return;
        };
        let name = self.user_name(self.id_of(s)).into_bytes();
        let value = format!("value {n} of run {}", self.opts.seed).into_bytes();
        let resource = ResourceId::from_name(&name);
        let point = NodeId(resource.0.as_slice().try_into().unwrap_or_default());
        let rec = self.work.records.len();
        self.work.records.push(Record { resource, point, value: value.clone(), acked: false, final_fetch: None });
        if let Some(sl) = self.slot_mut(s) {
            sl.stored = true;
        }
        self.metrics.stores += 1;
        let cmd = Command::Store {
            resource_name: name,
            kind: KindId::CHORDPHONE_TEST,
            value: StoredDataValue::Single(DataValue::new(value)),
            lifetime_s: RECORD_LIFETIME_S,
        };
        if let Err(e) = self.issue(s, cmd, Pending::Store { rec }) {
            self.metrics.command_errors += 1;
            self.metrics.note_failure("store", format!("{e:?}"));
        }
    }

    /// One request from a random peer, then the next one is scheduled.
    fn lookup(&mut self) {
        if self.work.phase != Phase::Workload {
            return;
        }
        let gap = (US_PER_S as f64 / self.opts.lookups_per_s).max(1.0) as Micros;
        self.queue.push(self.now + gap, Ev::Step(Step::Lookup));
        let Some(s) = self.pick_joined(None, None) else { return };
        let fetch = !self.work.acked.is_empty() && self.rng.random_bool(0.5);
        if fetch {
            let i = self.rng.random_range(0..self.work.acked.len());
            let Some(&rec) = self.work.acked.get(i) else { return };
            self.metrics.fetches += 1;
            self.fetch(s, rec, false);
        } else {
            let point = NodeId::from_u128(self.rng.random());
            self.metrics.lookups += 1;
            let cmd = Command::Lookup { resource: point.to_resource() };
            if let Err(e) = self.issue(s, cmd, Pending::Lookup { point }) {
                self.metrics.command_errors += 1;
                self.metrics.note_failure("lookup", format!("{e:?}"));
            }
        }
    }

    fn fetch(&mut self, s: SlotId, rec: usize, last: bool) -> bool {
        let Some(r) = self.work.records.get(rec) else { return false };
        let cmd = Command::Fetch { resource: r.resource.clone(), kind: KindId::CHORDPHONE_TEST };
        match self.issue(s, cmd, Pending::Fetch { rec, last }) {
            Ok(_) => true,
            Err(e) => {
                self.metrics.command_errors += 1;
                self.metrics.note_failure("fetch", format!("{e:?}"));
                false
            }
        }
    }

    /// A request the scenario issued completed.
    pub(super) fn completed(&mut self, s: SlotId, p: Pending, outcome: Outcome) {
        match p {
            Pending::External => {}
            Pending::Join => {
                if let Outcome::Failed(f) = outcome {
                    self.metrics.join_failures += 1;
                    self.metrics.note_failure("join", failure_text(&f));
                    self.bootstrap_later(s, US_PER_S);
                }
            }
            Pending::Leave => self.queue.push(self.now, Ev::Retire { slot: s }),
            Pending::Store { rec } => match outcome {
                Outcome::Stored { .. } => {
                    self.metrics.stores_ok += 1;
                    if let Some(r) = self.work.records.get_mut(rec) {
                        r.acked = true;
                        self.work.acked.push(rec);
                    }
                }
                other => self.metrics.note_failure("store", outcome_text(&other)),
            },
            Pending::Lookup { point } => match outcome {
                Outcome::LookedUp { responsible, hops } => {
                    self.metrics.lookups_ok += 1;
                    self.metrics.note_hops(hops);
                    if reference::responsible(&self.ring, point).is_some_and(|(id, _)| id == responsible) {
                        self.metrics.lookups_correct += 1;
                    }
                }
                other => self.metrics.note_failure("lookup", outcome_text(&other)),
            },
            Pending::Fetch { rec, last } => {
                let ok = self.work.records.get(rec).is_some_and(|r| fetched(&outcome, &r.value));
                if !ok {
                    self.metrics.note_failure(if last { "final fetch" } else { "fetch" }, outcome_text(&outcome));
                }
                self.fetch_done(rec, last, ok);
            }
        }
    }

    /// A request whose node went away before it completed.
    pub(super) fn abandoned(&mut self, p: Pending) {
        match p {
            // A Leave never completes; a join dies with its node.
            Pending::Leave | Pending::Join => {}
            Pending::Fetch { rec, last: true } => self.fetch_done(rec, true, false),
            _ => self.metrics.abandoned += 1,
        }
    }

    fn fetch_done(&mut self, rec: usize, last: bool, ok: bool) {
        if last {
            if let Some(r) = self.work.records.get_mut(rec) {
                r.final_fetch = Some(ok);
            }
            self.work.final_pending = self.work.final_pending.saturating_sub(1);
        } else if ok {
            self.metrics.fetches_ok += 1;
        }
    }

    /// After quiescence: checks the ring, surveys the records and fetches
    /// each acknowledged one from a random peer.
    pub(super) fn final_check(&mut self) -> reference::RingCheck {
        self.work.phase = Phase::Final;
        let ring = reference::check_ring(self);
        let acked = self.work.acked.clone();
        let mut holders = Vec::with_capacity(acked.len());
        for &r in &acked {
            let live = reference::live_holders(self, r);
            if live > 0 && !reference::responsible_holds(self, r) {
                self.work.not_at_responsible += 1;
            }
            if reference::replicas_holding(self, r) < (self.config.replicas + 1).min(self.ring.len()) {
                self.work.under_replicated += 1;
            }
            holders.push((r, live));
            if let Some(s) = self.pick_joined(None, None) {
                self.work.final_pending += 1;
                if !self.fetch(s, r, true) {
                    self.fetch_done(r, true, false);
                }
            }
        }
        let limit = self.now + FINAL_FETCH_LIMIT;
        while self.work.final_pending > 0 && self.now < limit {
            self.run_until((self.now + US_PER_S).min(limit));
        }
        for (r, live) in holders {
            if self.work.records.get(r).is_some_and(|rec| rec.final_fetch == Some(true)) {
                continue;
            }
            if live > 0 {
                self.work.lost_with_live_replica += 1;
            } else {
                self.work.lost_all_replicas_dead += 1;
            }
        }
        ring
    }
}

/// Whether a Fetch returned the stored value.
fn fetched(outcome: &Outcome, expected: &[u8]) -> bool {
    match outcome {
        Outcome::Fetched { values } => values.iter().any(|v| {
            matches!(v, StoredDataValue::Single(DataValue { exists: true, value }) if value.as_slice() == expected)
        }),
        _ => false,
    }
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Error(code, _) => format!("error {}", code.0),
        Failure::Timeout => "timeout".into(),
        Failure::NotJoined => "not joined".into(),
    }
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Failed(f) => failure_text(f),
        Outcome::Fetched { values } => format!("fetched {} values, none matching", values.len()),
        other => format!("unexpected {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: SimOptions,
    }

    #[test]
    fn clap_defaults_match_default() {
        let cli = Cli::try_parse_from(["sim"]).unwrap();
        assert_eq!(cli.opts, SimOptions::default());
        let cli = Cli::try_parse_from([
            "sim",
            "--nodes",
            "7",
            "--crypto",
            "fast",
            "--session-median",
            "300",
            "--kill-fraction",
            "0.5",
            "--kill-at",
            "10",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.opts.nodes, 7);
        assert_eq!(cli.opts.crypto, CryptoMode::Fast);
        assert_eq!(cli.opts.session_median, Some(300.0));
        assert_eq!(cli.opts.kill_at, Some(10.0));
        assert!(cli.opts.json);
    }

    #[test]
    fn invalid_options_are_refused() {
        for o in [
            SimOptions { nodes: 0, ..SimOptions::default() },
            SimOptions { loss: 1.5, ..SimOptions::default() },
            SimOptions { join_rate: 0.0, ..SimOptions::default() },
            SimOptions { session_median: Some(-1.0), ..SimOptions::default() },
            SimOptions { duration: f64::NAN, ..SimOptions::default() },
        ] {
            assert!(matches!(o.validate(), Err(SimError::InvalidOption(_))), "{o:?}");
            assert!(run(&o).error.is_some());
        }
    }

    #[test]
    fn fetched_matches_only_the_stored_value() {
        let ok = Outcome::Fetched { values: vec![StoredDataValue::Single(DataValue::new(b"v".to_vec()))] };
        assert!(fetched(&ok, b"v"));
        assert!(!fetched(&ok, b"w"));
        let gone = Outcome::Fetched { values: vec![StoredDataValue::Single(DataValue::nonexistent())] };
        assert!(!fetched(&gone, b""));
        assert!(!fetched(&Outcome::Failed(Failure::Timeout), b"v"));
    }

    #[test]
    fn same_seed_same_report_even_with_stub_nodes() {
        let o = SimOptions {
            nodes: 20,
            crypto: CryptoMode::Fast,
            session_median: Some(30.0),
            kill_fraction: 0.3,
            stores: 5,
            lookups_per_s: 5.0,
            loss: 0.01,
            duration: 30.0,
            quiesce: 10.0,
            ..SimOptions::default()
        };
        let a = run(&o);
        assert_eq!(a.error, None);
        assert_eq!(a.to_json(), run(&o).to_json());
        assert!(a.sim_s >= 40.0);
    }
}
