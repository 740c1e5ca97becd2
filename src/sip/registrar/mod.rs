//! The registrar of one node (RFC 3261 §10.3): digest accounts (RFC 7616
//! through [`super::digest`]), the nonces it issues, the binding table
//! ([`bindings`]) and the REGISTERs waiting for the overlay.
//!
//! Sans-IO: the edge hands it a REGISTER with the shared [`EdgeCore`] (the
//! transaction layer it answers through, the node's identity, counters and
//! output queue). A REGISTER that changes bindings is held while the overlay
//! record is stored (RFC 7904 §3); only then is the plan committed and 200
//! sent — a binding exists locally only once the overlay can find it.

mod bindings;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tracing::{debug, warn};

use super::account::SipUser;
use super::digest::{self, AuthResult, DigestAlgorithm, FailReason, NonceKeeper};
use super::edge::{EdgeCore, EdgeOutput, OverlayOpId, OverlayResult};
use super::message::{Host, ParseError, SipMessage, StatusCode, Uri};
use super::transaction::{ServerTxId, TransportAddr};

pub use bindings::Binding;
pub(crate) use bindings::{aor_of, contact_key};

use bindings::{Bindings, Plan};

/// A refusal: status, reason phrase and extra header lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reject {
    pub status: StatusCode,
    pub reason: Option<String>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reject {
    pub fn new(code: u16, reason: Option<String>) -> Reject {
        Reject { status: status(code), reason, headers: Vec::new() }
    }
}

/// A status code from a constant in 100..=699.
pub(super) fn status(code: u16) -> StatusCode {
    StatusCode::new(code).unwrap_or(StatusCode::SERVER_ERROR)
}

/// What a digest check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    /// Authenticated as this (normalised) AOR.
    Ok(String),
    /// Challenge (401/407); `stale=true` when the nonce merely expired.
    Challenge { stale: bool },
    /// Wrong password or unknown user: 403, the same answer for both.
    Forbidden,
    /// Unparseable credentials: 400.
    Malformed(String),
}

/// Work waiting for the overlay.
#[derive(Debug)]
enum Pending {
    /// A REGISTER held until its record is stored (or removed).
    Register { server: ServerTxId, request: Box<SipMessage>, plan: Plan },
    /// The last binding expired or its flow closed.
    Unregister { aor: String },
    /// A registration stored again after a failure elsewhere.
    Restore { aor: String },
}

/// Digest accounts, nonces, bindings and pending overlay stores.
#[derive(Debug)]
pub(super) struct Registrar {
    /// Normalised AOR → account.
    users: BTreeMap<String, SipUser>,
    table: Bindings,
    nonces: NonceKeeper,
    pending: BTreeMap<OverlayOpId, Pending>,
    /// (deadline, op): an overlay store not answered by then has failed.
    deadlines: BTreeSet<(Instant, OverlayOpId)>,
}

