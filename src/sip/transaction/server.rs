//! Server transactions (RFC 3261 §17.2): INVITE (Timers G, H, I; RFC 6026
//! Accepted with Timer L; the automatic 100 Trying) and non-INVITE (Timer J),
//! matching (§17.2.3 with the RFC 2543 fallback) and CANCEL matching (§9.2).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::transport::response_target;
use super::{
    MAGIC_COOKIE, RequestDisposition, ServerTxId, TransactionLayer, Transmit, TransportAddr, TxError, TxEvent, TxId,
};
use crate::sip::message::{Method, SipMessage, StatusCode, Via};

/// Server transaction states (Figures 7 and 8, RFC 6026 Figure 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
}

#[derive(Debug)]
pub(super) struct ServerTx {
    pub(super) invite: bool,
    pub(super) state: ServerState,
    pub(super) request: SipMessage,
    pub(super) reply_to: TransportAddr,
    pub(super) key: ServerKey,
    pub(super) last_response: Option<Bytes>,
    /// The automatic 100 Trying.
    pub(super) trying_at: Option<Instant>,
    /// Timer G.
    pub(super) retransmit_at: Option<Instant>,
    pub(super) interval: Duration,
    /// Timer H.
    pub(super) timeout_at: Option<Instant>,
    /// Timer I / J / L.
    pub(super) end_at: Option<Instant>,
    pub(super) scheduled: Option<Instant>,
}

/// §17.2.3 matching key; ACK and CANCEL look up with method INVITE.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ServerKey {
    Branch {
        branch: String,
        sent_by: String,
        method: Method,
    },
    /// RFC 2543 peers (no magic cookie). The To tag is left out so the ACK,
    /// which carries the response's tag, still matches.
    Legacy {
        request_uri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        top_via: String,
        method: Method,
    },
}

impl ServerKey {
    fn of(req: &SipMessage, via: &Via, method: Method) -> ServerKey {
        match via.branch().filter(|b| b.starts_with(MAGIC_COOKIE)) {
            Some(branch) => ServerKey::Branch {
                branch: branch.to_owned(),
                sent_by: format!("{}:{}", via.host.to_string().to_ascii_lowercase(), via.port_or_default()),
                method,
            },
            None => ServerKey::Legacy {
                request_uri: req.request_uri().map(|u| u.to_string()).unwrap_or_default(),
                from_tag: req.from().tag().unwrap_or_default().to_owned(),
                call_id: req.call_id().to_owned(),
                cseq: req.cseq().seq,
                top_via: via.to_string(),
                method,
            },
        }
    }

    fn with_method(&self, m: Method) -> ServerKey {
        let mut k = self.clone();
        match &mut k {
            ServerKey::Branch { method, .. } | ServerKey::Legacy { method, .. } => *method = m,
        }
        k
    }
}

impl TransactionLayer {
    /// The request that created a server transaction.
    pub fn server_request(&self, tx: ServerTxId) -> Option<&SipMessage> {
        self.servers.get(&tx).map(|t| &t.request)
    }

    /// A server transaction's state.
    pub fn server_state(&self, tx: ServerTxId) -> Option<ServerState> {
        self.servers.get(&tx).map(|t| t.state)
    }

