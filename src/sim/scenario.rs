//! The `chordphone sim` scenario: build a ring at `--join-rate`, then run
//! the workload (stores, lookups, fetches) with churn and an optional mass
//! failure for `--duration`, stop both and let the overlay settle for
//! `--quiesce`, and finally check the ring and every stored record against
//! the reference model.

use rand::RngExt;

use super::SimError;
use super::net::{Ev, Micros, SlotId, Step, US_PER_S};
use super::options::SimOptions;
use super::reference;
use super::report::{self, SimReport};
use super::world::{Simulation, secs_to_us};
use crate::wire::{NodeId, ResourceId};

/// Runs the whole scenario. Never fails: a simulation that cannot start
/// returns a report whose `error` says why.
pub fn run(opts: &SimOptions) -> SimReport {
    try_run(opts).unwrap_or_else(|e| SimReport::failed(opts, e.to_string()))
}

/// Runs the whole scenario.
pub fn try_run(opts: &SimOptions) -> Result<SimReport, SimError> {
    Ok(Simulation::new(opts)?.run_scenario())
}

impl Simulation {
    /// Runs the `chordphone sim` scenario on a fresh simulation (build,
    /// workload, quiescence, final checks) and reports; the simulation
    /// can be inspected afterwards.
    pub fn run_scenario(&mut self) -> SimReport {
        self.build_ring();
        self.start_workload();
        let end = self.work.start + secs_to_us(self.opts.duration);
        self.run_until(end);
        self.work.phase = Phase::Quiesce;
        self.run_until(end + secs_to_us(self.opts.quiesce));
        let ring = self.final_check();
        // Node-seconds since the last join or departure count too.
        self.note_live_change();
        report::build(self, ring)
    }
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
    /// The live holders at the last survey that found any.
    pub holders: Vec<SlotId>,
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
/// How often the records' holders are surveyed, so that a record with no
/// live copy at the end can be told lost-by-crashes from dropped-by-a-live-node.
const SURVEY_INTERVAL: Micros = 5 * US_PER_S;

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
        if self.opts.stores > 0 {
            self.queue.push(self.now + SURVEY_INTERVAL, Ev::Step(Step::Survey));
        }
        self.start_phones();
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
            Step::Rehome { phone } => self.rehome(phone),
            Step::Call => self.place_call(),
            Step::Message => self.send_message(),
            Step::Hangup { phone, call } => self.hangup(phone, call),
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
            Step::Survey => {
                if self.work.phase != Phase::Final {
                    self.survey();
                    self.queue.push(self.now + SURVEY_INTERVAL, Ev::Step(Step::Survey));
                }
            }
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
        self.survey();
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
        self.work.repair_set = acked.into_iter().filter(|&r| !reference::holder_slots(self, r).is_empty()).collect();
        self.queue.push(self.now + US_PER_S, Ev::Step(Step::RepairPoll));
    }

    /// Remembers each acknowledged record's live holders (keeping the
    /// previous ones when none is left).
    fn survey(&mut self) {
        for i in 0..self.work.acked.len() {
            let Some(&r) = self.work.acked.get(i) else { continue };
            let holders = reference::holder_slots(self, r);
            if let (false, Some(rec)) = (holders.is_empty(), self.work.records.get_mut(r)) {
                rec.holders = holders;
            }
        }
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

    /// After quiescence: checks the ring, surveys the records and fetches
    /// each acknowledged one from a random peer.
    pub(super) fn final_check(&mut self) -> reference::RingCheck {
        self.work.phase = Phase::Final;
        let ring = reference::check_ring(self);
        self.survey();
        let acked = self.work.acked.clone();
        let mut live_copy = Vec::with_capacity(acked.len());
        for &r in &acked {
            let live = !reference::holder_slots(self, r).is_empty();
            if live && !reference::responsible_holds(self, r) {
                self.work.not_at_responsible += 1;
            }
            if reference::replicas_holding(self, r) < (self.config.replicas + 1).min(self.ring.len()) {
                self.work.under_replicated += 1;
            }
            live_copy.push((r, live));
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
        for (r, live) in live_copy {
            let Some(rec) = self.work.records.get(r) else { continue };
            if rec.final_fetch == Some(true) {
                continue;
            }
            // Lost for good only if every node seen holding it is dead; a
            // live node that dropped its copy is the overlay's fault.
            if live || rec.holders.iter().any(|&s| self.is_alive(s)) {
                self.work.lost_with_live_replica += 1;
            } else {
                self.work.lost_all_replicas_dead += 1;
            }
        }
        self.check_phone_resolution();
        ring
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::CryptoMode;

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
