//! What the registrar and the proxy share (sans-IO): the transaction layer
//! they answer and forward through, the node's identity (Via, Record-Route,
//! loop detection), the counters, the output queue and the id source.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::{debug, trace};

use super::malformed::salvage_error_response;
use super::{EdgeConfig, EdgeConfigError, EdgeCounters, EdgeOutput, OverlayOpId, Source};
use crate::sip::account::NodeRef;
use crate::sip::message::{Host, ParseError, SipMessage, SipUri, StatusCode, Uri, Via};
use crate::sip::registrar::Reject;
use crate::sip::transaction::{MAGIC_COOKIE, ServerTxId, TransactionLayer, Transmit, Transport, TransportAddr};

/// The sentinel address standing for "the SIP connection to node N" inside
/// the transaction layer; `flow` is the node's index in `node_flows`.
const NODE_ADDR: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);

/// The shared part of one node's SIP edge. See the module doc.
#[derive(Debug)]
pub(in crate::sip) struct EdgeCore {
    pub(in crate::sip) cfg: EdgeConfig,
    pub(in crate::sip) host: Host,
    pub(in crate::sip) tl: TransactionLayer,
    pub(in crate::sip) counters: EdgeCounters,
    pub(in crate::sip) out: VecDeque<EdgeOutput>,
    node_flows: BTreeMap<NodeRef, u64>,
    flow_nodes: BTreeMap<u64, NodeRef>,
    /// Keys the Record-Route token that lets in-dialog requests through
    /// without a new challenge (derived from the nonce secret).
    dialog_key: ring::hmac::Key,
    next_id: u64,
}

