//! Requests we serve (the UAS dispatch of §8.2) and instant messages
//! (RFC 3428): MESSAGE sent with 401/407 retry, MESSAGE received and
//! answered 200, OPTIONS answered 200 (§11.2).

use std::time::Instant;

use super::build::{self, RequestParts};
use super::{ALLOW, MessageId, Purpose, UaError, UaEvent, UserAgent};
use crate::sip::message::{Method, NameAddr, SipMessage, Uri};
use crate::sip::transaction::{ClientTxId, ServerTxId, TransportAddr};

/// A MESSAGE waiting for its final response.
#[derive(Debug)]
pub(super) struct Outgoing {
    call_id: String,
    from: NameAddr,
    to: NameAddr,
    cseq: u32,
    body: Vec<u8>,
    tx: Option<ClientTxId>,
    auth_tries: u8,
    auth_proxy: bool,
}

impl UserAgent {
    /// Sends `body` as `text/plain` to `to` (`sip:bob@domain` or
    /// `bob@domain`); [`UaEvent::MessageDelivered`] or
    /// [`UaEvent::MessageFailed`] follows with the returned id.
    pub fn send_message(&mut self, now: Instant, to: &str, body: Vec<u8>) -> Result<MessageId, UaError> {
        let text = if to.contains(':') { to.to_owned() } else { format!("sip:{to}") };
        let uri = Uri::parse(&text).ok().filter(|u| u.as_sip().is_some()).ok_or(UaError::BadTarget(text))?;
        let id = MessageId(self.fresh_id());
        let mut from = self.aor.clone();
        from.params.set("tag", Some(&self.rng.tag()))?;
        let m = Outgoing {
            call_id: format!("{}@{}", self.rng.hex(), self.cfg.contact.0),
            from,
            to: NameAddr::new(uri),
            cseq: 0,
            body,
            tx: None,
            auth_tries: 0,
            auth_proxy: true,
        };
        self.messages.insert(id, Box::new(m));
        if let Err(e) = self.send_message_request(now, id) {
            self.messages.remove(&id);
            return Err(e);
        }
        self.settle(now);
        Ok(id)
    }

    fn send_message_request(&mut self, now: Instant, id: MessageId) -> Result<(), UaError> {
        let m = self.messages.get_mut(&id).ok_or(UaError::UnknownCall)?;
        m.cseq += 1;
        let (uri, proxy) = (m.to.uri.clone(), m.auth_proxy);
        let creds = self.credentials(proxy, "MESSAGE", &uri);
        let via = self.via();
        let m = self.messages.get(&id).ok_or(UaError::UnknownCall)?;
        let mut extra = vec![("Content-Type", "text/plain")];
        if let Some((name, value)) = &creds {
            extra.push((name, value.as_str()));
        }
        let parts = RequestParts {
            method: Method::Message,
            uri: &uri,
            from: &m.from,
            to: &m.to,
            call_id: &m.call_id,
            cseq: m.cseq,
            routes: &[],
        };
        let req = build::request(&parts, &via, &extra, m.body.clone())?;
        let tx = self.start(now, req, Purpose::Message(id))?;
        if let Some(m) = self.messages.get_mut(&id) {
            m.tx = Some(tx);
        }
        Ok(())
    }

    pub(super) fn message_response(&mut self, now: Instant, id: MessageId, tx: ClientTxId, resp: &SipMessage) {
        let Some(status) = resp.status() else { return };
        let Some(m) = self.messages.get_mut(&id).filter(|m| m.tx == Some(tx)) else { return };
        if status.is_provisional() {
            return;
        }
        let code = status.as_u16();
        if status.is_success() {
            self.messages.remove(&id);
            return self.emit(UaEvent::MessageDelivered { id });
        }
        if matches!(code, 401 | 407) {
            let mut tries = m.auth_tries;
            let retry = self.take_challenge(resp, &mut tries);
            if let Some(m) = self.messages.get_mut(&id) {
                m.auth_tries = tries;
                m.auth_proxy = code == 407;
            }
            if retry && self.send_message_request(now, id).is_ok() {
                return;
            }
        }
        self.message_failed(id, tx, code);
    }

    pub(super) fn message_failed(&mut self, id: MessageId, tx: ClientTxId, code: u16) {
        if self.messages.get(&id).is_some_and(|m| m.tx == Some(tx)) {
            self.messages.remove(&id);
            self.emit(UaEvent::MessageFailed { id, code });
        }
    }

    /// §8.2: a request that opened a server transaction.
    pub(super) fn new_request(&mut self, now: Instant, tx: ServerTxId, req: SipMessage, from: TransportAddr) {
        let Some(method) = req.method().cloned() else { return };
        let dialog = req.to().tag().map(|t| self.dialog_of(req.call_id(), t));
        match (method, dialog) {
            (Method::Invite, None) => self.incoming_invite(now, tx, &req, from),
            (Method::Invite, Some(Some(id))) => self.reinvite(now, tx, &req, id),
            (Method::Bye, d) => self.on_bye(now, tx, &req, d.flatten()),
            // §12.2.2: a request in a dialog we do not have.
            (_, Some(None)) => {
                self.counters.unknown_dialog += 1;
                self.reply(now, tx, &req, 481, None, &[]);
            }
            (Method::Message, _) => {
                // RFC 3428 §7: 200 and hand the body up.
                self.reply(now, tx, &req, 200, None, &[]);
                let from = req.from().uri.to_string();
                self.emit(UaEvent::MessageReceived { from, body: req.body().to_vec() });
            }
            (Method::Options, _) => {
                self.reply(now, tx, &req, 200, None, &[("Allow", ALLOW), ("Accept", "application/sdp, text/plain")])
            }
            _ => {
                self.counters.rejected_requests += 1;
                self.reply(now, tx, &req, 405, None, &[("Allow", ALLOW)]);
            }
        }
    }

    /// A generated response; outside a dialog it gets a fresh To tag
    /// (§8.2.6.2).
    pub(super) fn reply(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        req: &SipMessage,
        code: u16,
        tag: Option<&str>,
        extra: &[(&str, &str)],
    ) {
        let fresh = (tag.is_none() && req.to().tag().is_none() && code != 100).then(|| self.rng.tag());
        let resp = build::response(req, code, tag.or(fresh.as_deref()), extra, None);
        self.respond(now, tx, resp);
    }

    pub(super) fn respond(&mut self, now: Instant, tx: ServerTxId, resp: SipMessage) {
        if let Err(e) = self.tl.respond(now, tx, resp) {
            tracing::debug!(error = %e, "response not sent");
        }
    }
}