    /// A request from the network (already parsed and, per §18.2.1, with
    /// `received`/`rport` stamped on its top Via).
    pub fn handle_request(&mut self, now: Instant, req: &SipMessage, from: TransportAddr) -> RequestDisposition {
        let Some(method) = req.method().cloned() else { return RequestDisposition::Invalid("not a request") };
        let Some(via) = req.top_via() else { return RequestDisposition::Invalid("no Via") };
        let key = ServerKey::of(req, via, method.clone());

        if method == Method::Ack {
            let id = self.server_keys.get(&key.with_method(Method::Invite)).copied();
            return self.server_ack(now, id);
        }
        if let Some(&id) = self.server_keys.get(&key) {
            // §17.2.1/§17.2.2: re-send the last response; RFC 6026 §7.1: in
            // Accepted the INVITE is absorbed without one (the UAS core
            // retransmits its 2xx end to end).
            if let Some(tx) = self.servers.get(&id)
                && tx.state != ServerState::Accepted
                && let Some(last) = tx.last_response.clone()
            {
                self.transmits.push_back(Transmit { to: tx.reply_to, payload: last, tx: Some(TxId::Server(id)) });
            }
            return RequestDisposition::Retransmission;
        }
        let target = match method {
            Method::Cancel => self.server_keys.get(&key.with_method(Method::Invite)).copied(),
            _ => None,
        };
        if self.working() >= self.config.max_transactions && target.is_none() {
            self.reject_overload(req, via, from);
            return RequestDisposition::Overloaded;
        }
        let id = ServerTxId(self.fresh_id());
        let invite = method == Method::Invite;
        let tx = ServerTx {
            invite,
            state: if invite { ServerState::Proceeding } else { ServerState::Trying },
            request: req.clone(),
            reply_to: response_target(via, from),
            key: key.clone(),
            last_response: None,
            trying_at: self.config.auto_trying.filter(|_| invite).map(|d| now + d),
            retransmit_at: None,
            interval: self.config.t1,
            timeout_at: None,
            end_at: None,
            scheduled: None,
        };
        self.server_keys.insert(key, id);
        self.servers.insert(id, Box::new(tx));
        self.reschedule(TxId::Server(id));
        tracing::trace!(tx = ?id, %method, "new server transaction");
        match method {
            Method::Cancel => RequestDisposition::Cancel { tx: id, invite: target },
            _ => RequestDisposition::New(id),
        }
    }

    fn server_ack(&mut self, now: Instant, id: Option<ServerTxId>) -> RequestDisposition {
        let Some((id, tx)) = id.and_then(|id| Some((id, self.servers.get_mut(&id)?))) else {
            return RequestDisposition::Ack { invite: None };
        };
        match tx.state {
            ServerState::Accepted => RequestDisposition::Ack { invite: Some(id) },
            ServerState::Completed => {
                // §17.2.1: Confirmed; Timer I = T4 (0 on reliable transports).
                tx.state = ServerState::Confirmed;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                if tx.reply_to.transport.is_reliable() {
                    self.terminate(TxId::Server(id));
                } else {
                    tx.end_at = Some(now + self.config.t4);
                    self.reschedule(TxId::Server(id));
                    self.note_lingering(TxId::Server(id));
                }
                RequestDisposition::AckAbsorbed
            }
            _ => RequestDisposition::AckAbsorbed,
        }
    }

    /// Sends the TU's response on server transaction `tx`.
    pub fn respond(&mut self, now: Instant, tx: ServerTxId, resp: SipMessage) -> Result<(), TxError> {
        let status = resp.status().ok_or(TxError::NotAResponse)?;
        let cfg = self.config.clone();
        let t = self.servers.get_mut(&tx).ok_or(TxError::Unknown)?;
        let method = t.request.method().cloned().ok_or(TxError::NotARequest)?;
        if resp.cseq().method != method {
            return Err(TxError::Mismatch);
        }
        if let ServerKey::Branch { branch, .. } = &t.key
            && resp.top_via().and_then(Via::branch) != Some(branch.as_str())
        {
            return Err(TxError::Mismatch);
        }
        let reliable = t.reply_to.transport.is_reliable();
        let mut terminate = false;
        match (t.invite, t.state) {
            (true, ServerState::Proceeding) if status.is_provisional() => {}
            (true, ServerState::Proceeding) if status.is_success() => {
                // RFC 6026 §8.5: Accepted, Timer L = 64*T1.
                t.state = ServerState::Accepted;
                t.end_at = Some(now + 64 * cfg.t1);
            }
            (true, ServerState::Proceeding) => {
                t.state = ServerState::Completed;
                if !reliable {
                    t.retransmit_at = Some(now + cfg.t1);
                    t.interval = cfg.t1;
                }
                t.timeout_at = Some(now + 64 * cfg.t1);
            }
            (true, ServerState::Accepted) if status.is_success() => {}
            (false, ServerState::Trying | ServerState::Proceeding) if status.is_provisional() => {
                t.state = ServerState::Proceeding;
            }
            (false, ServerState::Trying | ServerState::Proceeding) => {
                t.state = ServerState::Completed;
                // Timer J: 64*T1 unreliable, 0 reliable.
                if reliable {
                    terminate = true;
                } else {
                    t.end_at = Some(now + 64 * cfg.t1);
                }
            }
            _ => return Err(TxError::InvalidState("final response already sent")),
        }
        t.trying_at = None;
        let payload = Bytes::from(resp.to_bytes());
        t.last_response = Some(payload.clone());
        self.transmits.push_back(Transmit { to: t.reply_to, payload, tx: Some(TxId::Server(tx)) });
        if terminate {
            self.terminate(TxId::Server(tx));
        } else {
            self.reschedule(TxId::Server(tx));
            self.note_lingering(TxId::Server(tx));
        }
        Ok(())
    }

