//! Client transactions (RFC 3261 §17.1): INVITE (Timers A, B, D; RFC 6026
//! Accepted with Timer M) and non-INVITE (Timers E, F, K), the ACK for a
//! non-2xx final response (§17.1.1.3) and CANCEL (§9.1).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    ClientTxId, MAGIC_COOKIE, ResponseDisposition, TransactionLayer, Transmit, TransportAddr, TxError, TxEvent, TxId,
};
use crate::sip::message::{Header, Method, ParseError, SipMessage, Via};

/// Client transaction states (Figures 5 and 6, RFC 6026 Figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// A CANCEL waiting for its INVITE's first provisional (§9.1).
    Held,
    Calling,
    Trying,
    Proceeding,
    Completed,
    Accepted,
}

#[derive(Debug)]
pub(super) struct ClientTx {
    pub(super) invite: bool,
    pub(super) state: ClientState,
    pub(super) request: SipMessage,
    pub(super) payload: Bytes,
    pub(super) to: TransportAddr,
    pub(super) key: (String, Method),
    /// Timer A / E.
    pub(super) retransmit_at: Option<Instant>,
    pub(super) interval: Duration,
    /// Timer B / F.
    pub(super) timeout_at: Option<Instant>,
    /// Timer D / K / M.
    pub(super) end_at: Option<Instant>,
    /// The ACK for a non-2xx final response, re-sent on its retransmissions.
    pub(super) ack: Option<Bytes>,
    /// INVITE: its CANCEL. CANCEL: the INVITE it cancels.
    pub(super) partner: Option<ClientTxId>,
    pub(super) scheduled: Option<Instant>,
}

impl TransactionLayer {
    /// The request a client transaction sends.
    pub fn client_request(&self, tx: ClientTxId) -> Option<&SipMessage> {
        self.clients.get(&tx).map(|t| &t.request)
    }

    /// A client transaction's state.
    pub fn client_state(&self, tx: ClientTxId) -> Option<ClientState> {
        self.clients.get(&tx).map(|t| t.state)
    }

    /// Starts a client transaction for `req`, whose top Via must carry a
    /// fresh RFC 3261 branch (the TU chooses it, e.g. per §16.6 step 8).
    pub fn send_request(&mut self, now: Instant, req: SipMessage, to: TransportAddr) -> Result<ClientTxId, TxError> {
        let method = req.method().cloned().ok_or(TxError::NotARequest)?;
        if method == Method::Ack {
            return Err(TxError::AckIsNotATransaction);
        }
        if self.working() >= self.config.max_transactions {
            return Err(TxError::Overloaded);
        }
        self.start_client(now, req, to, ClientState::Calling, None)
    }

    fn start_client(
        &mut self,
        now: Instant,
        req: SipMessage,
        to: TransportAddr,
        state: ClientState,
        partner: Option<ClientTxId>,
    ) -> Result<ClientTxId, TxError> {
        let method = req.method().cloned().ok_or(TxError::NotARequest)?;
        let branch = req.top_via().ok_or(TxError::NoVia)?.branch().ok_or(TxError::NoBranch)?;
        if !branch.starts_with(MAGIC_COOKIE) {
            return Err(TxError::NoBranch);
        }
        let key = (branch.to_owned(), method.clone());
        if self.client_keys.contains_key(&key) {
            return Err(TxError::DuplicateBranch);
        }
        let id = ClientTxId(self.fresh_id());
        let invite = method == Method::Invite;
        let state = match state {
            ClientState::Held => ClientState::Held,
            _ if invite => ClientState::Calling,
            _ => ClientState::Trying,
        };
        let tx = ClientTx {
            invite,
            state,
            payload: Bytes::from(req.to_bytes()),
            request: req,
            to,
            key: key.clone(),
            retransmit_at: None,
            interval: self.config.t1,
            timeout_at: None,
            end_at: None,
            ack: None,
            partner,
            scheduled: None,
        };
        self.client_keys.insert(key, id);
        self.clients.insert(id, Box::new(tx));
        if state != ClientState::Held {
            self.launch(now, id);
        }
        tracing::trace!(tx = ?id, %method, "new client transaction");
        Ok(id)
    }

