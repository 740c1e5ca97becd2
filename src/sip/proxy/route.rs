//! Where a request goes next (RFC 3261 §16.4 loose routing, §16.5 targets),
//! the dialog targets learned from phones, and ACK for 2xx forwarded
//! statelessly along its Route set (§16.6, §16.11).

use std::time::{Duration, Instant};

use tracing::trace;

use super::{Learned, Proxy, Target};
use crate::sip::edge::{EdgeCore, Next, Source, node_of};
use crate::sip::message::{Contacts, Method, ParseError, SipMessage, Uri};
use crate::sip::registrar::{self, Registrar, Reject};
use crate::sip::transaction::{MAGIC_COOKIE, Transport, TransportAddr};

/// Learned dialog targets kept at most, and for how long.
const LEARNED_CAP: usize = 4096;
const LEARNED_TTL: Duration = Duration::from_secs(6 * 3600);

impl Proxy {
    /// §16.4 and §16.5: strips Routes naming this node and says where the
    /// request goes next.
    pub fn resolve(
        &self,
        core: &EdgeCore,
        reg: &Registrar,
        now: Instant,
        req: &mut SipMessage,
        src: Source,
    ) -> Result<Next, Reject> {
        let bad_route = |e: ParseError| Reject::new(400, Some(e.to_string()));
        let mut routes = req.routes().map_err(bad_route)?;
        // §16.4: a strict router put our Record-Route into the Request-URI;
        // the real one is the last Route.
        let ruri_is_us = req.request_uri().and_then(Uri::as_sip).is_some_and(|u| core.names_us_by_id(u));
        if ruri_is_us && let Some(last) = routes.pop() {
            req.set_request_uri(last.uri).map_err(bad_route)?;
            req.remove_header("Route").map_err(bad_route)?;
            for r in &routes {
                req.add_header("Route", &r.to_string()).map_err(bad_route)?;
            }
        }
        while req.routes().map_err(bad_route)?.first().and_then(|r| r.uri.as_sip()).is_some_and(|u| core.names_us(u)) {
            req.pop_route().map_err(bad_route)?;
        }
        if let Some(first) = req.routes().map_err(bad_route)?.first() {
            return match first.uri.as_sip().and_then(node_of) {
                Some(node) if node != core.cfg.node_id => Ok(Next::Node(node)),
                _ => Err(Reject::new(404, Some("Route names an unknown next hop".into()))),
            };
        }
        let Some(Uri::Sip(ruri)) = req.request_uri() else {
            return Err(Reject::new(416, None));
        };
        if let Some(to) = self.contact_target(reg, now, req.request_uri()) {
            return Ok(Next::Contact(to));
        }
        match (registrar::aor_of(ruri), core.is_our_host(&ruri.host, ruri.port)) {
            (None, true) => Ok(Next::Us),
            // A node forwards only AORs it found in the overlay; its domain
            // list is trusted.
            (Some(aor), _) if core.is_our_domain(&ruri.host) || matches!(src, Source::Node(_)) => Ok(Next::Aor(aor)),
            (Some(aor), true) => Ok(Next::Aor(aor)),
            _ => Err(Reject::new(404, Some("Domain not served here".into()))),
        }
    }

    /// Where a phone's contact URI is reachable: a binding's source, else a
    /// contact learned from a dialog.
    fn contact_target(&self, reg: &Registrar, now: Instant, uri: Option<&Uri>) -> Option<TransportAddr> {
        let uri = uri?;
        if let Some(b) = reg.by_contact(uri) {
            return Some(b.source);
        }
        let l = self.learned.get(&registrar::contact_key(uri))?;
        (now.saturating_duration_since(l.seen) < LEARNED_TTL).then_some(l.to)
    }

    /// Records the Contact of a dialog-creating request from a phone so
    /// in-dialog requests reach it even if it registered another Contact
    /// (or none: sipp).
    pub fn learn_contact(&mut self, now: Instant, msg: &SipMessage, from: TransportAddr) {
        let dialog_method = matches!(
            msg.cseq().method,
            Method::Invite | Method::Subscribe | Method::Refer | Method::Notify | Method::Update
        );
        if !dialog_method {
            return;
        }
        let Ok(Contacts::Bindings(list)) = msg.contacts() else { return };
        let Some(c) = list.first() else { return };
        let key = registrar::contact_key(&c.uri);
        if self.learned.len() >= LEARNED_CAP && !self.learned.contains_key(&key) {
            // Bounded: forget the least recently seen.
            if let Some(oldest) = self.learned.iter().min_by_key(|(_, l)| l.seen).map(|(k, _)| k.clone()) {
                self.learned.remove(&oldest);
            }
        }
        self.learned.insert(key, Learned { to: from, seen: now });
    }

    /// ACK for a 2xx (or any ACK no transaction absorbed): forwarded
    /// statelessly along its Route set (§16.4, §16.6, §16.11).
    pub(in crate::sip) fn forward_ack(
        &mut self,
        core: &mut EdgeCore,
        reg: &Registrar,
        now: Instant,
        mut req: SipMessage,
        src: Source,
    ) {
        if req.max_forwards() == Some(0) {
            return;
        }
        let hash = core.branch_hash(&req);
        if core.is_loop(&req, &hash) {
            return;
        }
        let target = match self.resolve(core, reg, now, &mut req, src) {
            Ok(Next::Contact(to)) => Target::Local { to, uri: None },
            Ok(Next::Node(n)) => Target::Node(n),
            Ok(Next::Aor(aor)) => match reg.bindings_of(&aor).first() {
                Some(b) => Target::Local { to: b.source, uri: Some(b.contact.uri.clone()) },
                None => return trace!("ACK for an AOR with no binding dropped"),
            },
            Ok(Next::Us) => return,
            Err(r) => return trace!(status = r.status.as_u16(), "ACK dropped"),
        };
        if req.decrement_max_forwards().is_none() {
            return;
        }
        let (to, transport) = match &target {
            Target::Local { to, .. } => (*to, to.transport),
            Target::Node(n) => (core.node_addr(*n), Transport::Tcp),
        };
        if let Target::Local { uri: Some(u), .. } = &target
            && req.set_request_uri(u.clone()).is_err()
        {
            return;
        }
        let Ok(via) = core.our_via(transport, &format!("{MAGIC_COOKIE}{hash}.ack")) else { return };
        if req.push_via(&via).is_err() {
            return;
        }
        core.tl.send_stateless(&req, to);
        match target {
            Target::Local { .. } => core.counters.requests_forwarded_local += 1,
            Target::Node(_) => core.counters.requests_forwarded_node += 1,
        }
    }
}