    fn reject_overload(&mut self, req: &SipMessage, via: &Via, from: TransportAddr) {
        let tag = format!("ovl{}", self.next_id);
        let mut resp = SipMessage::response_to(req, StatusCode::SERVICE_UNAVAILABLE, None, Some(&tag));
        if resp.add_header("Retry-After", &self.config.retry_after_secs.to_string()).is_err() {
            return;
        }
        tracing::debug!(call_id = req.call_id(), "transaction limit reached: 503");
        let payload = Bytes::from(resp.to_bytes());
        self.transmits.push_back(Transmit { to: response_target(via, from), payload, tx: None });
    }

    pub(super) fn server_timers(&mut self, now: Instant, id: ServerTxId) {
        let t2 = self.config.t2;
        let Some(tx) = self.servers.get_mut(&id) else { return };
        if tx.end_at.is_some_and(|t| t <= now) {
            return self.terminate(TxId::Server(id));
        }
        if tx.timeout_at.is_some_and(|t| t <= now) {
            tracing::debug!(tx = ?id, "no ACK (Timer H)");
            self.events.push_back(TxEvent::Timeout(TxId::Server(id)));
            return self.terminate(TxId::Server(id));
        }
        if tx.trying_at.is_some_and(|t| t <= now) {
            tx.trying_at = None;
            let trying = SipMessage::response_to(&tx.request, StatusCode::TRYING, None, None);
            let payload = Bytes::from(trying.to_bytes());
            tx.last_response = Some(payload.clone());
            self.transmits.push_back(Transmit { to: tx.reply_to, payload, tx: Some(TxId::Server(id)) });
        }
        if tx.retransmit_at.is_some_and(|t| t <= now) {
            // Timer G: doubles up to T2 (§17.2.1).
            tx.interval = (tx.interval * 2).min(t2);
            tx.retransmit_at = Some(now + tx.interval);
            if let Some(last) = tx.last_response.clone() {
                self.transmits.push_back(Transmit { to: tx.reply_to, payload: last, tx: Some(TxId::Server(id)) });
            }
        }
        self.reschedule(TxId::Server(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Contacts;
    use crate::sip::transaction::test_support::*;

    #[test]
    fn server_non_invite_absorbs_retransmissions_and_timer_j() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = request("REGISTER", "z9hG4bKsr1", "UDP", "Contact: <sip:alice@192.0.2.10>\r\n");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        assert!(matches!(l.server_request(id).unwrap().contacts(), Ok(Contacts::Bindings(_))));
        assert_eq!(l.server_state(id), Some(ServerState::Trying));
        // Retransmission before any response: absorbed silently.
        assert_eq!(l.handle_request(t0, &req, udp(5060)), RequestDisposition::Retransmission);
        assert!(transmits(&mut l).is_empty());
        l.respond(t0, id, reply(&req, 200)).unwrap();
        let sent = transmits(&mut l);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].to, udp(5060));
        assert_eq!(parsed(&sent[0]).status(), Some(StatusCode::OK));
        // Retransmission after the final: the 200 is re-sent by the layer.
        let at = t0 + Duration::from_secs(2);
        assert_eq!(l.handle_request(at, &req, udp(5060)), RequestDisposition::Retransmission);
        assert_eq!(transmits(&mut l)[0].payload, sent[0].payload);
        assert!(matches!(l.respond(at, id, reply(&req, 500)), Err(TxError::InvalidState(_))));
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "Timer J = 64*T1");
        run(&mut l, t0, t0 + Duration::from_secs(32));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
        // After J a retransmission is a new request.
        assert!(matches!(l.handle_request(at, &req, udp(5060)), RequestDisposition::New(_)));