    /// First transmission and Timers A/B or E/F.
    fn launch(&mut self, now: Instant, id: ClientTxId) {
        let (t1, invite_timeout) = (self.config.t1, 64 * self.config.t1);
        let Some(tx) = self.clients.get_mut(&id) else { return };
        if tx.state == ClientState::Held {
            tx.state = ClientState::Trying;
        }
        if !tx.to.transport.is_reliable() {
            tx.retransmit_at = Some(now + t1);
            tx.interval = t1;
        }
        tx.timeout_at = Some(now + invite_timeout);
        self.transmits.push_back(Transmit { to: tx.to, payload: tx.payload.clone(), tx: Some(TxId::Client(id)) });
        self.reschedule(TxId::Client(id));
    }

    /// A response from the network.
    pub fn handle_response(&mut self, now: Instant, resp: &SipMessage, _from: TransportAddr) -> ResponseDisposition {
        let Some(status) = resp.status() else { return ResponseDisposition::Stray };
        let Some(branch) = resp.top_via().and_then(Via::branch) else { return ResponseDisposition::Stray };
        let key = (branch.to_owned(), resp.cseq().method.clone());
        let Some(&id) = self.client_keys.get(&key) else { return ResponseDisposition::Stray };
        let (t4, timer_d, timer_m) = (self.config.t4, self.config.timer_d, 64 * self.config.t1);
        let Some(tx) = self.clients.get_mut(&id) else { return ResponseDisposition::Stray };
        let reliable = tx.to.transport.is_reliable();
        let mut release_cancel = false;
        let mut drop_cancel = false;
        let mut end_now = false;
        let disposition = match (tx.invite, tx.state) {
            (_, ClientState::Held) => ResponseDisposition::Absorbed,
            (true, ClientState::Calling | ClientState::Proceeding) => {
                tx.retransmit_at = None;
                tx.timeout_at = None;
                if status.is_provisional() {
                    tx.state = ClientState::Proceeding;
                    release_cancel = true;
                } else if status.is_success() {
                    // RFC 6026 §8.4: Accepted, Timer M = 64*T1.
                    tx.state = ClientState::Accepted;
                    tx.end_at = Some(now + timer_m);
                    drop_cancel = true;
                } else {
                    // §17.1.1.3: ACK the failure; Timer D.
                    tx.state = ClientState::Completed;
                    drop_cancel = true;
                    if let Ok(ack) = build_ack(&tx.request, resp) {
                        let ack = Bytes::from(ack.to_bytes());
                        self.transmits.push_back(Transmit {
                            to: tx.to,
                            payload: ack.clone(),
                            tx: Some(TxId::Client(id)),
                        });
                        tx.ack = Some(ack);
                    }
                    if reliable {
                        end_now = true;
                    } else {
                        tx.end_at = Some(now + timer_d);
                    }
                }
                ResponseDisposition::Deliver(id)
            }
            (true, ClientState::Accepted) if status.is_success() => ResponseDisposition::Deliver(id),
            (true, ClientState::Completed) if status.is_final() && !status.is_success() => {
                if let Some(ack) = tx.ack.clone() {
                    self.transmits.push_back(Transmit { to: tx.to, payload: ack, tx: Some(TxId::Client(id)) });
                }
                ResponseDisposition::Absorbed
            }
            (false, ClientState::Trying | ClientState::Proceeding) => {
                if status.is_provisional() {
                    tx.state = ClientState::Proceeding;
                } else {
                    tx.state = ClientState::Completed;
                    tx.retransmit_at = None;
                    tx.timeout_at = None;
                    // Timer K: T4 unreliable, 0 reliable.
                    if reliable {
                        end_now = true;
                    } else {
                        tx.end_at = Some(now + t4);
                    }
                }
                ResponseDisposition::Deliver(id)
            }
            _ => ResponseDisposition::Absorbed,
        };
        let partner = tx.partner;
        if let Some(cancel) = partner.filter(|_| release_cancel || drop_cancel)
            && self.clients.get(&cancel).is_some_and(|c| c.state == ClientState::Held)
        {
            if release_cancel {
                self.launch(now, cancel);
            } else {
                self.terminate(TxId::Client(cancel));
            }
        }
        if end_now {
            self.terminate(TxId::Client(id));
        } else {
            self.reschedule(TxId::Client(id));
            self.note_lingering(TxId::Client(id));
        }
        disposition
    }

