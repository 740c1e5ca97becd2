//! The workload's requests: stores (each peer under its own user name,
//! the CHORDPHONE_TEST kind being USER-MATCH), lookups of random
//! Resource-IDs, fetches of stored records, and what their outcomes count.

use rand::RngExt;

use super::net::{Ev, Micros, SlotId, Step, US_PER_S};
use super::reference;
use super::scenario::{Phase, Record};
use super::world::{Pending, Simulation};
use crate::overlay::{Command, Failure, Outcome};
use crate::wire::storage::{DataValue, StoredDataValue};
use crate::wire::{KindId, NodeId, ResourceId};

/// Records live well past the end of any run.
const RECORD_LIFETIME_S: u32 = 30 * 86_400;

impl Simulation {
    /// Store number `n`: a peer that has not stored yet stores a value
    /// under its own user name (the kind is USER-MATCH, §7.3.1).
    pub(super) fn store(&mut self, n: usize) {
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
        self.work.records.push(Record {
            resource,
            point,
            value: value.clone(),
            acked: false,
            final_fetch: None,
            holders: Vec::new(),
        });
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
    pub(super) fn lookup(&mut self) {
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

    pub(super) fn fetch(&mut self, s: SlotId, rec: usize, last: bool) -> bool {
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
    pub(super) fn completed(&mut self, _s: SlotId, p: Pending, outcome: Outcome) {
        match p {
            Pending::External => {}
            Pending::Resolve { home, .. } => self.resolved(home, outcome),
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
                Outcome::LookedUp { responsible, hops, .. } => {
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
            Pending::Fetch { rec, last: true } => self.fetch_done(rec, true, false),
            Pending::Resolve { .. } => {
                self.phones.resolve_pending = self.phones.resolve_pending.saturating_sub(1);
                self.phone_metrics.registrations_lost += 1;
            }
            _ => self.metrics.abandoned += 1,
        }
    }

    pub(super) fn fetch_done(&mut self, rec: usize, last: bool, ok: bool) {
        if last {
            if let Some(r) = self.work.records.get_mut(rec) {
                r.final_fetch = Some(ok);
            }
            self.work.final_pending = self.work.final_pending.saturating_sub(1);
        } else if ok {
            self.metrics.fetches_ok += 1;
        }
    }
}

/// Whether a Fetch returned the stored value.
fn fetched(outcome: &Outcome, expected: &[u8]) -> bool {
    match outcome {
        Outcome::Fetched { values } => values.iter().any(
            |v| matches!(v, StoredDataValue::Single(DataValue { exists: true, value }) if value.as_slice() == expected),
        ),
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

    #[test]
    fn fetched_matches_only_the_stored_value() {
        let ok = Outcome::Fetched { values: vec![StoredDataValue::Single(DataValue::new(b"v".to_vec()))] };
        assert!(fetched(&ok, b"v"));
        assert!(!fetched(&ok, b"w"));
        let gone = Outcome::Fetched { values: vec![StoredDataValue::Single(DataValue::nonexistent())] };
        assert!(!fetched(&gone, b""));
        assert!(!fetched(&Outcome::Failed(Failure::Timeout), b"v"));
    }
}
