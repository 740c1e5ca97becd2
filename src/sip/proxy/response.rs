//! Responses on proxy branches (RFC 3261 §16.7: provisional and 2xx at once,
//! the best final answer once every branch has one), CANCEL hop by hop
//! (§16.10) and Timer C (§16.6 step 11).

use std::time::Instant;

use tracing::debug;

use super::{Branch, Deadline, Outcome, Proxy, ProxyTx, Target};
use crate::sip::edge::EdgeCore;
use crate::sip::message::{SipMessage, StatusCode};
use crate::sip::registrar::status;
use crate::sip::transaction::{ClientTxId, ServerTxId, TxId};

/// What goes upstream when all branches are done.
enum Choice {
    Forward(Box<SipMessage>),
    Generate(StatusCode, Option<String>),
}

impl Proxy {
    /// §16.7 for a response on branch client `cid`.
    pub(in crate::sip) fn branch_response(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        cid: ClientTxId,
        mut resp: SipMessage,
    ) {
        if self.cancels.contains(&cid) {
            return;
        }
        let Some(&(pid, bi)) = self.by_client.get(&cid) else { return };
        // §16.7 step 3: remove our Via; a response with none left was ours.
        resp.pop_via();
        let Some(code) = resp.status().filter(|_| resp.top_via().is_some()) else { return };
        let Some(p) = self.proxies.get(&pid) else { return };
        let span = p.span.clone();
        let _guard = span.enter();
        if let Some(Branch { target: Target::Local { to, .. }, .. }) = p.branches.get(bi)
            && code != StatusCode::TRYING
            && code.as_u16() < 300
        {
            let to = *to;
            self.learn_contact(now, &resp, to);
        }
        let Some(p) = self.proxies.get_mut(&pid) else { return };
        let server = p.server;
        if code == StatusCode::TRYING {
            return;
        }
        if code.is_provisional() {
            if p.final_sent {
                return;
            }
            if p.invite {
                // §16.7 step 2: Timer C restarts on every provisional.
                let at = now + core.cfg.timer_c;
                p.timer_c = Some(at);
                self.deadlines.insert((at, Deadline::TimerC(pid)));
            }
            return core.send_response(now, server, resp);
        }
        let invite = p.invite;
        let Some(branch) = p.branches.get_mut(bi) else { return };
        if code.is_success() {
            branch.outcome = Some(Outcome { status: code, response: None, reason: None, failed: false });
            let first = !p.final_sent;
            p.final_sent = true;
            // §16.7 step 9: every 2xx to an INVITE goes upstream.
            if invite || first {
                core.send_response(now, server, resp);
            }
            if first && invite {
                self.cancel_pending(core, now, pid);
            }
            return;
        }
        let failed = matches!(code.as_u16(), 408 | 503);
        branch.outcome = Some(Outcome { status: code, response: Some(resp), reason: None, failed });
        self.distrust_location(pid, bi, code);
        if code.as_u16() >= 600 && invite {
            self.cancel_pending(core, now, pid);
        }
        self.check_complete(core, now, pid);
    }

    /// A branch ended without a response: timeout (408) or transport error.
    pub(in crate::sip) fn branch_failed(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        cid: ClientTxId,
        code: StatusCode,
        reason: Option<&str>,
    ) {
        if self.cancels.contains(&cid) {
            return;
        }
        let Some(&(pid, bi)) = self.by_client.get(&cid) else { return };
        let Some(b) = self.proxies.get_mut(&pid).and_then(|p| p.branches.get_mut(bi)) else { return };
        if b.outcome.is_none() {
            debug!(code = code.as_u16(), "branch failed");
            b.outcome = Some(Outcome { status: code, response: None, reason: reason.map(str::to_owned), failed: true });
            self.distrust_location(pid, bi, StatusCode::SERVICE_UNAVAILABLE);
        }
        self.check_complete(core, now, pid);
    }

    pub(in crate::sip) fn client_gone(&mut self, core: &mut EdgeCore, now: Instant, cid: ClientTxId) {
        if self.cancels.remove(&cid) {
            return;
        }
        let Some((pid, bi)) = self.by_client.remove(&cid) else { return };
        if let Some(b) = self.proxies.get_mut(&pid).and_then(|p| p.branches.get_mut(bi)) {
            b.client = None;
            if b.outcome.is_none() {
                let reason = Some("Branch ended without an answer".to_owned());
                b.outcome = Some(Outcome { status: StatusCode::REQUEST_TIMEOUT, response: None, reason, failed: true });
            }
        }
        self.check_complete(core, now, pid);
        self.maybe_reap(pid);
    }

