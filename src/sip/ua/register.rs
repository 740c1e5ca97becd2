//! Registration (RFC 3261 §10.2): REGISTER with digest (§22.2, 401 and
//! `stale=true`), 423 Interval Too Brief (§10.2.8), refresh at half the
//! granted lifetime (§10.2.4), unregister with Expires: 0 (§10.2.2).

use std::time::{Duration, Instant};

use super::build::{self, RequestParts, Rng};
use super::{Purpose, Timer, UaError, UaEvent, UserAgent};
use crate::sip::message::{Contacts, Method, SipMessage};
use crate::sip::transaction::ClientTxId;

/// Highest Min-Expires we follow; beyond it the 423 is a failure.
const MAX_MIN_EXPIRES: u32 = 86_400;

#[derive(Debug)]
pub(super) struct Registration {
    /// §10.2: one Call-ID and From tag for all REGISTERs of this phone, CSeq
    /// increasing.
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The lifetime we ask for (raised by a 423).
    wanted: u32,
    /// The REGISTER in flight and whether it unregisters.
    tx: Option<(ClientTxId, bool)>,
    auth_tries: u8,
    interval_tries: u8,
    /// The refresh (or retry) deadline that is current.
    refresh_at: Option<Instant>,
    /// The owner wants to be registered (refreshes and retries run).
    wanted_on: bool,
    pub registered: bool,
}

impl Registration {
    pub fn new(rng: &mut Rng, host: &str, expires: u32) -> Registration {
        Registration {
            call_id: format!("{}@{host}", rng.hex()),
            from_tag: rng.tag(),
            cseq: 0,
            wanted: expires,
            tx: None,
            auth_tries: 0,
            interval_tries: 0,
            refresh_at: None,
            wanted_on: false,
            registered: false,
        }
    }
}

impl UserAgent {
    /// Registers (or re-registers at once); [`UaEvent::Registered`] or
    /// [`UaEvent::RegistrationFailed`] follows, then refreshes run by
    /// themselves until [`UserAgent::unregister`].
    pub fn register(&mut self, now: Instant) -> Result<(), UaError> {
        self.reg.wanted_on = true;
        self.reg.auth_tries = 0;
        self.reg.interval_tries = 0;
        self.reg.wanted = self.cfg.register_expires;
        let sent = self.send_register(now, false);
        self.settle(now);
        sent
    }

    /// Removes our binding (Expires: 0); [`UaEvent::Unregistered`] follows.
    pub fn unregister(&mut self, now: Instant) -> Result<(), UaError> {
        self.reg.wanted_on = false;
        self.reg.refresh_at = None;
        self.reg.auth_tries = 0;
        let sent = self.send_register(now, true);
        self.settle(now);
        sent
    }

    fn send_register(&mut self, now: Instant, remove: bool) -> Result<(), UaError> {
        self.reg.cseq += 1;
        let expires = if remove { 0 } else { self.reg.wanted };
        let mut from = self.aor.clone();
        from.params.set("tag", Some(&self.reg.from_tag))?;
        let uri = self.registrar_uri();
        let contact = format!("{};expires={expires}", self.contact);
        let expires_text = expires.to_string();
        let creds = self.credentials(false, "REGISTER", &uri);
        let via = self.via();
        let mut extra = vec![("Contact", contact.as_str()), ("Expires", expires_text.as_str())];
        if let Some((name, value)) = &creds {
            extra.push((name, value.as_str()));
        }
        let parts = RequestParts {
            method: Method::Register,
            uri: &uri,
            from: &from,
            to: &self.aor,
            call_id: &self.reg.call_id,
            cseq: self.reg.cseq,
            routes: &[],
        };
        let req = build::request(&parts, &via, &extra, Vec::new())?;
        let tx = self.start(now, req, Purpose::Register)?;
        self.reg.tx = Some((tx, remove));
        Ok(())
    }

    pub(super) fn register_response(&mut self, now: Instant, tx: ClientTxId, resp: &SipMessage) {
        let Some((_, remove)) = self.reg.tx.filter(|(t, _)| *t == tx) else { return };
        let Some(status) = resp.status() else { return };
        let code = status.as_u16();
        if status.is_provisional() {
            return;
        }
        if status.is_success() {
            self.reg.tx = None;
            self.reg.auth_tries = 0;
            self.reg.interval_tries = 0;
            return self.registered(now, resp, remove);
        }
        let retry = match code {
            401 | 407 => {
                let mut tries = self.reg.auth_tries;
                let retry = self.take_challenge(resp, &mut tries);
                self.reg.auth_tries = tries;
                retry
            }
            // §10.2.8: ask again for at least Min-Expires.
            423 => match resp.header("Min-Expires").and_then(|v| v.trim().parse::<u32>().ok()) {
                Some(min) if min > self.reg.wanted && min <= MAX_MIN_EXPIRES && self.reg.interval_tries == 0 => {
                    self.reg.interval_tries += 1;
                    self.reg.wanted = min;
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if retry && self.send_register(now, remove).is_ok() {
            return;
        }
        self.register_failed(now, tx, code);
    }

    /// §10.2.4: the lifetime granted to our Contact is its `expires`
    /// parameter in the 200, else the Expires header, else what we asked.
    fn registered(&mut self, now: Instant, resp: &SipMessage, removed: bool) {
        let granted = self.granted(resp);
        if removed || granted == 0 {
            self.reg.registered = false;
            self.reg.refresh_at = None;
            return self.emit(UaEvent::Unregistered);
        }
        self.reg.registered = true;
        let at = now + Duration::from_secs(u64::from((granted / 2).max(1)));
        self.reg.refresh_at = Some(at);
        self.schedule(at, Timer::Refresh);
        self.emit(UaEvent::Registered { expires: granted });
    }

    fn granted(&self, resp: &SipMessage) -> u32 {
        let ours = match resp.contacts() {
            Ok(Contacts::Bindings(list)) => list.into_iter().find(|c| self.is_our_contact(&c.uri.to_string())),
            _ => None,
        };
        ours.and_then(|c| c.expires()).or(resp.expires()).unwrap_or(self.reg.wanted)
    }

    /// Our Contact URI as the registrar echoes it (parameters may differ).
    fn is_our_contact(&self, uri: &str) -> bool {
        let ours = self.contact.trim_start_matches('<').trim_end_matches('>');
        let base = |u: &str| u.split(';').next().unwrap_or_default().to_ascii_lowercase();
        base(uri) == base(ours)
    }

    pub(super) fn register_failed(&mut self, now: Instant, tx: ClientTxId, code: u16) {
        if self.reg.tx.is_none_or(|(t, _)| t != tx) {
            return;
        }
        self.reg.tx = None;
        self.reg.registered = false;
        self.emit(UaEvent::RegistrationFailed { code });
        // A timeout or server failure may pass (e.g. the node restarts); a
        // refused password will not.
        let transient = code == 408 || code == 480 || (500..600).contains(&code);
        if transient && self.reg.wanted_on {
            let at = now + self.cfg.register_retry;
            self.reg.refresh_at = Some(at);
            self.schedule(at, Timer::Refresh);
        }
    }

    pub(super) fn refresh_due(&mut self, now: Instant, at: Instant) {
        if self.reg.refresh_at != Some(at) || !self.reg.wanted_on {
            return;
        }
        self.reg.refresh_at = None;
        self.reg.auth_tries = 0;
        self.reg.interval_tries = 0;
        if let Err(e) = self.send_register(now, false) {
            tracing::debug!(error = %e, "refresh REGISTER not sent");
        }
    }
}
