//! The binding table of one registrar (RFC 3261 §10.3 steps 6–8; RFC 5626 §6
//! and RFC 5627 §4.1 keying bindings by `+sip.instance`/`reg-id`): a
//! REGISTER becomes a [`Plan`] without changing anything, and the plan is
//! committed only once the overlay stored the record (RFC 7904 §3).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::Reject;
use crate::sip::message::{Contacts, Host, NameAddr, SipMessage, SipUri, Uri};
use crate::sip::transaction::TransportAddr;

/// One contact bound to an address of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `inst:<instance>:<reg-id>` (RFC 5626 §6) or the normalised contact URI.
    pub key: String,
    /// The Contact as registered, without its `expires` parameter.
    pub contact: NameAddr,
    /// Where the REGISTER came from (RFC 3581 / RFC 5626: requests go back
    /// to this address and stream flow, not to the Contact, which may be a
    /// private address behind NAT).
    pub source: TransportAddr,
    pub expires_at: Instant,
    /// §10.3 step 7: a REGISTER with the same Call-ID must carry a higher CSeq.
    pub call_id: String,
    pub cseq: u32,
}

/// One change a REGISTER asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BindingOp {
    Put(Box<Binding>),
    Remove(String),
    Clear,
}

/// What a REGISTER will do to an AOR, checked but not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    pub aor: String,
    /// No Contact header: a query (§10.2.3).
    pub query: bool,
    pub ops: Vec<BindingOp>,
}

/// Normalised AOR → bindings, indexed by contact and by expiry.
#[derive(Debug, Default)]
pub(super) struct Bindings {
    /// Normalised AOR → bindings.
    bindings: BTreeMap<String, Vec<Binding>>,
    /// Contact key → (AOR, binding key): in-dialog requests find the phone.
    by_contact: BTreeMap<String, BTreeSet<(String, String)>>,
    /// (expiry, AOR): lazily invalidated, checked against the binding.
    expiry: BTreeSet<(Instant, String)>,
}