impl Registrar {
    /// No accounts, no bindings; nonces keyed by `nonce_secret`.
    pub fn new(nonce_secret: [u8; 32]) -> Registrar {
        Registrar {
            users: BTreeMap::new(),
            table: Bindings::default(),
            nonces: NonceKeeper::new(nonce_secret),
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    pub fn set_users(&mut self, users: Vec<SipUser>) {
        self.users = users.into_iter().filter_map(|u| Some((normalize_aor(&u.aor)?, u))).collect();
    }

    /// Adds or replaces one account; false if its AOR is not `user@host`.
    pub fn add_user(&mut self, user: SipUser) -> bool {
        match normalize_aor(&user.aor) {
            Some(aor) => {
                self.users.insert(aor, user);
                true
            }
            None => false,
        }
    }

    pub fn remove_user(&mut self, aor: &str) -> bool {
        normalize_aor(aor).is_some_and(|aor| self.users.remove(&aor).is_some())
    }

    /// Makes every nonce issued before `wall_ms` stale.
    pub fn retire_nonces_before(&mut self, wall_ms: u64) {
        self.nonces.retire_before(wall_ms);
    }

    /// The bindings of `aor` as given (`user@host`, any `sip:` prefix).
    pub fn bindings(&self, aor: &str) -> &[Binding] {
        normalize_aor(aor).map_or(&[], |a| self.table.bindings(&a))
    }

    /// The bindings of an already normalised AOR.
    pub fn bindings_of(&self, aor: &str) -> &[Binding] {
        self.table.bindings(aor)
    }

    /// The binding whose Contact URI is `uri`.
    pub fn by_contact(&self, uri: &Uri) -> Option<&Binding> {
        self.table.by_contact(uri)
    }

    /// Whether `op` is one of ours.
    pub fn owns(&self, op: OverlayOpId) -> bool {
        self.pending.contains_key(&op)
    }

    /// When [`Registrar::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.table.next_expiry(), self.deadlines.first().map(|(at, _)| *at)].into_iter().flatten().min()
    }

    /// Expires bindings (the overlay entry of an AOR left with none is
    /// removed) and fails overlay stores that took too long.
    pub fn handle_timeout(&mut self, core: &mut EdgeCore, now: Instant) {
        for aor in self.table.expire(now) {
            debug!(%aor, "last binding expired");
            self.unregister(core, now, aor);
        }
        while let Some(&(at, op)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if self.owns(op) {
                self.handle_overlay(core, now, op, OverlayResult::Failed("timed out".into()));
            }
        }
    }

    /// RFC 5626 §5.2: a phone's stream connection closed.
    pub fn flow_closed(&mut self, core: &mut EdgeCore, now: Instant, flow: u64) {
        for aor in self.table.flow_closed(flow) {
            self.unregister(core, now, aor);
        }
    }

    /// §10.3 for a REGISTER from a phone.
    pub fn handle_register(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        wall_ms: u64,
        id: ServerTxId,
        req: &SipMessage,
        from: TransportAddr,
    ) {
        let outcome = self.check_register(core, now, wall_ms, req, from);
        let plan = match outcome {
            Ok(plan) => plan,
            Err(r) => {
                if !matches!(r.status.as_u16(), 401) {
                    core.counters.register_fail += 1;
                }
                return core.reject(now, id, req, r);
            }
        };
        if plan.query {
            // §10.2.3: a query changes nothing.
            return self.register_ok(core, now, id, req, &plan.aor);
        }
        let (_, after, longest) = self.table.preview(&plan, now);
        let op = core.fresh_op();
        let aor = plan.aor.clone();
        if after > 0 {
            // RFC 7904 §3: the record lives as long as the longest binding;
            // every refresh stores it again with the new lifetime.
            core.out.push_back(EdgeOutput::StoreRegistration { op, aor, expires_s: longest });
        } else {
            core.out.push_back(EdgeOutput::RemoveRegistration { op, aor });
        }
        self.pending.insert(op, Pending::Register { server: id, request: Box::new(req.clone()), plan });
        self.deadlines.insert((now + core.cfg.overlay_timeout, op));
    }

    /// The overlay answered (or timed out on) one of our stores.
    pub fn handle_overlay(&mut self, core: &mut EdgeCore, now: Instant, op: OverlayOpId, result: OverlayResult) {
        match self.pending.remove(&op) {
            Some(Pending::Register { server, request, plan }) => {
                self.register_done(core, now, server, &request, &plan, result)
            }
            Some(Pending::Unregister { aor }) => match result {
                OverlayResult::Failed(e) => {
                    warn!(%aor, error = %e, "overlay remove failed; the record expires on its own")
                }
                _ => debug!(%aor, "registration removed from the overlay"),
            },
            Some(Pending::Restore { aor }) => match result {
                OverlayResult::Failed(e) => warn!(%aor, error = %e, "registration not restored"),
                _ => debug!(%aor, "registration restored in the overlay"),
            },
            None => {}
        }
    }

    /// Stores every registration served here again (RFC 7904 §3), for its
    /// remaining lifetime: the owner calls this when a mass failure may have
    /// taken every copy of some records (RFC 6940 §10.7 repairs only what a
    /// surviving replica still holds). Returns how many were sent.
    pub fn restore(&mut self, core: &mut EdgeCore, now: Instant) -> usize {
        let due: Vec<(String, u32)> = self
            .table
            .registered()
            .filter(|(_, at)| *at > now)
            .map(|(aor, at)| {
                (aor.to_owned(), u32::try_from(at.duration_since(now).as_secs()).unwrap_or(u32::MAX).max(1))
            })
            .collect();
        for (aor, expires_s) in &due {
            let op = core.fresh_op();
            core.out.push_back(EdgeOutput::StoreRegistration { op, aor: aor.clone(), expires_s: *expires_s });
            self.pending.insert(op, Pending::Restore { aor: aor.clone() });
            self.deadlines.insert((now + core.cfg.overlay_timeout, op));
        }
        due.len()
    }

    /// Proxy-Authorization (§22.3) for a request from a local phone; on
    /// success our credentials are removed before forwarding.
    pub fn proxy_auth(&mut self, core: &mut EdgeCore, wall_ms: u64, req: &mut SipMessage) -> Result<(), Reject> {
        let Some(from) = req.from().uri.as_sip() else {
            return Err(Reject::new(403, Some("From is not a SIP URI".into())));
        };
        let host = match &from.host {
            Host::Name(n) => n.to_ascii_lowercase(),
            other => other.to_string(),
        };
        let from_aor = aor_of(from);
        let realm = core.cfg.realm.clone();
        match self.authorize(req, "Proxy-Authorization", &realm, &host, wall_ms) {
            Auth::Ok(aor) if Some(&aor) == from_aor.as_ref() => {
                let keep: Vec<String> = req
                    .headers("Proxy-Authorization")
                    .filter(|v| !digest::parse_credentials(v).is_ok_and(|c| c.realm == realm))
                    .map(str::to_owned)
                    .collect();
                let fix = |e: ParseError| Reject::new(500, Some(e.to_string()));
                req.remove_header("Proxy-Authorization").map_err(fix)?;
                for v in keep {
                    req.add_header("Proxy-Authorization", &v).map_err(fix)?;
                }
                Ok(())
            }
            Auth::Ok(_) => Err(Reject::new(403, Some("From does not match the authenticated user".into()))),
            Auth::Challenge { stale } => Err(self.challenge(core, 407, stale, wall_ms)),
            Auth::Forbidden => Err(Reject::new(403, None)),
            Auth::Malformed(e) => Err(Reject::new(400, Some(format!("Malformed Proxy-Authorization: {e}")))),
        }
    }

    fn check_register(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        wall_ms: u64,
        req: &SipMessage,
        from: TransportAddr,
    ) -> Result<Plan, Reject> {
        let Some(Uri::Sip(ruri)) = req.request_uri() else { return Err(Reject::new(416, None)) };
        // §10.3 step 1.
        if !core.is_our_host(&ruri.host, ruri.port) {
            return Err(Reject::new(403, Some("Domain not served here".into())));
        }
        let Some(to) = req.to().uri.as_sip() else { return Err(Reject::new(416, None)) };
        let Some(aor) = aor_of(to) else {
            return Err(Reject::new(400, Some("To has no user part".into())));
        };
        // §10.3 step 5, checked before authentication: an AOR in a foreign
        // domain is never ours, whoever asks.
        if !core.is_our_domain(&to.host) {
            return Err(Reject::new(404, Some("Not a domain of this registrar".into())));
        }
        let host = aor.rsplit_once('@').map_or(String::new(), |(_, h)| h.to_owned());
        let realm = core.cfg.realm.clone();
        // §10.3 steps 3–4.
        match self.authorize(req, "Authorization", &realm, &host, wall_ms) {
            Auth::Ok(user) if user == aor => {}
            Auth::Ok(_) => return Err(Reject::new(403, Some("Not allowed to register this AOR".into()))),
            Auth::Challenge { stale } => return Err(self.challenge(core, 401, stale, wall_ms)),
            Auth::Forbidden => return Err(Reject::new(403, None)),
            Auth::Malformed(e) => return Err(Reject::new(400, Some(format!("Malformed Authorization: {e}")))),
        }
        self.table.plan(req, &aor, from, now, core.cfg.min_expires, core.cfg.max_expires)
    }

    /// Checks the `header` (Authorization or Proxy-Authorization) credentials
    /// for our `realm`. A username without `@` is the user part of an AOR in
    /// `host`, which is what phones send by default.
    fn authorize(&mut self, req: &SipMessage, header: &str, realm: &str, host: &str, wall_ms: u64) -> Auth {
        let method = req.method().map_or("", |m| m.as_str());
        let ours = req.headers(header).find(|v| digest::parse_credentials(v).is_ok_and(|c| c.realm == realm));
        let Some(value) = ours else {
            // Credentials that do not even parse are a client bug, not a
            // missing login: say so instead of challenging forever.
            if let Some(bad) = req.headers(header).find_map(|v| digest::parse_credentials(v).err()) {
                return Auth::Malformed(bad.to_string());
            }
            return Auth::Challenge { stale: false };
        };
        let users = &self.users;
        let lookup = |user: &str, alg: DigestAlgorithm| {
            let account = users.get(&account_aor(user, host)?).filter(|u| u.realm == realm)?;
            Some(match alg {
                DigestAlgorithm::Md5 => account.ha1_md5.clone(),
                DigestAlgorithm::Sha256 => account.ha1_sha256.clone(),
            })
        };
        match digest::authenticate(&mut self.nonces, value, method, realm, wall_ms, lookup) {
            AuthResult::Ok { username } => match account_aor(&username, host) {
                Some(aor) => Auth::Ok(aor),
                None => Auth::Forbidden,
            },
            AuthResult::Stale => Auth::Challenge { stale: true },
            AuthResult::UnknownUser | AuthResult::Fail(FailReason::WrongResponse) => Auth::Forbidden,
            AuthResult::Fail(FailReason::Malformed(e)) => Auth::Malformed(e.to_string()),
            // Not our nonce (e.g. issued before a restart), replayed count,
            // qop we never offered: a fresh challenge lets an honest phone in.
            AuthResult::Fail(_) => Auth::Challenge { stale: false },
        }
    }

    /// A 401/407 with a fresh nonce (§22.1, RFC 8760 §2.4 order unless the
    /// configuration asks for MD5 first or only).
    fn challenge(&mut self, core: &mut EdgeCore, code: u16, stale: bool, wall_ms: u64) -> Reject {
        let nonce = self.nonces.issue(wall_ms);
        let name = if code == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
        let mut r = Reject::new(code, None);
        let mut offered = digest::challenges(&core.cfg.realm, &nonce, stale);
        if core.cfg.md5_only {
            offered.retain(|c| !c.contains("SHA-256"));
        } else if core.cfg.md5_first {
            offered.reverse();
        }
        r.headers = offered.into_iter().map(|c| (name, c)).collect();
        core.counters.auth_challenges += 1;
        r
    }

    fn register_done(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        server: ServerTxId,
        req: &SipMessage,
        plan: &Plan,
        result: OverlayResult,
    ) {
        match result {
            OverlayResult::Stored => {
                self.table.commit(plan);
                debug!(aor = %plan.aor, bindings = self.table.bindings(&plan.aor).len(), "registered");
                self.register_ok(core, now, server, req, &plan.aor);
            }
            OverlayResult::Failed(e) => {
                core.counters.register_fail += 1;
                let reason = format!("overlay store failed: {e}");
                warn!(aor = %plan.aor, %reason, "REGISTER refused");
                core.reply(now, server, req, StatusCode::SERVER_ERROR, Some(&reason), &[]);
            }
            OverlayResult::Located(_) => {
                core.counters.register_fail += 1;
                let why = Some("overlay store failed: unexpected fetch result");
                core.reply(now, server, req, StatusCode::SERVER_ERROR, why, &[]);
            }
        }
    }

    /// 200 with every current binding and its remaining expiry (§10.3 step 8).
    fn register_ok(&mut self, core: &mut EdgeCore, now: Instant, id: ServerTxId, req: &SipMessage, aor: &str) {
        core.counters.register_ok += 1;
        let mut headers: Vec<(&'static str, String)> =
            self.table.contact_values(aor, now).into_iter().map(|c| ("Contact", c)).collect();
        // RFC 5626 §6: confirm outbound when the phone asked for it.
        let outbound = req.header_list("Supported").any(|s| s.eq_ignore_ascii_case("outbound"));
        if outbound && self.table.bindings(aor).iter().any(|b| b.contact.params.contains("reg-id")) {
            headers.push(("Require", "outbound".to_owned()));
        }
        core.reply(now, id, req, StatusCode::OK, None, &headers);
    }

    /// The last binding of `aor` is gone: remove our overlay entry.
    fn unregister(&mut self, core: &mut EdgeCore, now: Instant, aor: String) {
        let op = core.fresh_op();
        core.out.push_back(EdgeOutput::RemoveRegistration { op, aor: aor.clone() });
        self.pending.insert(op, Pending::Unregister { aor });
        self.deadlines.insert((now + core.cfg.overlay_timeout, op));
    }
}

/// An account's AOR as a table key: `user@host` with the host case-folded
/// and any `sip:` prefix dropped.
pub(super) fn normalize_aor(aor: &str) -> Option<String> {
    let aor = aor.strip_prefix("sip:").unwrap_or(aor);
    let (user, host) = aor.rsplit_once('@')?;
    (!user.is_empty() && !host.is_empty()).then(|| format!("{user}@{}", host.to_ascii_lowercase()))
}

/// The AOR a digest username names: itself if it contains `@`, else
/// `username@host`.
fn account_aor(username: &str, host: &str) -> Option<String> {
    if username.contains('@') { normalize_aor(username) } else { normalize_aor(&format!("{username}@{host}")) }
}

#[cfg(test)]
mod tests;