        // Reliable: J is zero.
        let req = request("REGISTER", "z9hG4bKsr2", "TCP", "");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, tcp(40000)) else { panic!() };
        l.respond(t0, id, reply(&req, 200)).unwrap();
        assert_eq!(transmits(&mut l)[0].to, tcp(40000), "same connection");
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
    }

    #[test]
    fn server_invite_automatic_trying_and_provisional_resend() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKsi1");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_millis(200)));
        let sent = run(&mut l, t0, t0 + Duration::from_millis(300));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, Duration::from_millis(200));
        let trying = parsed(&sent[0].1);
        assert_eq!(trying.status(), Some(StatusCode::TRYING));
        assert_eq!(trying.to().tag(), None);
        assert_eq!(l.handle_request(t0, &req, udp(5060)), RequestDisposition::Retransmission);
        assert_eq!(parsed(&transmits(&mut l)[0]).status(), Some(StatusCode::TRYING));
        l.respond(t0, id, reply(&req, 180)).unwrap();
        transmits(&mut l);
        assert_eq!(l.handle_request(t0, &req, udp(5060)), RequestDisposition::Retransmission);
        assert_eq!(parsed(&transmits(&mut l)[0]).status(), Some(StatusCode::RINGING));
        assert_eq!(l.poll_timeout(), None, "Proceeding has no timers");

        // A TU that answers within 200 ms suppresses the automatic 100.
        let req = invite("z9hG4bKsi2");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        l.respond(t0 + Duration::from_millis(50), id, reply(&req, 180)).unwrap();
        transmits(&mut l);
        assert!(run(&mut l, t0, t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn server_invite_failure_timer_g_then_ack_and_timer_i() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKsf1");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        l.respond(t0, id, reply(&req, 486)).unwrap();
        assert_eq!(transmits(&mut l).len(), 1);
        assert_eq!(l.server_state(id), Some(ServerState::Completed));
        let times: Vec<Duration> =
            run(&mut l, t0, t0 + Duration::from_millis(12_000)).into_iter().map(|(t, _)| t).collect();
        assert_eq!(times, ms(&[500, 1500, 3500, 7500, 11500]), "Timer G capped at T2");
        // The ACK (same branch) is absorbed: Confirmed, Timer I = T4.
        let at = t0 + Duration::from_secs(12);
        let ack = request("ACK", "z9hG4bKsf1", "UDP", "");
        assert_eq!(l.handle_request(at, &ack, udp(5060)), RequestDisposition::AckAbsorbed);
        assert_eq!(l.server_state(id), Some(ServerState::Confirmed));
        assert_eq!(l.handle_request(at, &ack, udp(5060)), RequestDisposition::AckAbsorbed);
        assert_eq!(l.poll_timeout(), Some(at + Duration::from_secs(5)));
        assert!(run(&mut l, t0, at + Duration::from_secs(5)).is_empty());
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
    }

    #[test]
    fn server_invite_failure_without_ack_timer_h() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = request("INVITE", "z9hG4bKsh1", "TCP", "");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, tcp(5060)) else { panic!() };
        l.respond(t0, id, reply(&req, 603)).unwrap();
        transmits(&mut l);
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "reliable: no G, only H");
        assert!(run(&mut l, t0, t0 + Duration::from_secs(32)).is_empty());
        assert_eq!(events(&mut l), vec![TxEvent::Timeout(TxId::Server(id)), TxEvent::Terminated(TxId::Server(id))]);

        // On TCP the ACK ends the transaction at once (Timer I = 0).
        let req = request("INVITE", "z9hG4bKsh2", "TCP", "");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, tcp(5060)) else { panic!() };
        l.respond(t0, id, reply(&req, 486)).unwrap();
        let ack = request("ACK", "z9hG4bKsh2", "TCP", "");
        assert_eq!(l.handle_request(t0, &ack, tcp(5060)), RequestDisposition::AckAbsorbed);
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
    }

    #[test]
    fn server_invite_2xx_accepted_and_ack_to_tu() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKsa1");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        let ok = reply(&req, 200);
        l.respond(t0, id, ok.clone()).unwrap();
        transmits(&mut l);
        assert_eq!(l.server_state(id), Some(ServerState::Accepted));
        // RFC 6026: retransmitted INVITE absorbed without a re-sent 2xx.
        assert_eq!(l.handle_request(t0, &req, udp(5060)), RequestDisposition::Retransmission);
        assert!(transmits(&mut l).is_empty());
        // Further 2xx from the TU (forked answers, UAS retransmits) go out.
        l.respond(t0, id, ok.clone()).unwrap();
        assert_eq!(transmits(&mut l).len(), 1);
        assert!(matches!(l.respond(t0, id, reply(&req, 486)), Err(TxError::InvalidState(_))));
        // The 2xx ACK is its own transaction (new branch) → TU.
        let ack = request("ACK", "z9hG4bKnewbranch", "UDP", "");
        assert_eq!(l.handle_request(t0, &ack, udp(5060)), RequestDisposition::Ack { invite: None });
        let same = request("ACK", "z9hG4bKsa1", "UDP", "");
        assert_eq!(l.handle_request(t0, &same, udp(5060)), RequestDisposition::Ack { invite: Some(id) });
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "Timer L");
        run(&mut l, t0, t0 + Duration::from_secs(32));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
    }

    #[test]
    fn server_cancel_matches_invite_but_is_its_own_transaction() {
        let (mut l, t0) = (layer(), Instant::now());
        let inv = invite("z9hG4bKc1");
        let RequestDisposition::New(iid) = l.handle_request(t0, &inv, udp(5060)) else { panic!() };
        let cancel = request("CANCEL", "z9hG4bKc1", "UDP", "");
        let RequestDisposition::Cancel { tx, invite: Some(target) } = l.handle_request(t0, &cancel, udp(5060)) else {
            panic!()
        };
        assert_eq!(target, iid);
        assert_ne!(tx, iid);
        assert_eq!(l.handle_request(t0, &cancel, udp(5060)), RequestDisposition::Retransmission);
        l.respond(t0, tx, reply(&cancel, 200)).unwrap();
        l.respond(t0, iid, reply(&inv, 487)).unwrap();
        let sent: Vec<SipMessage> = transmits(&mut l).iter().map(parsed).collect();
        assert_eq!(sent[0].cseq().method, Method::Cancel);
        assert_eq!(sent[1].status(), Some(StatusCode::REQUEST_TERMINATED));
        // Response for the wrong transaction is refused.
        assert_eq!(l.respond(t0, tx, reply(&inv, 200)), Err(TxError::Mismatch));
        // A CANCEL matching nothing (other sent-by) carries no target.
        let mut stray = request("CANCEL", "z9hG4bKc1", "UDP", "");
        stray.pop_via();
        stray.push_via(&Via::parse("SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKc1").unwrap()).unwrap();
        assert!(matches!(l.handle_request(t0, &stray, udp(5060)), RequestDisposition::Cancel { invite: None, .. }));
    }

    #[test]
    fn server_matching_uses_sent_by_and_rfc2543_fallback() {
        let (mut l, t0) = (layer(), Instant::now());
        let a = request("OPTIONS", "z9hG4bKsame", "UDP", "");
        let mut b = a.clone();
        b.pop_via();
        b.push_via(&Via::parse("SIP/2.0/UDP 198.51.100.2:5060;branch=z9hG4bKsame").unwrap()).unwrap();
        assert!(matches!(l.handle_request(t0, &a, udp(5060)), RequestDisposition::New(_)));
        assert!(matches!(l.handle_request(t0, &b, udp(5060)), RequestDisposition::New(_)));

        // RFC 2543 peer: no magic cookie; matched on Request-URI, tags, Call-ID, CSeq, Via.
        let old = request("INVITE", "oldbranch", "UDP", "");
        let RequestDisposition::New(id) = l.handle_request(t0, &old, udp(5060)) else { panic!() };
        assert_eq!(l.handle_request(t0, &old, udp(5060)), RequestDisposition::Retransmission);
        l.respond(t0, id, reply(&old, 404)).unwrap();
        let mut ack = request("ACK", "oldbranch", "UDP", "");
        ack.set_header("To", "<sip:bob@example.com>;tag=tb").unwrap();
        assert_eq!(l.handle_request(t0, &ack, udp(5060)), RequestDisposition::AckAbsorbed);
        assert_eq!(l.server_state(id), Some(ServerState::Confirmed));
    }
}
