//! Calls, both sides (RFC 3261 §13–§15): the caller's INVITE with 407
//! retry (§22.3), the 2xx ACK built from the dialog (§13.2.2.4), CANCEL
//! (§9.1) and BYE (§15.1.1); the callee's 180 and 200 (§13.3.1), its 2xx
//! retransmission until the ACK (§13.3.1.4) and the answer to BYE and
//! CANCEL (§15.1.2, §9.2).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::build::{self, Dialog, RequestParts};
use super::{ALLOW, CallId, Purpose, Timer, UaError, UaEvent, UserAgent};
use crate::sip::message::{Contacts, Method, NameAddr, SipMessage, Uri};
use crate::sip::transaction::{ClientTxId, ServerTxId, TransportAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Caller,
    Callee,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallState {
    /// Caller: INVITE sent, at most 100 Trying back.
    Calling,
    /// Caller: 180/183 received.
    Early,
    /// Callee: ringing here.
    Incoming,
    /// Callee: 200 sent, waiting for the ACK.
    Answered,
    Established,
    /// Our BYE is out.
    Ending,
}

/// The UAS core's 2xx retransmission (§13.3.1.4): Timer G's schedule until
/// the ACK, giving up after 64*T1 (Timer H's value).
#[derive(Debug)]
struct Resend {
    bytes: Bytes,
    next: Option<Instant>,
    interval: Duration,
    give_up: Instant,
    cseq: u32,
}

impl Resend {
    /// A 2xx to resend on Timer G until the ACK, giving up after 64·T1
    /// (RFC 3261 §13.3.1.4); over a reliable transport it is sent once.
    fn for_2xx(bytes: Bytes, now: Instant, t1: Duration, reliable: bool, cseq: u32) -> Resend {
        Resend { bytes, next: (!reliable).then_some(now + t1), interval: t1, give_up: now + 64 * t1, cseq }
    }

    fn due(&self) -> Instant {
        self.next.map_or(self.give_up, |n| n.min(self.give_up))
    }
}

#[derive(Debug)]
pub(super) struct Call {
    role: Role,
    state: CallState,
    dialog: Dialog,
    started: Instant,
    /// Our offer (caller) or answer (callee).
    sdp: Vec<u8>,
    /// Caller: the current INVITE (a new one after a 407) and its CSeq.
    invite_tx: Option<ClientTxId>,
    invite_cseq: u32,
    auth_tries: u8,
    bye_tries: u8,
    /// Which cached challenge our requests answer: 407 (true) or 401.
    auth_proxy: bool,
    cancelled: bool,
    ack: Option<Bytes>,
    /// Callee: the INVITE's server transaction and where responses go.
    server_tx: Option<ServerTxId>,
    reply_to: TransportAddr,
    record_route: Vec<String>,
    resend: Option<Resend>,
    answer_at: Option<Instant>,
    /// §15: the callee may not BYE before the ACK (or its timeout).
    bye_after_ack: bool,
}

impl UserAgent {
    /// Calls `target` (`sip:bob@domain` or `bob@domain`) with `sdp` as the
    /// offer (a PCMU offer when `None`). Events: [`UaEvent::Ringing`], then
    /// [`UaEvent::CallEstablished`] or [`UaEvent::CallFailed`].
    pub fn call(&mut self, now: Instant, target: &str, sdp: Option<Vec<u8>>) -> Result<CallId, UaError> {
        let text = if target.contains(':') { target.to_owned() } else { format!("sip:{target}") };
        let uri = Uri::parse(&text).ok().filter(|u| u.as_sip().is_some()).ok_or(UaError::BadTarget(text))?;
        let id = CallId(self.fresh_id());
        let mut local = self.aor.clone();
        local.params.set("tag", Some(&self.rng.tag()))?;
        let dialog = Dialog {
            call_id: format!("{}@{}", self.rng.hex(), self.cfg.contact.0),
            local,
            remote: NameAddr::new(uri.clone()),
            remote_target: uri,
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: None,
        };
        let sdp = sdp.unwrap_or_else(|| self.default_sdp(id));
        let key = (dialog.call_id.clone(), dialog.local_tag().to_owned());
        let call = Call::new(Role::Caller, CallState::Calling, dialog, now, sdp, self.cfg.next_hop);
        self.calls.insert(id, Box::new(call));
        self.dialogs.insert(key, id);
        if let Err(e) = self.send_invite(now, id) {
            self.drop_call(id);
            return Err(e);
        }
        self.settle(now);
        Ok(id)
    }

    /// Answers a ringing incoming call with `sdp` (a PCMU answer when
    /// `None`); [`UaEvent::CallEstablished`] follows when the ACK arrives.
    pub fn answer(&mut self, now: Instant, call: CallId, sdp: Option<Vec<u8>>) -> Result<(), UaError> {
        let t1 = self.cfg.timers.t1;
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        if c.role != Role::Callee || c.state != CallState::Incoming {
            return Err(UaError::InvalidState("only a ringing incoming call can be answered"));
        }
        if let Some(s) = sdp {
            c.sdp = s;
        }
        let tx = c.server_tx.ok_or(UaError::InvalidState("no INVITE transaction"))?;
        let req = self.tl.server_request(tx).cloned().ok_or(UaError::InvalidState("INVITE transaction gone"))?;
        let resp = self.ok_response(call, &req).ok_or(UaError::UnknownCall)?;
        let bytes = Bytes::from(resp.to_bytes());
        self.tl.respond(now, tx, resp).map_err(|e| UaError::Transaction(e.to_string()))?;
        let reliable = self.calls.get(&call).is_some_and(|c| c.reply_to.transport.is_reliable());
        let resend = Resend::for_2xx(bytes, now, t1, reliable, req.cseq().seq);
        self.schedule(resend.due(), Timer::Resend2xx(call));
        if let Some(c) = self.calls.get_mut(&call) {
            c.resend = Some(resend);
            c.state = CallState::Answered;
        }
        self.settle(now);
        Ok(())
    }

    /// Ends a call in any state: CANCEL before an answer (the call then
    /// fails with 487), 603 to a ringing incoming call, BYE once
    /// established. [`UaEvent::CallEnded`] or [`UaEvent::CallFailed`] follows.
    pub fn hangup(&mut self, now: Instant, call: CallId) -> Result<(), UaError> {
        let c = self.calls.get_mut(&call).ok_or(UaError::UnknownCall)?;
        match (c.role, c.state) {
            (Role::Caller, CallState::Calling | CallState::Early) => {
                c.cancelled = true;
                if let Some(tx) = c.invite_tx {
                    let cancel = self.tl.cancel_request(now, tx).map_err(|e| UaError::Transaction(e.to_string()))?;
                    self.clients.insert(cancel, Purpose::Cancel(call));
                }
            }
            (Role::Callee, CallState::Incoming) => {
                if let Some(tx) = c.server_tx
                    && let Some(req) = self.tl.server_request(tx).cloned()
                {
                    let tag = c.dialog.local_tag().to_owned();
                    self.reply(now, tx, &req, 603, Some(&tag), &[]);
                }
                self.end_call(call, false);
            }
            (Role::Callee, CallState::Answered) => c.bye_after_ack = true,
            (_, CallState::Established) => self.send_bye(now, call)?,
            (_, CallState::Ending) | (Role::Caller, _) | (Role::Callee, _) => {}
        }
        self.settle(now);
        Ok(())
    }

    fn default_sdp(&mut self, call: CallId) -> Vec<u8> {
        build::default_sdp(&self.cfg.contact.0, self.cfg.media_port, call.0)
    }

    fn send_invite(&mut self, now: Instant, id: CallId) -> Result<(), UaError> {
        let c = self.calls.get_mut(&id).ok_or(UaError::UnknownCall)?;
        c.dialog.local_cseq += 1;
        let (d, sdp, proxy) = (c.dialog.clone(), c.sdp.clone(), c.auth_proxy);
        let creds = self.credentials(proxy, "INVITE", &d.remote_target);
        let via = self.via();
        let contact = self.contact.clone();
        let mut extra = vec![("Contact", contact.as_str()), ("Allow", ALLOW), ("Content-Type", "application/sdp")];
        if let Some((name, value)) = &creds {
            extra.push((name, value.as_str()));
        }
        let parts = RequestParts {
            method: Method::Invite,
            uri: &d.remote_target,
            from: &d.local,
            to: &d.remote,
            call_id: &d.call_id,
            cseq: d.local_cseq,
            routes: &[],
        };
        let req = build::request(&parts, &via, &extra, sdp)?;
        let tx = self.start(now, req, Purpose::Invite(id))?;
        if let Some(c) = self.calls.get_mut(&id) {
            c.invite_tx = Some(tx);
            c.invite_cseq = d.local_cseq;
        }
        Ok(())
    }

    pub(super) fn invite_response(&mut self, now: Instant, id: CallId, tx: ClientTxId, resp: &SipMessage) {
        let Some(status) = resp.status() else { return };
        let code = status.as_u16();
        let Some(c) = self.calls.get_mut(&id) else {
            return self.stray_response(now, resp);
        };
        if c.invite_tx != Some(tx) {
            return;
        }
        if status.is_provisional() {
            if code > 100 && c.state == CallState::Calling {
                c.state = CallState::Early;
                self.emit(UaEvent::Ringing { call: id });
            }
            return;
        }
        if status.is_success() {
            return self.invite_ok(now, id, resp);
        }
        // Non-2xx: the transaction layer already sent the ACK (§17.1.1.3).
        if matches!(code, 401 | 407) && !c.cancelled {
            let mut tries = c.auth_tries;
            let retry = self.take_challenge(resp, &mut tries);
            if let Some(c) = self.calls.get_mut(&id) {
                c.auth_tries = tries;
                c.auth_proxy = code == 407;
            }
            // §22.2: same Call-ID and tags, CSeq one higher.
            if retry && self.send_invite(now, id).is_ok() {
                return;
            }
        }
        self.invite_failed(id, tx, code);
    }

    pub(super) fn invite_failed(&mut self, id: CallId, tx: ClientTxId, code: u16) {
        let Some(c) = self.calls.get(&id) else { return };
        if c.invite_tx == Some(tx) && matches!(c.state, CallState::Calling | CallState::Early) {
            self.drop_call(id);
            self.emit(UaEvent::CallFailed { call: id, code });
        }
    }

    /// A 2xx to our INVITE: the first one confirms the dialog (§12.1.2,
    /// §13.2.2.4); a repeat of it gets the same ACK again; one from another
    /// fork is ACKed and ended with a BYE.
    fn invite_ok(&mut self, now: Instant, id: CallId, resp: &SipMessage) {
        let Some(tag) = resp.to().tag().map(str::to_owned) else {
            self.counters.stray_responses += 1;
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else { return };
        match c.state {
            CallState::Calling | CallState::Early => {
                c.dialog.remote = resp.to().clone();
                if let Some(target) = first_contact(resp) {
                    c.dialog.remote_target = target;
                }
                c.dialog.route_set = reversed_record_route(resp);
                c.state = CallState::Established;
                let (d, cseq, setup, cancelled) = (c.dialog.clone(), c.invite_cseq, now - c.started, c.cancelled);
                let ack = self.ack_for(&d, cseq);
                if let Some(c) = self.calls.get_mut(&id) {
                    c.ack = ack.clone();
                }
                if let Some(ack) = ack {
                    self.send_raw(self.cfg.next_hop, ack);
                }
                self.emit(UaEvent::CallEstablished { call: id, setup });
                // §9.1: a 2xx that crossed our CANCEL is ended with a BYE.
                if cancelled && let Err(e) = self.send_bye(now, id) {
                    tracing::debug!(error = %e, "BYE after a cancelled 2xx not sent");
                }
            }
            _ if c.dialog.remote.tag() == Some(tag.as_str()) => {
                if let Some(ack) = c.ack.clone() {
                    self.send_raw(self.cfg.next_hop, ack);
                }
            }
            _ => {
                let (base, cseq) = (c.dialog.clone(), c.invite_cseq);
                self.end_fork(now, &base, cseq, resp);
            }
        }
    }

    /// §13.2.2.4: every 2xx is ACKed; a second dialog we do not want is
    /// ended at once with a BYE.
    fn end_fork(&mut self, now: Instant, base: &Dialog, cseq: u32, resp: &SipMessage) {
        let mut d = base.clone();
        d.remote = resp.to().clone();
        d.remote_target = first_contact(resp).unwrap_or(d.remote_target);
        d.route_set = reversed_record_route(resp);
        d.local_cseq = cseq;
        if let Some(ack) = self.ack_for(&d, cseq) {
            self.send_raw(self.cfg.next_hop, ack);
        }
        self.orphan_bye(now, &mut d);
    }

    /// The ACK of a 2xx (§13.2.2.4): a new transaction-less request in the
    /// dialog with the INVITE's CSeq number.
    fn ack_for(&mut self, d: &Dialog, cseq: u32) -> Option<Bytes> {
        let via = self.via();
        let parts = RequestParts {
            method: Method::Ack,
            uri: &d.remote_target,
            from: &d.local,
            to: &d.remote,
            call_id: &d.call_id,
            cseq,
            routes: &d.route_set,
        };
        match build::request(&parts, &via, &[], Vec::new()) {
            Ok(ack) => Some(Bytes::from(ack.to_bytes())),
            Err(e) => {
                tracing::debug!(error = %e, "ACK not built");
                None
            }
        }
    }

    /// A BYE in `d` (§15.1.1) answering the cached challenge of `proxy`.
    fn bye_request(&mut self, d: &Dialog, proxy: Option<bool>) -> Result<SipMessage, UaError> {
        let creds = proxy.and_then(|p| self.credentials(p, "BYE", &d.remote_target));
        let via = self.via();
        let mut extra = Vec::new();
        if let Some((name, value)) = &creds {
            extra.push((*name, value.as_str()));
        }
        let parts = RequestParts {
            method: Method::Bye,
            uri: &d.remote_target,
            from: &d.local,
            to: &d.remote,
            call_id: &d.call_id,
            cseq: d.local_cseq,
            routes: &d.route_set,
        };
        Ok(build::request(&parts, &via, &extra, Vec::new())?)
    }

    fn send_bye(&mut self, now: Instant, id: CallId) -> Result<(), UaError> {
        let c = self.calls.get_mut(&id).ok_or(UaError::UnknownCall)?;
        c.dialog.local_cseq += 1;
        c.state = CallState::Ending;
        c.resend = None;
        // Credentials only after this BYE was challenged: the edge lets
        // in-dialog requests through on its Record-Route token.
        let proxy = (c.bye_tries > 0).then_some(c.auth_proxy);
        let d = c.dialog.clone();
        let req = self.bye_request(&d, proxy)?;
        self.start(now, req, Purpose::Bye(id))?;
        Ok(())
    }

    /// A BYE for a dialog we do not keep; its outcome raises no event.
    fn orphan_bye(&mut self, now: Instant, d: &mut Dialog) {
        d.local_cseq += 1;
        let sent = self.bye_request(d, None).and_then(|req| self.start(now, req, Purpose::OrphanBye));
        if let Err(e) = sent {
            tracing::debug!(error = %e, "BYE not sent");
        }
    }

    pub(super) fn bye_response(&mut self, now: Instant, id: CallId, resp: &SipMessage) {
        let Some(status) = resp.status() else { return };
        if status.is_provisional() {
            return;
        }
        let code = status.as_u16();
        if matches!(code, 401 | 407)
            && let Some(c) = self.calls.get_mut(&id)
        {
            if c.state != CallState::Ending {
                return;
            }
            let mut tries = c.bye_tries;
            let retry = self.take_challenge(resp, &mut tries);
            if let Some(c) = self.calls.get_mut(&id) {
                c.bye_tries = tries;
                c.auth_proxy = code == 407;
            }
            if retry && self.send_bye(now, id).is_ok() {
                return;
            }
        }
        // §15.1.1: any final response (or none) ends the dialog.
        self.end_call(id, false);
    }

    // ---- callee

    /// A new INVITE outside any dialog: ring (180), then wait for
    /// [`UserAgent::answer`] or the auto-answer delay.
    pub(super) fn incoming_invite(&mut self, now: Instant, tx: ServerTxId, req: &SipMessage, from: TransportAddr) {
        let (Some(target), Some(via)) = (first_contact(req), req.top_via()) else {
            self.counters.rejected_requests += 1;
            let tag = self.rng.tag();
            return self.reply(now, tx, req, 400, Some(&tag), &[]);
        };
        let reply_to = build::reply_target(via, from);
        let id = CallId(self.fresh_id());
        let mut local = req.to().clone();
        if local.params.set("tag", Some(&self.rng.tag())).is_err() {
            return self.reply(now, tx, req, 500, None, &[]);
        }
        let dialog = Dialog {
            call_id: req.call_id().to_owned(),
            local,
            remote: req.from().clone(),
            remote_target: target,
            // §12.1.1: the Record-Route in order.
            route_set: req.header_list("Record-Route").map(str::to_owned).collect(),
            local_cseq: 0,
            remote_cseq: Some(req.cseq().seq),
        };
        let key = (dialog.call_id.clone(), dialog.local_tag().to_owned());
        let sdp = self.default_sdp(id);
        let mut call = Call::new(Role::Callee, CallState::Incoming, dialog, now, sdp, reply_to);
        call.server_tx = Some(tx);
        call.record_route = build::record_route_lines(req);
        self.calls.insert(id, Box::new(call));
        self.dialogs.insert(key, id);
        if let Some(ringing) = self.dialog_response(id, req, 180, None) {
            self.respond(now, tx, ringing);
        }
        self.emit(UaEvent::IncomingCall { call: id, from: req.from().uri.to_string() });
        if let Some(delay) = self.cfg.auto_answer {
            let at = now + delay;
            if let Some(c) = self.calls.get_mut(&id) {
                c.answer_at = Some(at);
            }
            self.schedule(at, Timer::Answer(id));
        }
    }

    /// A re-INVITE in a dialog (a session refresh or hold): answered 200
    /// with our last SDP, retransmitted until its ACK like the first.
    pub(super) fn reinvite(&mut self, now: Instant, tx: ServerTxId, req: &SipMessage, id: CallId) {
        let t1 = self.cfg.timers.t1;
        let Some(c) = self.calls.get(&id) else { return };
        if c.resend.is_some() || c.state != CallState::Established {
            // §14.2: one INVITE at a time.
            return self.reply(now, tx, req, 491, None, &[]);
        }
        let reliable = c.reply_to.transport.is_reliable();
        let Some(resp) = self.ok_response(id, req) else { return };
        let bytes = Bytes::from(resp.to_bytes());
        self.respond(now, tx, resp);
        let resend = Resend::for_2xx(bytes, now, t1, reliable, req.cseq().seq);
        self.schedule(resend.due(), Timer::Resend2xx(id));
        if let Some(c) = self.calls.get_mut(&id) {
            c.resend = Some(resend);
        }
    }

    /// A 180 or 200 in the callee's dialog: our tag, Contact, the
    /// Record-Route copied (§12.1.1), and for 200 our SDP.
    fn dialog_response(&self, id: CallId, req: &SipMessage, code: u16, body: Option<&[u8]>) -> Option<SipMessage> {
        let c = self.calls.get(&id)?;
        let mut extra: Vec<(&str, &str)> = vec![("Contact", self.contact.as_str())];
        extra.extend(c.record_route.iter().map(|rr| ("Record-Route", rr.as_str())));
        if body.is_some() {
            extra.push(("Allow", ALLOW));
            extra.push(("Content-Type", "application/sdp"));
        }
        Some(build::response(req, code, Some(c.dialog.local_tag()), &extra, body))
    }

    fn ok_response(&self, id: CallId, req: &SipMessage) -> Option<SipMessage> {
        let sdp = self.calls.get(&id)?.sdp.clone();
        self.dialog_response(id, req, 200, Some(&sdp))
    }

    pub(super) fn answer_due(&mut self, now: Instant, id: CallId, at: Instant) {
        let due = self.calls.get(&id).is_some_and(|c| c.answer_at == Some(at) && c.state == CallState::Incoming);
        if due && let Err(e) = self.answer(now, id, None) {
            tracing::debug!(error = %e, call = %id, "auto-answer failed");
        }
    }

    pub(super) fn resend_due(&mut self, now: Instant, id: CallId, at: Instant) {
        let t2 = self.cfg.timers.t2;
        let Some(c) = self.calls.get_mut(&id) else { return };
        let Some(r) = c.resend.as_mut().filter(|r| r.due() == at) else { return };
        if now >= r.give_up {
            // §13.3.1.4: no ACK; the session is ended with a BYE.
            c.resend = None;
            let mut d = c.dialog.clone();
            let initial = c.state == CallState::Answered;
            if initial {
                self.drop_call(id);
                self.emit(UaEvent::CallFailed { call: id, code: 408 });
                return self.orphan_bye(now, &mut d);
            }
            return;
        }
        r.interval = (r.interval * 2).min(t2);
        r.next = Some(now + r.interval);
        let (bytes, due, to) = (r.bytes.clone(), r.due(), c.reply_to);
        self.counters.retransmitted_2xx += 1;
        self.send_raw(to, bytes);
        self.schedule(due, Timer::Resend2xx(id));
    }

    pub(super) fn on_ack(&mut self, now: Instant, req: &SipMessage) {
        let Some(id) = req.to().tag().and_then(|t| self.dialog_of(req.call_id(), t)) else {
            self.counters.stray_responses += 1;
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else { return };
        if c.resend.as_ref().is_some_and(|r| r.cseq == req.cseq().seq) {
            c.resend = None;
        }
        if c.state != CallState::Answered || c.resend.is_some() {
            return;
        }
        c.state = CallState::Established;
        let (setup, bye) = (now - c.started, c.bye_after_ack);
        self.emit(UaEvent::CallEstablished { call: id, setup });
        if bye && let Err(e) = self.send_bye(now, id) {
            tracing::debug!(error = %e, "BYE after ACK not sent");
        }
    }

    /// §15.1.2: BYE ends the dialog (481 if we have none; §12.2.2: 500 for
    /// a CSeq lower than the last).
    pub(super) fn on_bye(&mut self, now: Instant, tx: ServerTxId, req: &SipMessage, id: Option<CallId>) {
        let Some(id) = id else {
            self.counters.unknown_dialog += 1;
            return self.reply(now, tx, req, 481, None, &[]);
        };
        let seq = req.cseq().seq;
        if let Some(c) = self.calls.get_mut(&id) {
            if c.dialog.remote_cseq.is_some_and(|r| seq < r) {
                return self.reply(now, tx, req, 500, None, &[]);
            }
            c.dialog.remote_cseq = Some(seq);
        }
        self.reply(now, tx, req, 200, None, &[]);
        self.end_call(id, true);
    }

    /// §9.2: 200 to the CANCEL, then 487 to the INVITE if still ringing.
    pub(super) fn on_cancel(&mut self, now: Instant, tx: ServerTxId, req: &SipMessage, invite: Option<ServerTxId>) {
        let found = invite.and_then(|i| self.calls.iter().find(|(_, c)| c.server_tx == Some(i)).map(|(id, _)| *id));
        let (Some(inv), Some(id)) = (invite, found) else {
            self.counters.unknown_dialog += 1;
            return self.reply(now, tx, req, 481, None, &[]);
        };
        let tag = self.calls.get(&id).map(|c| c.dialog.local_tag().to_owned());
        self.reply(now, tx, req, 200, tag.as_deref(), &[]);
        if self.calls.get(&id).is_some_and(|c| c.state == CallState::Incoming)
            && let Some(invite_req) = self.tl.server_request(inv).cloned()
        {
            self.reply(now, inv, &invite_req, 487, tag.as_deref(), &[]);
            self.end_call(id, true);
        }
    }

    pub(super) fn stray_response(&mut self, now: Instant, resp: &SipMessage) {
        let is_invite_2xx = resp.cseq().method == Method::Invite && resp.status().is_some_and(|s| s.is_success());
        let call = resp.from().tag().and_then(|t| self.dialog_of(resp.call_id(), t));
        match call {
            Some(id) if is_invite_2xx && self.calls.get(&id).is_some_and(|c| c.role == Role::Caller) => {
                self.invite_ok(now, id, resp)
            }
            _ => self.counters.stray_responses += 1,
        }
    }

    pub(super) fn end_call(&mut self, id: CallId, by_remote: bool) {
        if self.drop_call(id) {
            self.emit(UaEvent::CallEnded { call: id, by_remote });
        }
    }

    fn drop_call(&mut self, id: CallId) -> bool {
        match self.calls.remove(&id) {
            Some(c) => {
                self.forget_dialog(&c.dialog);
                true
            }
            None => false,
        }
    }
}

impl Call {
    fn new(role: Role, state: CallState, dialog: Dialog, now: Instant, sdp: Vec<u8>, reply_to: TransportAddr) -> Call {
        Call {
            role,
            state,
            dialog,
            started: now,
            sdp,
            invite_tx: None,
            invite_cseq: 0,
            auth_tries: 0,
            bye_tries: 0,
            auth_proxy: true,
            cancelled: false,
            ack: None,
            server_tx: None,
            reply_to,
            record_route: Vec::new(),
            resend: None,
            answer_at: None,
            bye_after_ack: false,
        }
    }
}

/// The first Contact URI of a message.
fn first_contact(msg: &SipMessage) -> Option<Uri> {
    match msg.contacts() {
        Ok(Contacts::Bindings(list)) => list.into_iter().next().map(|c| c.uri),
        _ => None,
    }
}

/// §12.1.2: the caller's route set is the 2xx's Record-Route in reverse.
fn reversed_record_route(resp: &SipMessage) -> Vec<String> {
    let mut list: Vec<String> = resp.header_list("Record-Route").map(str::to_owned).collect();
    list.reverse();
    list
}