impl Bindings {
    /// Every AOR with a binding, and its latest expiry.
    pub fn registered(&self) -> impl Iterator<Item = (&str, Instant)> + '_ {
        self.bindings.iter().filter_map(|(aor, b)| Some((aor.as_str(), b.iter().map(|b| b.expires_at).max()?)))
    }

    /// The current bindings of `aor` (normalised).
    pub fn bindings(&self, aor: &str) -> &[Binding] {
        self.bindings.get(aor).map_or(&[], Vec::as_slice)
    }

    /// §10.3 steps 6–8 for an authorised REGISTER of `aor` arriving from
    /// `source`: validates the Contact list and expiry values and says what
    /// would change. Nothing is applied.
    pub fn plan(
        &self,
        req: &SipMessage,
        aor: &str,
        source: TransportAddr,
        now: Instant,
        min_expires: u32,
        max_expires: u32,
    ) -> Result<Plan, Reject> {
        let contacts = req.contacts().map_err(|e| Reject::new(400, Some(e.to_string())))?;
        let header_expires = req.expires();
        let list = match contacts {
            Contacts::Wildcard => {
                // §10.3 step 6: `*` only with Expires: 0 (and alone, which
                // `contacts()` already enforces).
                if header_expires != Some(0) {
                    return Err(Reject::new(400, Some("Contact: * requires Expires: 0".into())));
                }
                return Ok(Plan { aor: aor.to_owned(), query: false, ops: vec![BindingOp::Clear] });
            }
            Contacts::Bindings(list) if list.is_empty() => {
                return Ok(Plan { aor: aor.to_owned(), query: true, ops: Vec::new() });
            }
            Contacts::Bindings(list) => list,
        };
        let seq = req.cseq().seq;
        let mut ops = Vec::new();
        for c in list {
            if c.uri.as_sip().is_none() {
                return Err(Reject::new(400, Some("Contact must be a SIP URI".into())));
            }
            // §10.3 step 7: the parameter wins over the header; a locally
            // configured default otherwise.
            let asked = c.expires().or(header_expires).unwrap_or(max_expires);
            if asked != 0 && asked < min_expires {
                let mut r = Reject::new(423, None);
                r.headers.push(("Min-Expires", min_expires.to_string()));
                return Err(r);
            }
            let expires = asked.min(max_expires);
            let key = binding_key(&c);
            if let Some(old) = self.bindings(aor).iter().find(|b| b.key == key)
                && old.call_id == req.call_id()
                && old.cseq >= seq
            {
                return Err(Reject::new(500, Some("REGISTER out of order (CSeq not increasing)".into())));
            }
            if expires == 0 {
                ops.push(BindingOp::Remove(key));
                continue;
            }
            let mut contact = c.clone();
            contact.params.remove("expires");
            ops.push(BindingOp::Put(Box::new(Binding {
                key,
                contact,
                source,
                expires_at: now + Duration::from_secs(u64::from(expires)),
                call_id: req.call_id().to_owned(),
                cseq: seq,
            })));
        }
        Ok(Plan { aor: aor.to_owned(), query: false, ops })
    }

    /// (bindings now, bindings after `plan`, seconds until the last binding
    /// after `plan` expires).
    pub fn preview(&self, plan: &Plan, now: Instant) -> (usize, usize, u32) {
        let current = self.bindings(&plan.aor);
        let mut after = current.to_vec();
        apply(&mut after, &plan.ops);
        let longest = after.iter().map(|b| remaining_secs(b.expires_at, now)).max().unwrap_or(0);
        (current.len(), after.len(), longest)
    }

    /// Applies `plan`.
    pub fn commit(&mut self, plan: &Plan) {
        let mut list = self.bindings.remove(&plan.aor).unwrap_or_default();
        for b in &list {
            self.unindex(&plan.aor, b);
        }
        apply(&mut list, &plan.ops);
        for b in &list {
            self.index(&plan.aor, b);
        }
        if !list.is_empty() {
            self.bindings.insert(plan.aor.clone(), list);
        }
    }

    /// The Contact values of a 200 to a REGISTER, each with its remaining
    /// `expires` (§10.3 step 8).
    pub fn contact_values(&self, aor: &str, now: Instant) -> Vec<String> {
        self.bindings(aor)
            .iter()
            .map(|b| {
                let mut c = b.contact.clone();
                let secs = remaining_secs(b.expires_at, now).to_string();
                // A numeric value always passes the parameter check.
                let _ = c.params.set("expires", Some(&secs));
                c.to_string()
            })
            .collect()
    }

    /// The binding whose Contact URI is `uri` (§16.5 for in-dialog requests
    /// whose remote target is a phone registered here).
    pub fn by_contact(&self, uri: &Uri) -> Option<&Binding> {
        let (aor, key) = self.by_contact.get(&contact_key(uri))?.first()?;
        self.bindings(aor).iter().find(|b| &b.key == key)
    }

    /// The earliest time a binding may expire.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|(at, _)| *at)
    }

    /// Drops bindings expired at `now`; returns the AORs left with none.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut emptied = Vec::new();
        while let Some((at, aor)) = self.expiry.first().cloned() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if self.drop_where(&aor, |b| b.expires_at <= now) {
                emptied.push(aor);
            }
        }
        emptied
    }

    /// RFC 5626 §5.2: a stream flow closed, so the bindings that use it are
    /// unreachable. Returns the AORs left with none.
    pub fn flow_closed(&mut self, flow: u64) -> Vec<String> {
        let aors: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, l)| l.iter().any(|b| b.source.flow == Some(flow)))
            .map(|(a, _)| a.clone())
            .collect();
        aors.into_iter().filter(|aor| self.drop_where(aor, |b| b.source.flow == Some(flow))).collect()
    }

    /// Removes matching bindings of `aor`; true if that emptied it.
    fn drop_where(&mut self, aor: &str, mut gone: impl FnMut(&Binding) -> bool) -> bool {
        let Some(mut list) = self.bindings.remove(aor) else { return false };
        let before = list.len();
        let (dead, live): (Vec<Binding>, Vec<Binding>) = list.drain(..).partition(|b| gone(b));
        for b in &dead {
            self.unindex(aor, b);
        }
        let empty = live.is_empty();
        if !empty {
            self.bindings.insert(aor.to_owned(), live);
        }
        empty && before > 0 && !dead.is_empty()
    }

    fn index(&mut self, aor: &str, b: &Binding) {
        self.by_contact.entry(contact_key(&b.contact.uri)).or_default().insert((aor.to_owned(), b.key.clone()));
        self.expiry.insert((b.expires_at, aor.to_owned()));
    }

    fn unindex(&mut self, aor: &str, b: &Binding) {
        let key = contact_key(&b.contact.uri);
        if let Some(set) = self.by_contact.get_mut(&key) {
            set.remove(&(aor.to_owned(), b.key.clone()));
            if set.is_empty() {
                self.by_contact.remove(&key);
            }
        }
    }
}

fn apply(list: &mut Vec<Binding>, ops: &[BindingOp]) {
    for op in ops {
        match op {
            BindingOp::Clear => list.clear(),
            BindingOp::Remove(key) => list.retain(|b| &b.key != key),
            BindingOp::Put(new) => match list.iter_mut().find(|b| b.key == new.key) {
                Some(old) => *old = (**new).clone(),
                None => list.push((**new).clone()),
            },
        }
    }
}

fn remaining_secs(at: Instant, now: Instant) -> u32 {
    u32::try_from(at.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX)
}

/// RFC 5626 §6 / RFC 5627: a binding is identified by its instance (and
/// reg-id) when the phone sends one, else by its Contact URI (§10.3 step 8).
fn binding_key(c: &NameAddr) -> String {
    match c.params.value("+sip.instance") {
        Some(inst) => format!("inst:{inst}:{}", c.params.value("reg-id").unwrap_or("")),
        None => contact_key(&c.uri),
    }
}

