//! One copy of a proxied request per branch (RFC 3261 §16.6: Request-URI,
//! Record-Route with RFC 5658 double Record-Route, our Via with the branch),
//! each in its own client transaction.

use std::time::Instant;

use tracing::{debug, trace};

use super::{Branch, Outcome, Proxy, ProxyTx, Target};
use crate::sip::edge::{EdgeCore, Source};
use crate::sip::message::{ParseError, SipMessage, StatusCode};
use crate::sip::transaction::{MAGIC_COOKIE, Transport, TxError};

impl Proxy {
    /// §16.6: one copy of the request to `target`, in a new client transaction.
    pub(super) fn fork(&mut self, core: &mut EdgeCore, now: Instant, pid: u64, target: Target) {
        let to = match &target {
            Target::Local { to, .. } => *to,
            Target::Node(n) => core.node_addr(*n),
        };
        let Some(p) = self.proxies.get(&pid) else { return };
        let idx = p.branches.len();
        let built = Self::build_forward(core, p, &target, idx);
        let sent = built.map_err(TxError::from).and_then(|m| core.tl.send_request(now, m, to));
        let mut branch = Branch { target, client: None, outcome: None, cancel_sent: false };
        match sent {
            Ok(cid) => {
                self.by_client.insert(cid, (pid, idx));
                branch.client = Some(cid);
                match branch.target {
                    Target::Local { .. } => core.counters.requests_forwarded_local += 1,
                    Target::Node(_) => core.counters.requests_forwarded_node += 1,
                }
                trace!(?to, "request forwarded");
            }
            Err(e) => {
                debug!(error = %e, "branch not started");
                let (code, failed) = match e {
                    TxError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, true),
                    // Same branch hash: a merged or looped request (§8.2.2.2).
                    TxError::DuplicateBranch => (StatusCode::LOOP_DETECTED, false),
                    _ => (StatusCode::SERVER_ERROR, true),
                };
                branch.outcome = Some(Outcome { status: code, response: None, reason: Some(e.to_string()), failed });
            }
        }
        if let Some(p) = self.proxies.get_mut(&pid) {
            p.branches.push(branch);
        }
    }

    /// §16.6 steps 2, 4 and 8 (Max-Forwards was step 3, done on receipt).
    fn build_forward(core: &EdgeCore, p: &ProxyTx, target: &Target, idx: usize) -> Result<SipMessage, ParseError> {
        let mut m = p.request.clone();
        if let Target::Local { uri: Some(u), .. } = target {
            m.set_request_uri(u.clone())?;
        }
        if p.record_route {
            for rr in Self::record_routes(core, p.source, target, p.request.call_id()).iter().rev() {
                m.prepend_header("Record-Route", rr)?;
            }
        }
        let transport = match target {
            Target::Local { to, .. } => to.transport,
            Target::Node(_) => Transport::Tcp,
        };
        m.push_via(&core.our_via(transport, &format!("{MAGIC_COOKIE}{}.{idx}", p.hash))?)?;
        Ok(m)
    }

    /// Our Record-Route values, top first. Each phone uses the entry facing
    /// it, so a transport change gets two (RFC 5658 double
    /// Record-Route); the node side is reached by Node-ID, not address.
    fn record_routes(core: &EdgeCore, src: Source, target: &Target, call_id: &str) -> Vec<String> {
        let incoming = match src {
            Source::Local(a) => Some(a.transport),
            Source::Node(_) => None,
        };
        let outgoing = match target {
            Target::Local { to, .. } => Some(to.transport),
            Target::Node(_) => None,
        };
        match (incoming, outgoing) {
            (Some(i), Some(o)) if i != o => vec![core.record_route(o, call_id), core.record_route(i, call_id)],
            (Some(t), _) | (None, Some(t)) => vec![core.record_route(t, call_id)],
            (None, None) => vec![core.record_route(Transport::Tcp, call_id)],
        }
    }
}