    /// Cancels client INVITE `invite` (§9.1): builds the CANCEL and runs it
    /// as its own non-INVITE transaction to the same destination. Before a
    /// provisional response it is held and sent when one arrives (dropped if
    /// a final response comes first). Calling again while that CANCEL lives
    /// returns the same id.
    pub fn cancel_request(&mut self, now: Instant, invite: ClientTxId) -> Result<ClientTxId, TxError> {
        let tx = self.clients.get(&invite).ok_or(TxError::Unknown)?;
        if !tx.invite {
            return Err(TxError::InvalidState("only INVITE can be cancelled"));
        }
        if let Some(existing) = tx.partner.filter(|c| self.clients.contains_key(c)) {
            return Ok(existing);
        }
        let held = match tx.state {
            ClientState::Calling => ClientState::Held,
            ClientState::Proceeding => ClientState::Trying,
            _ => return Err(TxError::InvalidState("final response already received")),
        };
        let cancel = build_cancel(&tx.request)?;
        let to = tx.to;
        let id = self.start_client(now, cancel, to, held, Some(invite))?;
        if let Some(tx) = self.clients.get_mut(&invite) {
            tx.partner = Some(id);
        }
        Ok(id)
    }

    pub(super) fn client_timers(&mut self, now: Instant, id: ClientTxId) {
        let t2 = self.config.t2;
        let Some(tx) = self.clients.get_mut(&id) else { return };
        if tx.end_at.is_some_and(|t| t <= now) {
            return self.terminate(TxId::Client(id));
        }
        if tx.timeout_at.is_some_and(|t| t <= now) {
            tracing::debug!(tx = ?id, "client transaction timed out");
            self.events.push_back(TxEvent::Timeout(TxId::Client(id)));
            return self.terminate(TxId::Client(id));
        }
        if tx.retransmit_at.is_some_and(|t| t <= now) {
            // Timer A doubles without bound; Timer E doubles up to T2, and
            // is T2 once Proceeding (§17.1.2.2).
            tx.interval = match (tx.invite, tx.state) {
                (true, _) => tx.interval * 2,
                (false, ClientState::Proceeding) => t2,
                (false, _) => (tx.interval * 2).min(t2),
            };
            tx.retransmit_at = Some(now + tx.interval);
            self.transmits.push_back(Transmit { to: tx.to, payload: tx.payload.clone(), tx: Some(TxId::Client(id)) });
        }
        self.reschedule(TxId::Client(id));
    }
}

/// Lines of `name` copied verbatim from `msg`.
fn copy_lines(msg: &SipMessage, name: &str, out: &mut Vec<Header>) {
    out.extend(msg.all_headers().iter().filter(|h| h.is(name)).cloned());
}

/// The ACK for a non-2xx final response (§17.1.1.3): Request-URI, Call-ID,
/// From, top Via and Route of the INVITE, To of the response, CSeq number
/// with method ACK.
fn build_ack(invite: &SipMessage, resp: &SipMessage) -> Result<SipMessage, ParseError> {
    let uri = invite.request_uri().cloned().ok_or(ParseError::BadStartLine)?;
    let via = invite.top_via().ok_or(ParseError::MissingHeader("Via"))?;
    let mut h = vec![Header::new("Via", &via.to_string())?, Header::new("Max-Forwards", "70")?];
    copy_lines(invite, "From", &mut h);
    copy_lines(resp, "To", &mut h);
    copy_lines(invite, "Call-ID", &mut h);
    h.push(Header::new("CSeq", &format!("{} ACK", invite.cseq().seq))?);
    copy_lines(invite, "Route", &mut h);
    SipMessage::new_request(Method::Ack, uri, h, Vec::new())
}