impl EdgeCore {
    /// Checks `cfg` and builds the shared state.
    pub(in crate::sip) fn new(cfg: EdgeConfig) -> Result<EdgeCore, EdgeConfigError> {
        if cfg.domains.is_empty() {
            return Err(EdgeConfigError::NoDomain);
        }
        if cfg.min_expires > cfg.max_expires {
            return Err(EdgeConfigError::BadExpires { min: cfg.min_expires, max: cfg.max_expires });
        }
        let host =
            Host::parse(&cfg.advertise.0).map_err(|_| EdgeConfigError::BadAdvertiseHost(cfg.advertise.0.clone()))?;
        Ok(EdgeCore {
            host,
            tl: TransactionLayer::new(cfg.transactions.clone()),
            dialog_key: {
                let base = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &cfg.nonce_secret);
                let derived = ring::hmac::sign(&base, b"chordphone record-route token");
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
            },
            node_flows: BTreeMap::new(),
            flow_nodes: BTreeMap::new(),
            counters: EdgeCounters::default(),
            out: VecDeque::new(),
            next_id: 0,
            cfg,
        })
    }

    /// Turns a transaction-layer transmission into an output: to a phone,
    /// or over the SIP connection to a node.
    pub(in crate::sip) fn transmit(&mut self, t: Transmit) {
        let bytes = t.payload.to_vec();
        let node = (t.to.addr == NODE_ADDR).then(|| t.to.flow.and_then(|f| self.flow_nodes.get(&f))).flatten();
        match node {
            Some(&node) => self.out.push_back(EdgeOutput::SendNode { node, bytes }),
            None => self.out.push_back(EdgeOutput::SendLocal { to: t.to, bytes }),
        }
    }

    /// A generated response on server transaction `id`. A To tag is added
    /// to everything but 100 (§8.2.6.2).
    pub(in crate::sip) fn reply(
        &mut self,
        now: Instant,
        id: ServerTxId,
        req: &SipMessage,
        code: StatusCode,
        reason: Option<&str>,
        headers: &[(&'static str, String)],
    ) {
        let tag = (code != StatusCode::TRYING).then(|| self.fresh_tag());
        let mut resp = SipMessage::response_to(req, code, reason, tag.as_deref());
        for (name, value) in headers {
            if let Err(e) = resp.add_header(name, value) {
                debug!(error = %e, name, "header left out of a response");
            }
        }
        self.send_response(now, id, resp);
    }

    pub(in crate::sip) fn send_response(&mut self, now: Instant, id: ServerTxId, resp: SipMessage) {
        let code = resp.status().map_or(0, StatusCode::as_u16);
        match self.tl.respond(now, id, resp) {
            Ok(()) => {
                self.counters.responses += 1;
                trace!(code, "response sent");
            }
            Err(e) => debug!(code, error = %e, "response not sent"),
        }
    }

    pub(in crate::sip) fn reject(&mut self, now: Instant, id: ServerTxId, req: &SipMessage, r: Reject) {
        self.reply(now, id, req, r.status, r.reason.as_deref(), &r.headers);
    }

    /// The transaction-layer address of a source.
    pub(in crate::sip) fn addr_of(&mut self, src: Source) -> TransportAddr {
        match src {
            Source::Local(a) => a,
            Source::Node(n) => self.node_addr(n),
        }
    }

    pub(in crate::sip) fn node_addr(&mut self, node: NodeRef) -> TransportAddr {
        let flow = match self.node_flows.get(&node) {
            Some(&f) => f,
            None => {
                let f = self.node_flows.len() as u64;
                self.node_flows.insert(node, f);
                self.flow_nodes.insert(f, node);
                f
            }
        };
        TransportAddr { transport: Transport::Tcp, addr: NODE_ADDR, flow: Some(flow) }
    }

    /// Via sent-by / Record-Route port for `t`.
    pub(in crate::sip) fn port_for(&self, t: Transport) -> u16 {
        match t {
            Transport::Tls => self.cfg.advertise_tls_port.unwrap_or(self.cfg.advertise.1),
            _ => self.cfg.advertise.1,
        }
    }

    /// Our Via for a request sent over `t` (node links are nominally TCP).
    pub(in crate::sip) fn our_via(&self, t: Transport, branch: &str) -> Result<Via, ParseError> {
        Via::new(t.via_name(), self.host.clone(), Some(self.port_for(t)), branch)
    }

    /// `<sip:NODEID@host:port;transport=…;lr>`: names this node for loose
    /// routing (the user part) and for phones (host and port).
    /// Our Record-Route facing transport `t` for a dialog with `call_id`.
    /// Its `cpt` parameter is an HMAC of the Call-ID: a phone's in-dialog
    /// request that carries it back in its Route set was routed through a
    /// dialog we authorised, so it is not challenged again (§22.3 allows
    /// challenging any request; this spares phones a 407 per BYE).
    pub(in crate::sip) fn record_route(&self, t: Transport, call_id: &str) -> String {
        let name = match t {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        format!(
            "<sip:{}@{}:{};transport={name};cpt={};lr>",
            self.cfg.node_id.to_hex(),
            self.host,
            self.port_for(t),
            self.dialog_token(call_id)
        )
    }

    fn dialog_token(&self, call_id: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::hmac::sign(&self.dialog_key, call_id.as_bytes()))
    }

    /// Whether `req` names us (in a Route, or in the Request-URI after a
    /// strict router) with the token of our Record-Route for its Call-ID.
    pub(in crate::sip) fn dialog_vouched(&self, req: &SipMessage) -> bool {
        use base64::Engine as _;
        let mut uris: Vec<SipUri> =
            req.routes().unwrap_or_default().into_iter().filter_map(|r| r.uri.as_sip().cloned()).collect();
        if let Some(Uri::Sip(u)) = req.request_uri() {
            uris.push(u.clone());
        }
        uris.iter().filter(|u| self.names_us_by_id(u)).any(|u| {
            u.params
                .value("cpt")
                .and_then(|t| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).ok())
                .is_some_and(|tag| ring::hmac::verify(&self.dialog_key, req.call_id().as_bytes(), &tag).is_ok())
        })
    }

    /// §16.6 step 8 with §16.3 step 4 in mind: a hash of everything that
    /// affects routing of the received request, so that a looped request
    /// yields the same value and a spiral a different one.
    pub(in crate::sip) fn branch_hash(&self, req: &SipMessage) -> String {
        let mut h = Sha256::new();
        let method = req.method().map_or("", |m| m.as_str()).to_owned();
        let ruri = req.request_uri().map(|u| u.to_string()).unwrap_or_default();
        let seq = req.cseq().seq.to_string();
        let parts = [
            self.cfg.node_id.to_hex(),
            method,
            ruri,
            req.from().tag().unwrap_or("").to_owned(),
            req.to().tag().unwrap_or("").to_owned(),
            req.call_id().to_owned(),
            seq,
        ];
        for p in &parts {
            h.update(p.as_bytes());
            h.update([0u8]);
        }
        // Proxy-Authorization is left out: we strip our credentials before
        // forwarding, and a looped copy must hash the same.
        for name in ["Route", "Proxy-Require"] {
            for v in req.headers(name) {
                h.update(v.as_bytes());
                h.update([0u8]);
            }
        }
        let full = hex::encode(h.finalize());
        format!("cp{}", full.get(..20).unwrap_or(&full))
    }

    pub(in crate::sip) fn is_loop(&self, req: &SipMessage, hash: &str) -> bool {
        let prefix = format!("{MAGIC_COOKIE}{hash}.");
        req.vias().iter().any(|v| {
            let ours = v.host.matches(&self.host)
                && (v.port == Some(self.cfg.advertise.1) || v.port == self.cfg.advertise_tls_port);
            ours && v.branch().is_some_and(|b| b.starts_with(&prefix))
        })
    }

    /// A Route/Request-URI naming this node by its Node-ID user part.
    pub(in crate::sip) fn names_us_by_id(&self, uri: &SipUri) -> bool {
        node_of(uri) == Some(self.cfg.node_id)
    }

    /// A Route naming this node: our Node-ID, or (a phone's preloaded
    /// outbound-proxy Route) our advertised address or a domain of ours.
    pub(in crate::sip) fn names_us(&self, uri: &SipUri) -> bool {
        self.names_us_by_id(uri) || (uri.user.is_none() && self.is_our_host(&uri.host, uri.port))
    }

    pub(in crate::sip) fn is_our_domain(&self, host: &Host) -> bool {
        let Host::Name(name) = host else { return false };
        self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(name))
    }

    pub(in crate::sip) fn is_our_host(&self, host: &Host, port: Option<u16>) -> bool {
        let port_ok = port.is_none_or(|p| p == self.cfg.advertise.1 || Some(p) == self.cfg.advertise_tls_port);
        self.is_our_domain(host) || (host.matches(&self.host) && port_ok)
    }

    pub(in crate::sip) fn fresh_op(&mut self) -> OverlayOpId {
        self.next_id += 1;
        OverlayOpId(self.next_id)
    }

    pub(in crate::sip) fn fresh_tag(&mut self) -> String {
        self.next_id += 1;
        let node = self.cfg.node_id.to_hex();
        format!("{}-{:x}", node.get(..8).unwrap_or(&node), self.next_id)
    }

    pub(in crate::sip) fn fresh_proxy_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// §16.3 step 1 / §8.2: answer an unparseable request with 400 (505 for
    /// a foreign version) when its Via, From, To, Call-ID and CSeq can be
    /// salvaged; otherwise drop it.
    pub(in crate::sip) fn malformed(&mut self, bytes: &[u8], err: &ParseError, src: Source) {
        debug!(error = %err, "malformed SIP message");
        let Some(bytes) = salvage_error_response(bytes, err) else {
            self.counters.malformed_dropped += 1;
            return;
        };
        self.counters.malformed_rejected += 1;
        self.counters.responses += 1;
        match src {
            Source::Local(to) => self.out.push_back(EdgeOutput::SendLocal { to, bytes }),
            Source::Node(node) => self.out.push_back(EdgeOutput::SendNode { node, bytes }),
        }
    }
}

/// The Node-ID a `sip:NODEIDHEX@…` URI names.
pub(in crate::sip) fn node_of(uri: &SipUri) -> Option<NodeRef> {
    let user = uri.user_name()?;
    (user.len() == 32).then(|| NodeRef::from_hex(user)).flatten()
}