/// A URI reduced to what identifies a phone's contact: scheme, user, host
/// (case-folded) and port (default filled in). Parameters such as
/// `transport` or `ob` differ between REGISTER and dialog messages.
pub(crate) fn contact_key(uri: &Uri) -> String {
    match uri {
        Uri::Sip(s) => {
            let tls = s.secure || s.params.value("transport").is_some_and(|t| t.eq_ignore_ascii_case("tls"));
            let port = s.port.unwrap_or(if tls { 5061 } else { 5060 });
            let scheme = if s.secure { "sips" } else { "sip" };
            format!("{scheme}:{}@{}:{port}", s.user_name().unwrap_or(""), host_key(&s.host))
        }
        Uri::Other(text) => text.to_ascii_lowercase(),
    }
}

fn host_key(h: &Host) -> String {
    match h {
        Host::Name(n) => n.to_ascii_lowercase(),
        other => other.to_string(),
    }
}

/// `user@host` of a SIP URI, host case-folded (§19.1.4); `None` without a
/// user part.
pub(crate) fn aor_of(uri: &SipUri) -> Option<String> {
    Some(format!("{}@{}", uri.user_name()?, host_key(&uri.host)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::Transport;

    fn src() -> TransportAddr {
        TransportAddr { transport: Transport::Udp, addr: "203.0.113.5:61234".parse().unwrap(), flow: None }
    }

    fn register(contact: &str, extra: &str, cseq: u32) -> SipMessage {
        let text = format!(
            "REGISTER sip:chordphone.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK{cseq};rport\r\n\
             {contact}Max-Forwards: 70\r\nTo: <sip:alice@chordphone.test>\r\nFrom: <sip:alice@chordphone.test>;tag=a1\r\n\
             Call-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        SipMessage::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn plan_commit_expire() {
        let mut r = Bindings::default();
        let now = Instant::now();
        let req = register("Contact: <sip:alice@192.168.1.20:5060>;expires=120\r\n", "", 1);
        let plan = r.plan(&req, "alice@chordphone.test", src(), now, 60, 3600).unwrap();
        assert_eq!(r.preview(&plan, now), (0, 1, 120));
        r.commit(&plan);
        assert_eq!(r.contact_values("alice@chordphone.test", now), vec!["<sip:alice@192.168.1.20:5060>;expires=120"]);
        let found = r.by_contact(&Uri::parse("sip:alice@192.168.1.20;transport=udp").unwrap()).unwrap();
        assert_eq!(found.source, src());
        // Same Call-ID, same CSeq: out of order.
        assert_eq!(r.plan(&req, "alice@chordphone.test", src(), now, 60, 3600).unwrap_err().status.as_u16(), 500);
        // Too brief → 423 with Min-Expires; above max → capped.
        let short = register("Contact: <sip:alice@192.168.1.20:5060>\r\n", "Expires: 30\r\n", 2);
        let e = r.plan(&short, "alice@chordphone.test", src(), now, 60, 3600).unwrap_err();
        assert_eq!((e.status.as_u16(), e.headers.clone()), (423, vec![("Min-Expires", "60".to_owned())]));
        let long = register("Contact: <sip:alice@192.168.1.20:5060>\r\n", "Expires: 99999\r\n", 3);
        assert_eq!(r.preview(&r.plan(&long, "alice@chordphone.test", src(), now, 60, 3600).unwrap(), now).2, 3600);
        assert!(r.expire(now + Duration::from_secs(119)).is_empty());
        assert_eq!(r.expire(now + Duration::from_secs(120)), vec!["alice@chordphone.test".to_owned()]);
        assert!(r.by_contact(&Uri::parse("sip:alice@192.168.1.20").unwrap()).is_none());
    }

    #[test]
    fn wildcard_and_instances() {
        let mut r = Bindings::default();
        let now = Instant::now();
        let two = register(
            "Contact: <sip:alice@10.0.0.7:40123;transport=tcp>;+sip.instance=\"<urn:uuid:1>\";reg-id=1, <sip:alice@192.168.1.20:5060>\r\n",
            "Expires: 600\r\n",
            1,
        );
        let plan = r.plan(&two, "alice@chordphone.test", src(), now, 60, 3600).unwrap();
        r.commit(&plan);
        assert_eq!(r.bindings("alice@chordphone.test")[0].key, "inst:<urn:uuid:1>:1");
        // A new contact for the same instance replaces the binding.
        let moved = register("Contact: <sip:alice@10.0.0.9:5060>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n", "", 2);
        r.commit(&r.plan(&moved, "alice@chordphone.test", src(), now, 60, 3600).unwrap());
        assert_eq!(r.bindings("alice@chordphone.test").len(), 2);
        let bad = register("Contact: *\r\n", "", 3);
        assert_eq!(r.plan(&bad, "alice@chordphone.test", src(), now, 60, 3600).unwrap_err().status.as_u16(), 400);
        let all = register("Contact: *\r\n", "Expires: 0\r\n", 3);
        let plan = r.plan(&all, "alice@chordphone.test", src(), now, 60, 3600).unwrap();
        assert_eq!(r.preview(&plan, now), (2, 0, 0));
        r.commit(&plan);
        assert!(r.bindings("alice@chordphone.test").is_empty());
        assert!(r.by_contact(&Uri::parse("sip:alice@10.0.0.9").unwrap()).is_none());
    }
}