/// A CANCEL for `invite` (§9.1): same Request-URI, Call-ID, To, From, CSeq
/// number and a single Via equal to the INVITE's top Via; Route copied.
fn build_cancel(invite: &SipMessage) -> Result<SipMessage, ParseError> {
    let uri = invite.request_uri().cloned().ok_or(ParseError::BadStartLine)?;
    let via = invite.top_via().ok_or(ParseError::MissingHeader("Via"))?;
    let mut h = vec![Header::new("Via", &via.to_string())?, Header::new("Max-Forwards", "70")?];
    copy_lines(invite, "From", &mut h);
    copy_lines(invite, "To", &mut h);
    copy_lines(invite, "Call-ID", &mut h);
    h.push(Header::new("CSeq", &format!("{} CANCEL", invite.cseq().seq))?);
    copy_lines(invite, "Route", &mut h);
    SipMessage::new_request(Method::Cancel, uri, h, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::StatusCode;
    use crate::sip::transaction::test_support::*;

    #[test]
    fn client_invite_udp_timer_a_doubles_until_b() {
        let (mut l, t0) = (layer(), Instant::now());
        let id = l.send_request(t0, invite("z9hG4bKa1"), udp(5060)).unwrap();
        assert_eq!(transmits(&mut l).len(), 1);
        assert_eq!(l.client_state(id), Some(ClientState::Calling));
        let sent = run(&mut l, t0, t0 + Duration::from_secs(40));
        let times: Vec<Duration> = sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, ms(&[500, 1500, 3500, 7500, 15500, 31500]));
        assert!(sent.iter().all(|(_, t)| parsed(t).method() == Some(&Method::Invite)));
        assert_eq!(events(&mut l), vec![TxEvent::Timeout(TxId::Client(id)), TxEvent::Terminated(TxId::Client(id))]);
        assert_eq!(l.poll_timeout(), None);
        assert!(l.is_empty());
    }

    #[test]
    fn client_non_invite_timer_e_capped_at_t2() {
        let (mut l, t0) = (layer(), Instant::now());
        let id = l.send_request(t0, request("REGISTER", "z9hG4bKr1", "UDP", ""), udp(5060)).unwrap();
        transmits(&mut l);
        let times: Vec<Duration> = run(&mut l, t0, t0 + Duration::from_secs(40)).into_iter().map(|(t, _)| t).collect();
        assert_eq!(times, ms(&[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]));
        assert_eq!(events(&mut l)[0], TxEvent::Timeout(TxId::Client(id)));
    }

    #[test]
    fn client_non_invite_proceeding_retransmits_every_t2_then_k() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = request("OPTIONS", "z9hG4bKo1", "UDP", "");
        let id = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        transmits(&mut l);
        let at = t0 + Duration::from_millis(200);
        assert_eq!(l.handle_response(at, &reply(&req, 180), udp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(l.client_state(id), Some(ClientState::Proceeding));
        let times: Vec<Duration> = run(&mut l, t0, t0 + Duration::from_secs(9)).into_iter().map(|(t, _)| t).collect();
        assert_eq!(times, ms(&[500, 4500, 8500]));
        let done = t0 + Duration::from_secs(9);
        assert_eq!(l.handle_response(done, &reply(&req, 200), udp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(l.handle_response(done, &reply(&req, 200), udp(5060)), ResponseDisposition::Absorbed);
        assert_eq!(l.poll_timeout(), Some(done + Duration::from_secs(5)), "Timer K = T4");
        assert!(run(&mut l, t0, done + Duration::from_secs(5)).is_empty());
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(id))]);
    }

    #[test]
    fn reliable_transport_never_retransmits() {
        let (mut l, t0) = (layer(), Instant::now());
        let inv = l.send_request(t0, invite("z9hG4bKt1"), tcp(5060)).unwrap();
        let req = request("MESSAGE", "z9hG4bKt2", "TCP", "");
        let msg = l.send_request(t0, req.clone(), tcp(5060)).unwrap();
        assert_eq!(transmits(&mut l).len(), 2);
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "only Timers B and F");
        // Final response on a reliable transport: Timer K is zero.
        assert_eq!(l.handle_response(t0, &reply(&req, 200), tcp(5060)), ResponseDisposition::Deliver(msg));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(msg))]);
        assert!(run(&mut l, t0, t0 + Duration::from_secs(40)).is_empty());
        assert_eq!(events(&mut l), vec![TxEvent::Timeout(TxId::Client(inv)), TxEvent::Terminated(TxId::Client(inv))]);
    }

    #[test]
    fn client_invite_failure_is_acked_and_timer_d() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKf1");
        let id = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        transmits(&mut l);
        let busy = reply(&req, 486);
        assert_eq!(l.handle_response(t0, &busy, udp(5060)), ResponseDisposition::Deliver(id));
        let ack = transmits(&mut l);
        assert_eq!(ack.len(), 1);
        let ack = parsed(&ack[0]);
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.cseq().seq, 7);
        assert_eq!(ack.cseq().method, Method::Ack);
        assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKf1"));
        assert_eq!(ack.to().tag(), Some("tb"));
        assert_eq!(ack.request_uri(), req.request_uri());
        assert_eq!(ack.routes().unwrap().len(), 1);
        assert_eq!(ack.header("Contact"), None);
        // A retransmitted 486 is absorbed and re-ACKed.
        assert_eq!(l.handle_response(t0, &busy, udp(5060)), ResponseDisposition::Absorbed);
        assert_eq!(parsed(&transmits(&mut l)[0]).method(), Some(&Method::Ack));
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "Timer D");
        assert!(run(&mut l, t0, t0 + Duration::from_secs(32)).is_empty(), "no retransmits in Completed");
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(id))]);

        // On TCP Timer D is zero.
        let id = l.send_request(t0, req.clone(), tcp(5060)).unwrap();
        transmits(&mut l);
        assert_eq!(l.handle_response(t0, &busy, tcp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(transmits(&mut l).len(), 1, "the ACK");
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(id))]);
    }

    #[test]
    fn client_invite_2xx_accepted_passes_retransmissions_then_m() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKs1");
        let id = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        transmits(&mut l);
        assert_eq!(l.handle_response(t0, &reply(&req, 180), udp(5060)), ResponseDisposition::Deliver(id));
        let ok = reply(&req, 200);
        let at = t0 + Duration::from_secs(1);
        assert_eq!(l.handle_response(at, &ok, udp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(l.client_state(id), Some(ClientState::Accepted));
        assert!(transmits(&mut l).is_empty(), "the TU ACKs a 2xx");
        assert_eq!(l.handle_response(at, &ok, udp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(l.handle_response(at, &reply(&req, 180), udp(5060)), ResponseDisposition::Absorbed);
        assert_eq!(l.poll_timeout(), Some(at + Duration::from_secs(32)), "Timer M = 64*T1");
        run(&mut l, t0, at + Duration::from_secs(32));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(id))]);
        assert_eq!(l.handle_response(at, &ok, udp(5060)), ResponseDisposition::Stray);
    }

    #[test]
    fn response_matching_uses_branch_and_cseq_method() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKm1");
        l.send_request(t0, req.clone(), udp(5060)).unwrap();
        let mut other = reply(&req, 200);
        other.set_header("CSeq", "7 BYE").unwrap();
        assert_eq!(l.handle_response(t0, &other, udp(5060)), ResponseDisposition::Stray);
        let wrong_branch = reply(&invite("z9hG4bKzz"), 200);
        assert_eq!(l.handle_response(t0, &wrong_branch, udp(5060)), ResponseDisposition::Stray);
        assert!(matches!(l.send_request(t0, req, udp(5060)), Err(TxError::DuplicateBranch)));
        let legacy = request("OPTIONS", "1234", "UDP", "");
        assert!(matches!(l.send_request(t0, legacy, udp(5060)), Err(TxError::NoBranch)));
        let ack = request("ACK", "z9hG4bKack", "UDP", "");
        assert!(matches!(l.send_request(t0, ack, udp(5060)), Err(TxError::AckIsNotATransaction)));
    }

    #[test]
    fn client_cancel_waits_for_provisional() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKcc1");
        let inv = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        transmits(&mut l);
        let cancel = l.cancel_request(t0, inv).unwrap();
        assert_eq!(l.cancel_request(t0, inv).unwrap(), cancel, "idempotent");
        assert!(transmits(&mut l).is_empty(), "no CANCEL before a provisional (§9.1)");
        assert_eq!(l.client_state(cancel), Some(ClientState::Held));
        let at = t0 + Duration::from_millis(100);
        assert_eq!(l.handle_response(at, &reply(&req, 180), udp(5060)), ResponseDisposition::Deliver(inv));
        let sent = transmits(&mut l);
        assert_eq!(sent.len(), 1);
        let c = parsed(&sent[0]);
        assert_eq!(c.method(), Some(&Method::Cancel));
        assert_eq!(c.cseq().seq, 7);
        assert_eq!(c.cseq().method, Method::Cancel);
        assert_eq!(c.request_uri(), req.request_uri());
        assert_eq!(c.vias(), &req.vias()[..1]);
        assert_eq!(c.to(), req.to());
        assert_eq!(c.from(), req.from());
        assert_eq!(c.routes().unwrap(), req.routes().unwrap());
        assert_eq!(c.header("Contact"), None);
        // Its 200 goes to the CANCEL transaction, the 487 to the INVITE's.
        let ok = SipMessage::response_to(&c, StatusCode::OK, None, Some("tb"));
        assert_eq!(l.handle_response(at, &ok, udp(5060)), ResponseDisposition::Deliver(cancel));
        assert_eq!(l.handle_response(at, &reply(&req, 487), udp(5060)), ResponseDisposition::Deliver(inv));
        assert!(matches!(l.cancel_request(at, inv), Ok(id) if id == cancel));

        // A final response before any provisional drops the held CANCEL.
        let req = invite("z9hG4bKcc2");
        let inv = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        let cancel = l.cancel_request(t0, inv).unwrap();
        transmits(&mut l);
        events(&mut l);
        l.handle_response(t0, &reply(&req, 404), udp(5060));
        let sent = transmits(&mut l);
        assert_eq!(sent.len(), 1, "only the ACK");
        assert_eq!(parsed(&sent[0]).method(), Some(&Method::Ack));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(cancel))]);
        assert!(matches!(l.cancel_request(t0, inv), Err(TxError::InvalidState(_))));
    }

    #[test]
    fn transport_error_ends_client_transaction() {
        let (mut l, t0) = (layer(), Instant::now());
        let id = l.send_request(t0, invite("z9hG4bKte"), tcp(5060)).unwrap();
        let t = transmits(&mut l).remove(0);
        assert_eq!(t.tx, Some(TxId::Client(id)));
        l.transport_error(TxId::Client(id));
        assert_eq!(
            events(&mut l),
            vec![TxEvent::TransportError(TxId::Client(id)), TxEvent::Terminated(TxId::Client(id))]
        );
        assert_eq!(l.poll_timeout(), None);
        assert!(matches!(l.cancel_request(t0, id), Err(TxError::Unknown)));
    }
}