    /// §16.10: CANCEL for server INVITE `invite` (answered 200 hop by hop).
    pub(in crate::sip) fn on_cancel(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        tx: ServerTxId,
        cancel: &SipMessage,
        invite: Option<ServerTxId>,
    ) {
        let Some(invite) = invite else {
            return core.reply(now, tx, cancel, StatusCode::TRANSACTION_DOES_NOT_EXIST, None, &[]);
        };
        core.reply(now, tx, cancel, StatusCode::OK, None, &[]);
        let Some(&pid) = self.by_server.get(&invite) else { return };
        let Some(p) = self.proxies.get_mut(&pid) else { return };
        if p.final_sent {
            return;
        }
        p.cancelled = true;
        let pending = p.branches.iter().any(|b| b.outcome.is_none());
        if p.fetch.is_some() || !pending {
            return self.generate_final(core, now, pid, StatusCode::REQUEST_TERMINATED, None);
        }
        self.cancel_pending(core, now, pid);
    }

    /// CANCELs every branch still waiting for a final response (§9.1, run by
    /// the transaction layer); a branch silent 64*T1 later counts as 487.
    pub(super) fn cancel_pending(&mut self, core: &mut EdgeCore, now: Instant, pid: u64) {
        let wait = 64 * core.cfg.transactions.t1;
        let Some(p) = self.proxies.get(&pid) else { return };
        let pending: Vec<(usize, ClientTxId)> = p
            .branches
            .iter()
            .enumerate()
            .filter(|(_, b)| b.outcome.is_none() && !b.cancel_sent)
            .filter_map(|(i, b)| Some((i, b.client?)))
            .collect();
        for (bi, cid) in pending {
            match core.tl.cancel_request(now, cid) {
                Ok(c) => {
                    self.cancels.insert(c);
                    if let Some(b) = self.proxies.get_mut(&pid).and_then(|p| p.branches.get_mut(bi)) {
                        b.cancel_sent = true;
                    }
                    self.deadlines.insert((now + wait, Deadline::CancelWait(pid, bi)));
                }
                Err(e) => debug!(error = %e, "branch not cancelled"),
            }
        }
    }

    pub(super) fn cancel_wait(&mut self, core: &mut EdgeCore, now: Instant, pid: u64, bi: usize) {
        let Some(b) = self.proxies.get_mut(&pid).and_then(|p| p.branches.get_mut(bi)) else { return };
        if b.outcome.is_some() {
            return;
        }
        b.outcome = Some(Outcome {
            status: StatusCode::REQUEST_TERMINATED,
            response: None,
            reason: Some("No answer to CANCEL".to_owned()),
            failed: false,
        });
        if let Some(cid) = b.client {
            // Ends the client transaction the layer would keep forever.
            core.tl.transport_error(TxId::Client(cid));
        }
        self.check_complete(core, now, pid);
    }

    pub(super) fn arm_timer_c(&mut self, core: &mut EdgeCore, now: Instant, pid: u64) {
        let Some(p) = self.proxies.get_mut(&pid) else { return };
        if p.invite && !p.branches.is_empty() {
            let at = now + core.cfg.timer_c;
            p.timer_c = Some(at);
            self.deadlines.insert((at, Deadline::TimerC(pid)));
        }
    }

    /// §16.6 step 11: Timer C fired — cancel what is still ringing.
    pub(super) fn timer_c(&mut self, core: &mut EdgeCore, now: Instant, pid: u64, at: Instant) {
        let Some(p) = self.proxies.get(&pid) else { return };
        if p.timer_c != Some(at) || p.final_sent {
            return;
        }
        debug!("Timer C fired");
        self.cancel_pending(core, now, pid);
    }

    /// §16.7 step 4: once every branch is final, answer with the best.
    pub(super) fn check_complete(&mut self, core: &mut EdgeCore, now: Instant, pid: u64) {
        let Some(p) = self.proxies.get(&pid) else { return };
        if p.final_sent || p.fetch.is_some() || p.branches.iter().any(|b| b.outcome.is_none()) {
            return;
        }
        let choice = choose(p);
        match choice {
            Choice::Forward(resp) => {
                let server = p.server;
                if let Some(p) = self.proxies.get_mut(&pid) {
                    p.final_sent = true;
                }
                core.send_response(now, server, *resp);
            }
            Choice::Generate(code, reason) => self.generate_final(core, now, pid, code, reason),
        }
    }

    pub(super) fn generate_final(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        pid: u64,
        code: StatusCode,
        reason: Option<String>,
    ) {
        let Some(p) = self.proxies.get_mut(&pid) else { return };
        p.final_sent = true;
        let (server, req) = (p.server, p.request.clone());
        core.reply(now, server, &req, code, reason.as_deref(), &[]);
        self.maybe_reap(pid);
    }
}

/// §16.7 step 6: a 6xx wins; if every branch failed on an AOR lookup the
/// callee is unreachable (480, RFC 7904 §4); otherwise the lowest class,
/// real answers before synthesised ones, first come first; a chosen 503
/// becomes 500 so the caller does not back off from this proxy.
fn choose(p: &ProxyTx) -> Choice {
    let outs: Vec<&Outcome> = p.branches.iter().filter_map(|b| b.outcome.as_ref()).collect();
    let six = outs.iter().find(|o| o.status.as_u16() >= 600 && o.response.is_some());
    if p.aor_lookup && six.is_none() && outs.iter().all(|o| o.failed) {
        return Choice::Generate(StatusCode::TEMPORARILY_UNAVAILABLE, None);
    }
    let best = six.or_else(|| outs.iter().min_by_key(|o| (o.status.as_u16() / 100, o.response.is_none())));
    match best {
        Some(o) if o.status == StatusCode::SERVICE_UNAVAILABLE => Choice::Generate(StatusCode::SERVER_ERROR, None),
        Some(Outcome { response: Some(r), .. }) => Choice::Forward(Box::new(r.clone())),
        Some(o) => Choice::Generate(o.status, o.reason.clone()),
        None => Choice::Generate(status(480), None),
    }
}

#[cfg(test)]
mod tests {
    use tracing::Span;

    use super::*;
    use crate::sip::account::NodeRef;
    use crate::sip::edge::Source;
    use crate::sip::transaction::{Transport, TransportAddr};

    fn outcome(code: u16, real: bool, failed: bool) -> Option<Outcome> {
        let resp = real.then(|| {
            let text = format!(
                "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\n\
                 To: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            SipMessage::parse(text.as_bytes()).unwrap()
        });
        Some(Outcome { status: StatusCode::new(code).unwrap(), response: resp, reason: None, failed })
    }

    fn proxy(aor_lookup: bool, outs: Vec<Option<Outcome>>) -> ProxyTx {
        let req = SipMessage::parse(
            b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\n\
              To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let addr = TransportAddr { transport: Transport::Udp, addr: "192.0.2.1:5060".parse().unwrap(), flow: None };
        ProxyTx {
            server: crate::sip::transaction::TransactionLayer::new(Default::default())
                .handle_request(Instant::now(), &req, addr)
                .new_id(),
            request: req,
            source: Source::Local(addr),
            hash: String::new(),
            record_route: true,
            invite: true,
            aor_lookup,
            branches: outs
                .into_iter()
                .map(|outcome| Branch {
                    target: Target::Node(NodeRef::from_u128(1)),
                    client: None,
                    outcome,
                    cancel_sent: false,
                })
                .collect(),
            fetch: None,
            final_sent: false,
            cancelled: false,
            server_gone: false,
            timer_c: None,
            looked_up: None,
            span: Span::none(),
        }
    }

    trait NewId {
        fn new_id(self) -> ServerTxId;
    }
    impl NewId for crate::sip::transaction::RequestDisposition {
        fn new_id(self) -> ServerTxId {
            match self {
                crate::sip::transaction::RequestDisposition::New(id) => id,
                other => panic!("{other:?}"),
            }
        }
    }

    fn code(c: Choice) -> u16 {
        match c {
            Choice::Forward(r) => r.status().unwrap().as_u16(),
            Choice::Generate(s, _) => s.as_u16(),
        }
    }

    #[test]
    fn best_response_selection() {
        // Lowest class wins; real before synthesised.
        assert_eq!(code(choose(&proxy(false, vec![outcome(486, true, false), outcome(302, true, false)]))), 302);
        assert_eq!(code(choose(&proxy(false, vec![outcome(408, false, true), outcome(404, true, false)]))), 404);
        // 6xx beats everything.
        assert_eq!(code(choose(&proxy(false, vec![outcome(302, true, false), outcome(603, true, false)]))), 603);
        // A chosen 503 becomes 500.
        assert_eq!(code(choose(&proxy(false, vec![outcome(503, true, true)]))), 500);
        // Every serving node failed → 480; an answer among them is used.
        assert_eq!(code(choose(&proxy(true, vec![outcome(503, true, true), outcome(408, false, true)]))), 480);
        assert_eq!(code(choose(&proxy(true, vec![outcome(503, true, true), outcome(486, true, false)]))), 486);
    }
}
