//! The overlay configuration document (RFC 6940 §11.1): the signed XML
//! file (`application/p2p-overlay+xml`) every node of an overlay must agree
//! on, read and written with quick-xml.
//!
//! # What is signed
//!
//! §11.1 signs "the configuration element" without fixing a canonical form.
//! chordphone signs bytes, not an XML tree, so no re-serialisation can break
//! or forge a signature:
//!
//! - `<signature>` is the signature over the literal UTF-8 text of the first
//!   `<configuration …>` element, from its opening `<` to the closing `>` of
//!   `</configuration>` inclusive, exactly as it appears in the file: no
//!   canonicalisation, no whitespace or line-ending normalisation.
//! - `<kind-signature>` is the signature over the literal text of the
//!   `<kind …>` element of its `<kind-block>`, from `<kind` to `</kind>`.
//! - Both hold the raw signature as [`KeyPair::sign`] makes it (PKCS#1 v1.5,
//!   DER `ECDSA-Sig-Value` or raw Ed25519) in base64, with the algorithm
//!   named by the `algorithm` attribute: `rsa-sha256`, `ecdsa-p256-sha256` or
//!   `ed25519` (§11.1's `signature-algorithm-type` is open-ended).
//! - The signer of both is the overlay's enrollment CA: the key of one of
//!   the document's `<root-cert>`s, which must be the trusted root once a
//!   node has one. §11.1 names signers by Node-ID (`<configuration-signer>`,
//!   `<kind-signer>`); a CA has no Node-ID, so those are neither written
//!   nor consulted.
//!
//! A configuration is interpreted from its signed bytes alone: they are
//! parsed with the default namespace bound to the base namespace and the
//! prefixes `chord` and `cp` bound to [`NS_CHORD`] and [`NS_CHORDPHONE`],
//! whatever `<overlay>` declares outside the signature. Rebinding a prefix
//! outside the signed bytes cannot change what a signed configuration says.
//!
//! # Deviations
//!
//! - Link types (§6.6.1's "TLS-TCP-FH-NO-ICE", …) are not a §11.1 element;
//!   chordphone writes `<overlay-link-protocol>TLS</overlay-link-protocol>`
//!   for other implementations and the link types as
//!   `<cp:overlay-link-type>` in its own namespace.
//! - Only the first `<configuration>` of a document and the `<signature>`
//!   after it are used; only CHORD-RELOAD with 16-byte Node-IDs is accepted.
//! - Elements of other namespaces are ignored (§11.1 extensibility), and so
//!   are base elements chordphone does not use (`turn-density`,
//!   `shared-secret`, `bad-node`, …); `<mandatory-extension>` naming a
//!   namespace chordphone does not know is refused.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use quick_xml::escape::unescape;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;
use quick_xml::{Writer, XmlVersion};
use thiserror::Error;

use crate::overlay::OverlayConfig;
use crate::overlay::api::{AccessPolicy, KindPolicy};
use crate::security::{KeyAlgorithm, KeyPair, OverlayCa, SecurityError};
use crate::wire::KindId;
use crate::wire::storage::DataModel;

/// §11.1.1: the base namespace of the configuration document.
pub const NS_BASE: &str = "urn:ietf:params:xml:ns:p2p:config-base";
/// §11.1.1: the CHORD-RELOAD parameters' namespace.
pub const NS_CHORD: &str = "urn:ietf:params:xml:ns:p2p:config-chord";
/// chordphone's own extension elements (the overlay link types).
pub const NS_CHORDPHONE: &str = "urn:chordphone:xml:ns:config";
/// §11.1: `bootstrap-node` port when the attribute is absent.
pub const DEFAULT_BOOTSTRAP_PORT: u16 = 6084;

/// `max-node-multiple` assumed when a kind does not give one.
const DEFAULT_MAX_NODE_MULTIPLE: u32 = 20;
/// The only topology plug-in this implementation has (§10).
const CHORD_RELOAD: &str = "CHORD-RELOAD";
/// The only Node-ID length this implementation has (§11.1 allows 16–20).
const NODE_ID_LENGTH: u8 = 16;

/// An overlay configuration (§11.1 `<configuration>`), as the enrollment
/// server signs and serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayDocument {
    /// `instance-name`: the overlay name.
    pub name: String,
    /// `sequence` (§6.3.2.1 configuration_sequence).
    pub sequence: u16,
    /// `topology-plugin`; always "CHORD-RELOAD" here.
    pub topology: String,
    /// `node-id-length` in bytes; always 16 here.
    pub node_id_length: u8,
    /// `root-cert`s: trust anchors, DER.
    pub root_certs: Vec<Vec<u8>>,
    /// The first `enrollment-server` URL.
    pub enrollment_server: Option<String>,
    /// `bootstrap-node`s (§11.4).
    pub bootstrap: Vec<SocketAddr>,
    pub max_message_size: u32,
    pub initial_ttl: u8,
    /// Link types peers may use (§6.6.1), in order of preference.
    pub link_types: Vec<LinkType>,
    pub clients_permitted: bool,
    pub self_signed_permitted: bool,
    pub no_ice: bool,
    /// `chord:chord-update-interval` (§10.7.2).
    pub chord_update_interval_s: u32,
    /// `chord:chord-ping-interval` (§10.7.4.3).
    pub chord_ping_interval_s: u32,
    /// `chord:chord-reactive` (§10.7.2).
    pub chord_reactive: bool,
    /// `required-kinds` (§11.1 kind-blocks).
    pub kinds: Vec<KindPolicy>,
}

/// An overlay link type (§6.6.1, IANA "Overlay Link Types").
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// "TLS-TCP-FH-NO-ICE": TLS over TCP, framed, no ICE.
    TlsTcpFhNoIce,
    /// "DTLS-UDP-SR-NO-ICE": DTLS over UDP with simple reliability, no ICE.
    DtlsUdpSrNoIce,
    /// "DTLS-UDP-SR": DTLS over UDP with ICE.
    DtlsUdpSr,
    /// A link type this implementation does not speak.
    Other(String),
}

/// Why a configuration document was refused or could not be made.
#[derive(Debug, Error)]
pub enum DocError {
    #[error("malformed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("document root is not <overlay> in namespace {NS_BASE}")]
    NotOverlay,
    #[error("missing element <{0}>")]
    Missing(&'static str),
    #[error("element <{element}> lacks attribute '{attribute}'")]
    MissingAttribute { element: &'static str, attribute: &'static str },
    #[error("kind '{kind}': missing element <{element}>")]
    KindMissing { kind: String, element: &'static str },
    #[error("invalid value '{value}' in <{element}>: {reason}")]
    BadValue { element: String, value: String, reason: String },
    /// A structural error other than a missing element.
    #[error("{0}")]
    Structure(String),
    #[error("unknown access policy '{0}'")]
    UnknownAccessPolicy(String),
    #[error("unknown data model '{0}'")]
    UnknownDataModel(String),
    #[error("unknown kind name '{0}'")]
    UnknownKindName(String),
    #[error("kind '{0}' is defined twice")]
    DuplicateKind(String),
    #[error("unsupported topology-plugin '{0}' (only {CHORD_RELOAD})")]
    UnsupportedTopology(String),
    #[error("unsupported node-id-length {0} (only {NODE_ID_LENGTH})")]
    UnsupportedNodeIdLength(u8),
    #[error("mandatory extension '{0}' is not supported")]
    UnsupportedExtension(String),
    #[error("no overlay link protocol this node speaks (TLS/DTLS)")]
    NoLinkType,
    #[error("configuration '{0}' has no <signature>")]
    MissingSignature(String),
    #[error("unknown signature algorithm '{0}'")]
    UnknownSignatureAlgorithm(String),
    #[error("signature of configuration '{0}' does not verify")]
    BadSignature(String),
    #[error("kind '{0}' has no <kind-signature>")]
    KindUnsigned(String),
    #[error("kind-signature of kind '{0}' does not verify")]
    BadKindSignature(String),
    #[error("configuration '{0}' does not come from the trusted overlay CA: its root-cert differs")]
    UntrustedRoot(String),
    #[error("root-cert is not a usable certificate: {0}")]
    BadRootCert(String),
    #[error("the signing CA's certificate is not among the document's root-certs")]
    SignerNotRoot,
    #[error("signing failed: {0}")]
    Security(#[from] SecurityError),
    #[error("cannot write XML: {0}")]
    Write(String),
}

impl From<std::io::Error> for DocError {
    fn from(e: std::io::Error) -> Self {
        DocError::Write(e.to_string())
    }
}

impl OverlayDocument {
    /// A configuration for `name` trusting `root_cert_der`, with defaults
    /// that match [`OverlayConfig::default`] and the standard kinds.
    pub fn new(name: &str, root_cert_der: Vec<u8>, bootstrap: Vec<SocketAddr>) -> Self {
        let d = OverlayConfig::default();
        OverlayDocument {
            name: name.to_owned(),
            sequence: d.configuration_sequence,
            topology: CHORD_RELOAD.to_owned(),
            node_id_length: NODE_ID_LENGTH,
            root_certs: vec![root_cert_der],
            enrollment_server: None,
            bootstrap,
            max_message_size: u32::try_from(d.max_message_size).unwrap_or(u32::MAX),
            initial_ttl: d.initial_ttl,
            link_types: vec![LinkType::TlsTcpFhNoIce, LinkType::DtlsUdpSrNoIce],
            clients_permitted: true,
            self_signed_permitted: false,
            no_ice: true,
            chord_update_interval_s: secs(d.update_interval),
            chord_ping_interval_s: secs(d.finger_interval),
            chord_reactive: true,
            kinds: KindPolicy::standard(),
        }
    }

    /// The whole `<overlay>` document, its configuration and every kind
    /// signed by `ca`, whose certificate must be one of the root-certs.
    pub fn sign(&self, ca: &OverlayCa) -> Result<String, DocError> {
        if !self.root_certs.iter().any(|c| c.as_slice() == ca.cert_der()) {
            return Err(DocError::SignerNotRoot);
        }
        check_unique_kinds(&self.kinds)?;
        let key = ca.key();
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let root = BytesStart::new("overlay").with_attributes([
            ("xmlns", NS_BASE),
            ("xmlns:chord", NS_CHORD),
            ("xmlns:cp", NS_CHORDPHONE),
        ]);
        w.write_event(Event::Start(root))?;
        let from = w.get_ref().len();
        self.write_configuration(&mut w, key)?;
        write_signature(&mut w, "signature", key, from)?;
        w.write_event(Event::End(BytesEnd::new("overlay")))?;
        String::from_utf8(w.into_inner()).map_err(|e| DocError::Write(e.to_string()))
    }

    /// Parses a signed document and checks it: the configuration signature
    /// by one of its root-certs (which must equal `trusted_root_der` when
    /// given: an enrolled node refuses another CA's overlay), then every
    /// kind-signature by the same key.
    pub fn verify_signed(xml: &str, trusted_root_der: Option<&[u8]>) -> Result<OverlayDocument, DocError> {
        let skeleton = skeleton(xml)?;
        let config_text = xml
            .get(skeleton.config.clone())
            .ok_or_else(|| DocError::Structure("configuration span outside the document".into()))?;
        let parsed = parse_configuration(config_text, skeleton.config.start)?;
        let doc = parsed.doc;
        let name = doc.name.clone();
        let signature = skeleton.signature.ok_or_else(|| DocError::MissingSignature(name.clone()))?;
        let candidates: Vec<&[u8]> = match trusted_root_der {
            Some(trusted) if doc.root_certs.iter().any(|c| c.as_slice() == trusted) => vec![trusted],
            Some(_) => return Err(DocError::UntrustedRoot(name)),
            None => doc.root_certs.iter().map(Vec::as_slice).collect(),
        };
        let mut signer = None;
        for cert in candidates {
            let spki = match spki_of(cert) {
                Ok(s) => s,
                Err(e) if trusted_root_der.is_some() => return Err(e),
                Err(_) => continue,
            };
            if signature.verifies(&spki, config_text.as_bytes())? {
                signer = Some(spki);
                break;
            }
        }
        let signer = signer.ok_or(DocError::BadSignature(name))?;
        for kind in &parsed.kinds {
            let sig = kind.signature.as_ref().ok_or_else(|| DocError::KindUnsigned(kind.label.clone()))?;
            if !sig.verifies(&signer, kind.text.as_bytes())? {
                return Err(DocError::BadKindSignature(kind.label.clone()));
            }
        }
        Ok(doc)
    }

    /// The overlay machine's configuration: [`OverlayConfig::default`] with
    /// this document's values.
    pub fn to_overlay_config(&self) -> OverlayConfig {
        OverlayConfig {
            overlay_name: self.name.clone(),
            configuration_sequence: self.sequence,
            update_interval: Duration::from_secs(u64::from(self.chord_update_interval_s)),
            finger_interval: Duration::from_secs(u64::from(self.chord_ping_interval_s)),
            initial_ttl: self.initial_ttl,
            max_message_size: usize::try_from(self.max_message_size).unwrap_or(usize::MAX),
            kinds: self.kinds.clone(),
            ..OverlayConfig::default()
        }
    }

    fn write_configuration(&self, w: &mut XmlWriter, key: &KeyPair) -> Result<(), DocError> {
        let sequence = self.sequence.to_string();
        let start = BytesStart::new("configuration")
            .with_attributes([("instance-name", self.name.as_str()), ("sequence", sequence.as_str())]);
        w.write_event(Event::Start(start))?;
        leaf(w, "topology-plugin", &self.topology)?;
        leaf(w, "node-id-length", &self.node_id_length.to_string())?;
        for cert in &self.root_certs {
            leaf(w, "root-cert", &B64.encode(cert))?;
        }
        if let Some(url) = &self.enrollment_server {
            leaf(w, "enrollment-server", url)?;
        }
        w.create_element("self-signed-permitted")
            .with_attribute(("digest", "sha256"))
            .write_text_content(BytesText::new(bool_str(self.self_signed_permitted)))?;
        for addr in &self.bootstrap {
            let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
            w.create_element("bootstrap-node")
                .with_attributes([("address", ip.as_str()), ("port", port.as_str())])
                .write_empty()?;
        }
        leaf(w, "clients-permitted", bool_str(self.clients_permitted))?;
        leaf(w, "no-ice", bool_str(self.no_ice))?;
        leaf(w, "chord:chord-update-interval", &self.chord_update_interval_s.to_string())?;
        leaf(w, "chord:chord-ping-interval", &self.chord_ping_interval_s.to_string())?;
        leaf(w, "chord:chord-reactive", bool_str(self.chord_reactive))?;
        leaf(w, "max-message-size", &self.max_message_size.to_string())?;
        leaf(w, "initial-ttl", &self.initial_ttl.to_string())?;
        // §11.1: "TLS" stands for TLS and DTLS; the precise link types follow.
        leaf(w, "overlay-link-protocol", "TLS")?;
        for link in &self.link_types {
            leaf(w, "cp:overlay-link-type", link.as_str())?;
        }
        if !self.kinds.is_empty() {
            w.write_event(Event::Start(BytesStart::new("required-kinds")))?;
            for kind in &self.kinds {
                w.write_event(Event::Start(BytesStart::new("kind-block")))?;
                let from = w.get_ref().len();
                write_kind(w, kind)?;
                write_signature(w, "kind-signature", key, from)?;
                w.write_event(Event::End(BytesEnd::new("kind-block")))?;
            }
            w.write_event(Event::End(BytesEnd::new("required-kinds")))?;
        }
        w.write_event(Event::End(BytesEnd::new("configuration")))?;
        Ok(())
    }
}

impl LinkType {
    /// The IANA name.
    pub fn as_str(&self) -> &str {
        match self {
            LinkType::TlsTcpFhNoIce => "TLS-TCP-FH-NO-ICE",
            LinkType::DtlsUdpSrNoIce => "DTLS-UDP-SR-NO-ICE",
            LinkType::DtlsUdpSr => "DTLS-UDP-SR",
            LinkType::Other(s) => s,
        }
    }

    /// Reads an IANA name; anything else is [`LinkType::Other`].
    pub fn parse(name: &str) -> LinkType {
        match name.trim() {
            "TLS-TCP-FH-NO-ICE" => LinkType::TlsTcpFhNoIce,
            "DTLS-UDP-SR-NO-ICE" => LinkType::DtlsUdpSrNoIce,
            "DTLS-UDP-SR" => LinkType::DtlsUdpSr,
            other => LinkType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---- writing ----

type XmlWriter = Writer<Vec<u8>>;

fn leaf(w: &mut XmlWriter, name: &str, text: &str) -> Result<(), DocError> {
    w.create_element(name).write_text_content(BytesText::new(text))?;
    Ok(())
}

fn write_kind(w: &mut XmlWriter, kind: &KindPolicy) -> Result<(), DocError> {
    let id = kind.kind.0.to_string();
    // §11.1: IANA-registered kinds by name, the others by number.
    let attr = match kind.kind.name() {
        Some(name) => ("name", name),
        None => ("id", id.as_str()),
    };
    w.write_event(Event::Start(BytesStart::new("kind").with_attributes([attr])))?;
    leaf(w, "data-model", data_model_name(kind.model))?;
    leaf(w, "access-control", access_policy_name(kind.access))?;
    leaf(w, "max-count", &kind.max_count.to_string())?;
    leaf(w, "max-size", &kind.max_size.to_string())?;
    if kind.access == AccessPolicy::NodeMultiple || kind.max_node_multiple != DEFAULT_MAX_NODE_MULTIPLE {
        leaf(w, "max-node-multiple", &kind.max_node_multiple.to_string())?;
    }
    w.write_event(Event::End(BytesEnd::new("kind")))?;
    Ok(())
}

/// Signs the element written since `from` (the text from its `<` to the
/// end of the buffer) and writes the signature as element `name`.
fn write_signature(w: &mut XmlWriter, name: &str, key: &KeyPair, from: usize) -> Result<(), DocError> {
    let written = w.get_ref().get(from..).unwrap_or_default();
    let signed = written.trim_ascii_start();
    let signature = B64.encode(key.sign(signed)?);
    w.create_element(name)
        .with_attribute(("algorithm", algorithm_name(key.algorithm())))
        .write_text_content(BytesText::new(&signature))?;
    Ok(())
}

// ---- reading ----

/// Where the configuration is and what signs it, found without
/// interpreting the configuration.
struct Skeleton {
    config: std::ops::Range<usize>,
    signature: Option<SignatureValue>,
}

/// A `<signature>` or `<kind-signature>`.
struct SignatureValue {
    algorithm: Option<KeyAlgorithm>,
    bytes: Vec<u8>,
}

struct ParsedConfiguration {
    doc: OverlayDocument,
    kinds: Vec<SignedKind>,
}

/// A kind element's literal text and its signature.
struct SignedKind {
    label: String,
    text: String,
    signature: Option<SignatureValue>,
}

fn skeleton(xml: &str) -> Result<Skeleton, DocError> {
    let mut p = Parser::new(xml, 0, 0);
    let root = match p.next()? {
        Item::Open(o) => o,
        Item::Close | Item::Eof => return Err(DocError::NotOverlay),
    };
    if root.ns != Ns::Base || root.local() != "overlay" {
        return Err(DocError::NotOverlay);
    }
    if root.empty {
        return Err(DocError::Missing("configuration"));
    }
    let mut config = None;
    let mut signature = None;
    // Once another configuration begins, the first one's signature can no
    // longer follow.
    let mut closed = false;
    while let Some(o) = p.child()? {
        match (o.ns, o.local()) {
            (Ns::Base, "configuration") if config.is_none() => {
                p.skip(&o)?;
                config = Some(o.at..p.pos());
            }
            (Ns::Base, "configuration") => {
                closed = true;
                p.skip(&o)?;
            }
            (Ns::Base, "signature") if config.is_some() && signature.is_none() && !closed => {
                signature = Some(p.signature(&o)?);
            }
            _ => p.skip(&o)?,
        }
    }
    let config = config.ok_or(DocError::Missing("configuration"))?;
    Ok(Skeleton { config, signature })
}

/// Interprets the signed bytes of a configuration in the fixed namespace
/// context the module comment describes. `origin` is their offset in the
/// file, for error positions.
fn parse_configuration(config_text: &str, origin: usize) -> Result<ParsedConfiguration, DocError> {
    let prefix = format!(r#"<overlay xmlns="{NS_BASE}" xmlns:chord="{NS_CHORD}" xmlns:cp="{NS_CHORDPHONE}">"#);
    let wrapped = format!("{prefix}{config_text}</overlay>");
    let mut p = Parser::new(&wrapped, prefix.len(), origin);
    p.child()?.ok_or(DocError::Missing("configuration"))?;
    match p.child()? {
        Some(o) if o.ns == Ns::Base && o.local() == "configuration" => p.configuration(&o),
        _ => Err(DocError::Missing("configuration")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ns {
    Base,
    Chord,
    Chordphone,
    Other,
}

fn ns_of(r: &ResolveResult<'_>) -> Ns {
    match r {
        ResolveResult::Bound(Namespace(NS_BASE)) => Ns::Base,
        ResolveResult::Bound(Namespace(NS_CHORD)) => Ns::Chord,
        ResolveResult::Bound(Namespace(NS_CHORDPHONE)) => Ns::Chordphone,
        _ => Ns::Other,
    }
}

/// An element start (or empty element) and where its `<` is.
struct Open<'i> {
    ns: Ns,
    e: BytesStart<'i>,
    at: usize,
    empty: bool,
}

impl Open<'_> {
    fn local(&self) -> &str {
        self.e.local_name().into_inner()
    }
}

enum Item<'i> {
    Open(Open<'i>),
    Close,
    Eof,
}

struct Parser<'i> {
    src: &'i str,
    r: NsReader<&'i [u8]>,
    /// Bytes of `src` before the text errors should be counted from.
    skip: usize,
    /// Offset of that text in the file.
    origin: usize,
}

impl<'i> Parser<'i> {
    fn new(src: &'i str, skip: usize, origin: usize) -> Self {
        Parser { src, r: NsReader::from_str(src), skip, origin }
    }

    fn pos(&self) -> usize {
        usize::try_from(self.r.buffer_position()).unwrap_or(usize::MAX)
    }

    fn error(&self, at: u64, message: String) -> DocError {
        let at = usize::try_from(at).unwrap_or(usize::MAX);
        let position = at.saturating_sub(self.skip).saturating_add(self.origin);
        DocError::Xml { position: u64::try_from(position).unwrap_or(u64::MAX), message }
    }

    fn xml_error(&self, e: quick_xml::Error) -> DocError {
        self.error(self.r.error_position(), e.to_string())
    }

    fn next(&mut self) -> Result<Item<'i>, DocError> {
        loop {
            let at = self.pos();
            let read = self.r.read_resolved_event().map(|(res, ev)| (ns_of(&res), ev));
            let (ns, ev) = read.map_err(|e| self.xml_error(e))?;
            match ev {
                Event::Start(e) => return Ok(Item::Open(Open { ns, e, at: self.tag_start(at), empty: false })),
                Event::Empty(e) => return Ok(Item::Open(Open { ns, e, at: self.tag_start(at), empty: true })),
                Event::End(_) => return Ok(Item::Close),
                Event::Eof => return Ok(Item::Eof),
                // Text between elements, comments, processing instructions.
                _ => {}
            }
        }
    }

    /// The next child element of the current one, `None` at its end.
    fn child(&mut self) -> Result<Option<Open<'i>>, DocError> {
        match self.next()? {
            Item::Open(o) => Ok(Some(o)),
            Item::Close => Ok(None),
            Item::Eof => Err(self.error(self.r.buffer_position(), "unexpected end of document".into())),
        }
    }

    /// `at` is where the event began; the `<` is there or after blanks.
    fn tag_start(&self, at: usize) -> usize {
        let rest = self.src.get(at..).unwrap_or_default();
        at + (rest.len() - rest.trim_start().len())
    }

    fn skip(&mut self, o: &Open<'i>) -> Result<(), DocError> {
        if !o.empty {
            self.r.read_to_end(o.e.name()).map_err(|e| self.xml_error(e))?;
        }
        Ok(())
    }

    /// The text content of a leaf element, unescaped and trimmed.
    fn text(&mut self, o: &Open<'i>) -> Result<String, DocError> {
        if o.empty {
            return Ok(String::new());
        }
        let raw = self.r.read_text(o.e.name()).map_err(|e| self.xml_error(e))?.into_inner();
        let text = unescape(&raw).map_err(|e| self.error(self.r.buffer_position(), e.to_string()))?;
        Ok(text.trim().to_owned())
    }

    fn signature(&mut self, o: &Open<'i>) -> Result<SignatureValue, DocError> {
        let algorithm = match attr(&o.e, "algorithm")? {
            Some(name) => Some(algorithm_from_name(&name).ok_or(DocError::UnknownSignatureAlgorithm(name))?),
            None => None,
        };
        let element = o.local().to_owned();
        let bytes = base64(&element, &self.text(o)?)?;
        Ok(SignatureValue { algorithm, bytes })
    }

    fn configuration(&mut self, o: &Open<'i>) -> Result<ParsedConfiguration, DocError> {
        let missing = |attribute| DocError::MissingAttribute { element: "configuration", attribute };
        let name = attr(&o.e, "instance-name")?.ok_or(missing("instance-name"))?;
        let sequence = number("configuration sequence", &attr(&o.e, "sequence")?.ok_or(missing("sequence"))?)?;
        let mut b = ConfigBuilder::new(name, sequence);
        if !o.empty {
            while let Some(c) = self.child()? {
                self.config_child(&mut b, &c)?;
            }
        }
        b.finish()
    }

    fn config_child(&mut self, b: &mut ConfigBuilder, c: &Open<'i>) -> Result<(), DocError> {
        let d = &mut b.doc;
        match (c.ns, c.local()) {
            (Ns::Base, "topology-plugin") => {
                let t = self.text(c)?;
                if t != CHORD_RELOAD {
                    return Err(DocError::UnsupportedTopology(t));
                }
                d.topology = t;
            }
            (Ns::Base, "node-id-length") => {
                let n = number("node-id-length", &self.text(c)?)?;
                if n != NODE_ID_LENGTH {
                    return Err(DocError::UnsupportedNodeIdLength(n));
                }
            }
            (Ns::Base, "root-cert") => d.root_certs.push(base64("root-cert", &self.text(c)?)?),
            (Ns::Base, "enrollment-server") => {
                let url = self.text(c)?;
                d.enrollment_server.get_or_insert(url);
            }
            (Ns::Base, "self-signed-permitted") => {
                d.self_signed_permitted = boolean("self-signed-permitted", &self.text(c)?)?
            }
            (Ns::Base, "bootstrap-node") => {
                d.bootstrap.push(bootstrap_node(&c.e)?);
                self.skip(c)?;
            }
            (Ns::Base, "clients-permitted") => d.clients_permitted = boolean("clients-permitted", &self.text(c)?)?,
            (Ns::Base, "no-ice") => d.no_ice = boolean("no-ice", &self.text(c)?)?,
            (Ns::Base, "max-message-size") => d.max_message_size = number("max-message-size", &self.text(c)?)?,
            (Ns::Base, "initial-ttl") => d.initial_ttl = number("initial-ttl", &self.text(c)?)?,
            (Ns::Base, "overlay-link-protocol") => b.protocols.push(self.text(c)?),
            (Ns::Base, "mandatory-extension") => {
                let ns = self.text(c)?;
                if ![NS_BASE, NS_CHORD, NS_CHORDPHONE].contains(&ns.as_str()) {
                    return Err(DocError::UnsupportedExtension(ns));
                }
            }
            (Ns::Base, "required-kinds") if !c.empty => {
                while let Some(block) = self.child()? {
                    if block.ns == Ns::Base && block.local() == "kind-block" {
                        let kind = self.kind_block(&block)?;
                        b.kinds.push(kind);
                    } else {
                        self.skip(&block)?;
                    }
                }
            }
            (Ns::Chord, "chord-update-interval") => {
                d.chord_update_interval_s = number("chord-update-interval", &self.text(c)?)?
            }
            (Ns::Chord, "chord-ping-interval") => {
                d.chord_ping_interval_s = number("chord-ping-interval", &self.text(c)?)?
            }
            (Ns::Chord, "chord-reactive") => d.chord_reactive = boolean("chord-reactive", &self.text(c)?)?,
            (Ns::Chordphone, "overlay-link-type") => b.link_types.push(LinkType::parse(&self.text(c)?)),
            // §11.1: foreign elements, and base elements chordphone has no use for.
            _ => self.skip(c)?,
        }
        Ok(())
    }

    fn kind_block(&mut self, o: &Open<'i>) -> Result<(KindPolicy, SignedKind), DocError> {
        let mut kind = None;
        let mut signature = None;
        if !o.empty {
            while let Some(c) = self.child()? {
                match (c.ns, c.local()) {
                    (Ns::Base, "kind") if kind.is_none() => kind = Some(self.kind(&c)?),
                    (Ns::Base, "kind") => return Err(DocError::Structure("<kind-block> holds two <kind>s".into())),
                    (Ns::Base, "kind-signature") => signature = Some(self.signature(&c)?),
                    _ => self.skip(&c)?,
                }
            }
        }
        let (policy, text) = kind.ok_or(DocError::Missing("kind"))?;
        let label = kind_label(policy.kind);
        Ok((policy, SignedKind { label, text, signature }))
    }

    /// A `<kind>` element and its literal text.
    fn kind(&mut self, o: &Open<'i>) -> Result<(KindPolicy, String), DocError> {
        let kind = kind_id(&o.e)?;
        let (mut model, mut access, mut max_count, mut max_size, mut max_node_multiple) =
            (None, None, None, None, None);
        if !o.empty {
            while let Some(c) = self.child()? {
                match (c.ns, c.local()) {
                    (Ns::Base, "data-model") => model = Some(parse_data_model(&self.text(&c)?)?),
                    (Ns::Base, "access-control") => access = Some(parse_access_policy(&self.text(&c)?)?),
                    (Ns::Base, "max-count") => max_count = Some(number("max-count", &self.text(&c)?)?),
                    (Ns::Base, "max-size") => max_size = Some(number("max-size", &self.text(&c)?)?),
                    (Ns::Base, "max-node-multiple") => {
                        max_node_multiple = Some(number("max-node-multiple", &self.text(&c)?)?)
                    }
                    _ => self.skip(&c)?,
                }
            }
        }
        let text = self.src.get(o.at..self.pos()).unwrap_or_default().to_owned();
        let missing = |element| DocError::KindMissing { kind: kind_label(kind), element };
        let access = access.ok_or_else(|| missing("access-control"))?;
        // §11.1: max-node-multiple is what bounds a NODE-MULTIPLE kind.
        let max_node_multiple = match max_node_multiple {
            None if access == AccessPolicy::NodeMultiple => return Err(missing("max-node-multiple")),
            v => v.unwrap_or(DEFAULT_MAX_NODE_MULTIPLE),
        };
        let policy = KindPolicy {
            kind,
            model: model.ok_or_else(|| missing("data-model"))?,
            access,
            max_count: max_count.ok_or_else(|| missing("max-count"))?,
            max_size: max_size.ok_or_else(|| missing("max-size"))?,
            max_node_multiple,
        };
        Ok((policy, text))
    }
}

/// A configuration being read, starting from §11.1's defaults.
struct ConfigBuilder {
    doc: OverlayDocument,
    protocols: Vec<String>,
    link_types: Vec<LinkType>,
    kinds: Vec<(KindPolicy, SignedKind)>,
}

impl ConfigBuilder {
    fn new(name: String, sequence: u16) -> Self {
        let doc = OverlayDocument {
            name,
            sequence,
            topology: CHORD_RELOAD.to_owned(),
            node_id_length: NODE_ID_LENGTH,
            root_certs: Vec::new(),
            enrollment_server: None,
            bootstrap: Vec::new(),
            max_message_size: 5000,
            initial_ttl: 100,
            link_types: Vec::new(),
            clients_permitted: true,
            self_signed_permitted: false,
            no_ice: false,
            chord_update_interval_s: 600,
            chord_ping_interval_s: 3600,
            chord_reactive: true,
            kinds: Vec::new(),
        };
        ConfigBuilder { doc, protocols: Vec::new(), link_types: Vec::new(), kinds: Vec::new() }
    }

    fn finish(self) -> Result<ParsedConfiguration, DocError> {
        let mut doc = self.doc;
        if doc.root_certs.is_empty() {
            return Err(DocError::Missing("root-cert"));
        }
        // §11.1: no overlay-link-protocol means "TLS", i.e. TLS and DTLS.
        let tls = self.protocols.is_empty() || self.protocols.iter().any(|p| p.eq_ignore_ascii_case("TLS"));
        doc.link_types = if !self.link_types.is_empty() {
            self.link_types
        } else if !tls {
            return Err(DocError::NoLinkType);
        } else if doc.no_ice {
            vec![LinkType::TlsTcpFhNoIce, LinkType::DtlsUdpSrNoIce]
        } else {
            vec![LinkType::DtlsUdpSr]
        };
        let (policies, kinds): (Vec<_>, Vec<_>) = self.kinds.into_iter().unzip();
        check_unique_kinds(&policies)?;
        doc.kinds = policies;
        Ok(ParsedConfiguration { doc, kinds })
    }
}

impl SignatureValue {
    /// Whether this signature by the key in `spki` covers `data`.
    fn verifies(&self, spki: &[u8], data: &[u8]) -> Result<bool, DocError> {
        let key_alg = KeyAlgorithm::of_spki(spki).map_err(|e| DocError::BadRootCert(e.to_string()))?;
        if self.algorithm.is_some_and(|a| a != key_alg) {
            return Ok(false);
        }
        Ok(crate::security::verify(key_alg.signature_algorithm(), spki, data, &self.bytes).is_ok())
    }
}

fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, DocError> {
    for a in e.attributes() {
        let a = a.map_err(|e| DocError::Structure(format!("bad attribute: {e}")))?;
        if a.key.as_ref() == name {
            let v = a.normalized_value(XmlVersion::Implicit1_0).map_err(|e| DocError::Structure(e.to_string()))?;
            return Ok(Some(v.trim().to_owned()));
        }
    }
    Ok(None)
}

fn bootstrap_node(e: &BytesStart<'_>) -> Result<SocketAddr, DocError> {
    let address =
        attr(e, "address")?.ok_or(DocError::MissingAttribute { element: "bootstrap-node", attribute: "address" })?;
    let literal = address.trim_start_matches('[').trim_end_matches(']');
    let ip = IpAddr::from_str(literal).map_err(|_| DocError::BadValue {
        element: "bootstrap-node".into(),
        value: address.clone(),
        reason: "address is not an IP address".into(),
    })?;
    let port = match attr(e, "port")? {
        Some(p) => number("bootstrap-node port", &p)?,
        None => DEFAULT_BOOTSTRAP_PORT,
    };
    Ok(SocketAddr::new(ip, port))
}

fn kind_id(e: &BytesStart<'_>) -> Result<KindId, DocError> {
    if let Some(name) = attr(e, "name")? {
        let known =
            [KindId::SIP_REGISTRATION, KindId::TURN_SERVICE, KindId::CERTIFICATE_BY_NODE, KindId::CERTIFICATE_BY_USER];
        return known.into_iter().find(|k| k.name() == Some(name.as_str())).ok_or(DocError::UnknownKindName(name));
    }
    match attr(e, "id")? {
        Some(id) => Ok(KindId(number("kind id", &id)?)),
        None => Err(DocError::MissingAttribute { element: "kind", attribute: "name or id" }),
    }
}

fn kind_label(kind: KindId) -> String {
    kind.name().map_or_else(|| kind.0.to_string(), str::to_owned)
}

fn check_unique_kinds(kinds: &[KindPolicy]) -> Result<(), DocError> {
    let mut seen = std::collections::BTreeSet::new();
    match kinds.iter().find(|k| !seen.insert(k.kind)) {
        Some(dup) => Err(DocError::DuplicateKind(kind_label(dup.kind))),
        None => Ok(()),
    }
}

fn number<T: FromStr>(element: &str, text: &str) -> Result<T, DocError>
where
    T::Err: fmt::Display,
{
    text.trim().parse().map_err(|e: T::Err| DocError::BadValue {
        element: element.to_owned(),
        value: text.to_owned(),
        reason: e.to_string(),
    })
}

/// `xsd:boolean`.
fn boolean(element: &str, text: &str) -> Result<bool, DocError> {
    match text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(DocError::BadValue {
            element: element.to_owned(),
            value: other.to_owned(),
            reason: "not a boolean".into(),
        }),
    }
}

/// `xsd:base64Binary`, which may be broken across lines.
fn base64(element: &str, text: &str) -> Result<Vec<u8>, DocError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64.decode(compact.as_bytes()).map_err(|e| DocError::BadValue {
        element: element.to_owned(),
        value: abbreviate(text),
        reason: e.to_string(),
    })
}

fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", text.get(..i).unwrap_or_default()),
        None => text.to_owned(),
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>, DocError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| DocError::BadRootCert(e.to_string()))?;
    Ok(cert.public_key().raw.to_vec())
}

fn algorithm_name(a: KeyAlgorithm) -> &'static str {
    match a {
        KeyAlgorithm::RsaPkcs1Sha256 => "rsa-sha256",
        KeyAlgorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        KeyAlgorithm::Ed25519 => "ed25519",
    }
}

fn algorithm_from_name(name: &str) -> Option<KeyAlgorithm> {
    [KeyAlgorithm::RsaPkcs1Sha256, KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519]
        .into_iter()
        .find(|a| algorithm_name(*a) == name)
}

/// §11.1 `access-control-type`.
fn access_policy_name(p: AccessPolicy) -> &'static str {
    match p {
        AccessPolicy::UserMatch => "USER-MATCH",
        AccessPolicy::NodeMatch => "NODE-MATCH",
        AccessPolicy::UserNodeMatch => "USER-NODE-MATCH",
        AccessPolicy::NodeMultiple => "NODE-MULTIPLE",
    }
}

fn parse_access_policy(name: &str) -> Result<AccessPolicy, DocError> {
    [AccessPolicy::UserMatch, AccessPolicy::NodeMatch, AccessPolicy::UserNodeMatch, AccessPolicy::NodeMultiple]
        .into_iter()
        .find(|p| access_policy_name(*p) == name)
        .ok_or_else(|| DocError::UnknownAccessPolicy(name.to_owned()))
}

/// §11.1 `data-model-type`.
fn data_model_name(m: DataModel) -> &'static str {
    match m {
        DataModel::Single => "SINGLE",
        DataModel::Array => "ARRAY",
        DataModel::Dictionary => "DICTIONARY",
    }
}

fn parse_data_model(name: &str) -> Result<DataModel, DocError> {
    [DataModel::Single, DataModel::Array, DataModel::Dictionary]
        .into_iter()
        .find(|m| data_model_name(*m) == name)
        .ok_or_else(|| DocError::UnknownDataModel(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const OVERLAY: &str = "overlay.example.org";
    const T0: u64 = 1_700_000_000;
    const YEAR: u64 = 365 * 24 * 3600;

    fn ca(name: &str, alg: KeyAlgorithm) -> OverlayCa {
        OverlayCa::create(name, KeyPair::generate(alg).unwrap(), T0, T0 + YEAR).unwrap()
    }

    fn doc(ca: &OverlayCa) -> OverlayDocument {
        let mut d = OverlayDocument::new(
            OVERLAY,
            ca.cert_der().to_vec(),
            vec!["192.0.2.1:6084".parse().unwrap(), "[2001:db8::1]:7000".parse().unwrap()],
        );
        d.enrollment_server = Some("https://enroll.example.org/?a=1&b=<2>".into());
        d
    }

    fn span(xml: &str, open: &str, close: &str) -> std::ops::Range<usize> {
        let start = xml.find(open).unwrap();
        start..xml[start..].find(close).unwrap() + start + close.len()
    }

    /// Signs the configuration text again after a test edited it.
    fn resign(xml: &str, ca: &OverlayCa) -> String {
        let config = span(xml, "<configuration", "</configuration>");
        let sig = B64.encode(ca.key().sign(xml[config.clone()].as_bytes()).unwrap());
        let old = xml.rfind("<signature").unwrap()..xml.rfind("</signature>").unwrap() + "</signature>".len();
        assert!(old.start > config.end);
        let alg = algorithm_name(ca.key().algorithm());
        format!("{}<signature algorithm=\"{alg}\">{sig}</signature>{}", &xml[..old.start], &xml[old.end..])
    }

    /// Signs every kind and then the configuration again.
    fn resign_all(xml: &str, ca: &OverlayCa) -> String {
        let mut out = String::new();
        let mut rest = xml;
        while let Some(k) = rest.find("<kind ") {
            let kind = span(rest, "<kind ", "</kind>");
            let sig = span(rest, "<kind-signature", "</kind-signature>");
            assert!(sig.start > kind.end && k == kind.start);
            let value = B64.encode(ca.key().sign(rest[kind.clone()].as_bytes()).unwrap());
            out.push_str(&rest[..sig.start]);
            out.push_str(&format!("<kind-signature>{value}</kind-signature>"));
            rest = &rest[sig.end..];
        }
        out.push_str(rest);
        resign(&out, ca)
    }

    #[test]
    fn round_trip_for_each_ca_key_type() {
        for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256Sha256] {
            let ca = ca(OVERLAY, alg);
            let d = doc(&ca);
            let xml = d.sign(&ca).unwrap();
            assert_eq!(OverlayDocument::verify_signed(&xml, None).unwrap(), d);
            assert_eq!(OverlayDocument::verify_signed(&xml, Some(ca.cert_der())).unwrap(), d);
        }
    }

    #[test]
    fn document_layout_follows_section_11_1() {
        let ca = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let xml = doc(&ca).sign(&ca).unwrap();
        for needle in [
            r#"<overlay xmlns="urn:ietf:params:xml:ns:p2p:config-base" xmlns:chord="urn:ietf:params:xml:ns:p2p:config-chord""#,
            r#"<configuration instance-name="overlay.example.org" sequence="1">"#,
            "<topology-plugin>CHORD-RELOAD</topology-plugin>",
            "<node-id-length>16</node-id-length>",
            r#"<bootstrap-node address="2001:db8::1" port="7000"/>"#,
            "<enrollment-server>https://enroll.example.org/?a=1&amp;b=&lt;2&gt;</enrollment-server>",
            "<chord:chord-update-interval>60</chord:chord-update-interval>",
            "<overlay-link-protocol>TLS</overlay-link-protocol>",
            "<cp:overlay-link-type>TLS-TCP-FH-NO-ICE</cp:overlay-link-type>",
            r#"<kind name="SIP-REGISTRATION">"#,
            r#"<kind name="CERTIFICATE_BY_NODE">"#,
            r#"<kind id="4026531841">"#,
            "<access-control>USER-NODE-MATCH</access-control>",
            "<data-model>DICTIONARY</data-model>",
            "<max-node-multiple>20</max-node-multiple>",
            r#"<kind-signature algorithm="ed25519">"#,
            r#"</configuration>
  <signature algorithm="ed25519">"#,
        ] {
            assert!(xml.contains(needle), "missing {needle} in\n{xml}");
        }
        // Only the NODE-MULTIPLE kind (TURN-SERVICE) carries max-node-multiple.
        assert_eq!(xml.matches("<max-node-multiple>").count(), 1);
        assert_eq!(xml.matches("<kind-signature").count(), KindPolicy::standard().len());
    }

    #[test]
    fn any_change_inside_the_configuration_breaks_the_signature() {
        let ca = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let xml = doc(&ca).sign(&ca).unwrap();
        let edits = [
            ("<max-message-size>5000<", "<max-message-size>5001<"),
            ("<initial-ttl>100<", "<initial-ttl> 100<"),
            ("<no-ice>true</no-ice>", "<no-ice>false</no-ice>"),
            (r#"sequence="1""#, r#"sequence="2""#),
        ];
        for (from, to) in edits {
            assert!(xml.contains(from));
            let bad = xml.replacen(from, to, 1);
            let e = OverlayDocument::verify_signed(&bad, None).unwrap_err();
            assert!(matches!(e, DocError::BadSignature(ref n) if n == OVERLAY), "{from}: {e}");
            assert_eq!(e.to_string(), "signature of configuration 'overlay.example.org' does not verify");
        }
    }

    #[test]
    fn text_outside_the_configuration_may_change() {
        let ca = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let d = doc(&ca);
        let xml = d.sign(&ca).unwrap();
        let padded = xml.replacen("<configuration", "<!-- served by test -->\n\n  <configuration", 1).replacen(
            "<signature",
            "<ext:x xmlns:ext=\"urn:example\">y</ext:x><signature",
            1,
        );
        assert_eq!(OverlayDocument::verify_signed(&padded, Some(ca.cert_der())).unwrap(), d);
        // Rebinding the chord prefix outside the signed bytes changes nothing:
        // the configuration is read in a fixed namespace context.
        let rebound = xml.replacen(NS_CHORD, "urn:example:not-chord", 1);
        assert_ne!(rebound, xml);
        assert_eq!(OverlayDocument::verify_signed(&rebound, None).unwrap(), d);
    }

    #[test]
    fn foreign_elements_are_ignored() {
        let ca = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let d = doc(&ca);
        let xml = d.sign(&ca).unwrap();
        let extended = xml
            .replacen(
                "<no-ice>",
                "<ext:thing xmlns:ext=\"urn:example:ext\" ext:a=\"1\"><ext:deep>x</ext:deep></ext:thing>\
                 <turn-density>20</turn-density><bad-node>6ebc45d31a900c06</bad-node><no-ice>",
                1,
            )
            .replacen("<max-count>64</max-count>", "<max-count>64</max-count><o:k xmlns:o=\"urn:o\">1</o:k>", 1);
        let extended = resign_all(&extended, &ca);
        assert_eq!(OverlayDocument::verify_signed(&extended, Some(ca.cert_der())).unwrap(), d);
    }

    #[test]
    fn another_cas_document_is_refused_once_enrolled() {
        let ours = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let theirs = ca(OVERLAY, KeyAlgorithm::EcdsaP256Sha256);
        let xml = doc(&theirs).sign(&theirs).unwrap();
        // Self-consistent, so acceptable to a node with no root yet...
        assert!(OverlayDocument::verify_signed(&xml, None).is_ok());
        // ...but not to one enrolled with our CA.
        let e = OverlayDocument::verify_signed(&xml, Some(ours.cert_der())).unwrap_err();
        assert!(matches!(e, DocError::UntrustedRoot(_)), "{e}");
        // Naming our root beside theirs does not help: our key must sign.
        let mut both = doc(&ours);
        both.root_certs.push(theirs.cert_der().to_vec());
        let xml = both.sign(&theirs).unwrap();
        assert!(matches!(OverlayDocument::verify_signed(&xml, Some(ours.cert_der())), Err(DocError::BadSignature(_))));
        assert_eq!(OverlayDocument::verify_signed(&xml, None).unwrap(), both);
    }

    #[test]
    fn signer_must_be_a_root() {
        let ours = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let theirs = ca(OVERLAY, KeyAlgorithm::Ed25519);
        assert!(matches!(doc(&ours).sign(&theirs), Err(DocError::SignerNotRoot)));
    }

    #[test]
    fn missing_signature_is_refused() {
        let ca = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let xml = doc(&ca).sign(&ca).unwrap();
        let sig = xml.rfind("<signature").unwrap()..xml.rfind("</signature>").unwrap() + "</signature>".len();
        let unsigned = format!("{}{}", &xml[..sig.start], &xml[sig.end..]);
        let e = OverlayDocument::verify_signed(&unsigned, None).unwrap_err();
        assert_eq!(e.to_string(), "configuration 'overlay.example.org' has no <signature>");
        // A signature before the configuration is not its signature.
        let before = unsigned.replacen("<configuration", &format!("{}<configuration", &xml[sig.clone()]), 1);
        assert!(matches!(OverlayDocument::verify_signed(&before, None), Err(DocError::MissingSignature(_))));
    }

    #[test]
    fn kind_signatures_are_checked() {
        let ca = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let xml = doc(&ca).sign(&ca).unwrap();
        let ks = span(&xml, "<kind-signature", "</kind-signature>");
        let unsigned = resign(&format!("{}{}", &xml[..ks.start], &xml[ks.end..]), &ca);
        let e = OverlayDocument::verify_signed(&unsigned, None).unwrap_err();
        assert_eq!(e.to_string(), "kind 'SIP-REGISTRATION' has no <kind-signature>");
        // A kind edited after signing, with only the configuration re-signed.
        let edited = resign(&xml.replacen("<max-count>64</max-count>", "<max-count>65</max-count>", 1), &ca);
        let e = OverlayDocument::verify_signed(&edited, None).unwrap_err();
        assert_eq!(e.to_string(), "kind-signature of kind 'SIP-REGISTRATION' does not verify");
        // A kind signature by another key.
        let other = super::tests::ca(OVERLAY, KeyAlgorithm::Ed25519);
        let forged = resign(&resign_all(&xml, &other), &ca);
        assert!(matches!(OverlayDocument::verify_signed(&forged, None), Err(DocError::BadKindSignature(_))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases = [
            "",
            "not xml at all",
            "<overlay",
            "<overlay/>",
            "<overlay xmlns=\"urn:wrong\"><configuration/></overlay>",
            "<overlay xmlns=\"urn:ietf:params:xml:ns:p2p:config-base\"></overlay>",
            "<overlay xmlns=\"urn:ietf:params:xml:ns:p2p:config-base\"><configuration></overlay>",
            "<overlay xmlns=\"urn:ietf:params:xml:ns:p2p:config-base\"><configuration/></overlay>",
            "<overlay xmlns=\"urn:ietf:params:xml:ns:p2p:config-base\"><configuration instance-name=\"x\" \
             sequence=\"1\"><root-cert>AAAA</root-cert></configuration><signature>!!</signature></overlay>",
            "<overlay xmlns=\"urn:ietf:params:xml:ns:p2p:config-base\"><configuration instance-name=\"x\" \
             sequence=\"1\"><root-cert>AAAA</root-cert></configuration><signature>AAAA</signature></overlay>",
            "\u{feff}<?xml version=\"1.0\"?><!DOCTYPE x><overlay>&bogus;</overlay>",
        ];
        for xml in cases {
            assert!(OverlayDocument::verify_signed(xml, None).is_err(), "{xml}");
        }
        let ca = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let xml = doc(&ca).sign(&ca).unwrap();
        for cut in (0..xml.len()).filter(|i| xml.is_char_boundary(*i)) {
            assert!(OverlayDocument::verify_signed(&xml[..cut], None).is_err(), "truncated at {cut}");
        }
    }

    fn config(body: &str) -> Result<ParsedConfiguration, DocError> {
        let text = format!(
            "<configuration instance-name=\"x\" sequence=\"7\"><root-cert>AAAA</root-cert>{body}</configuration>"
        );
        parse_configuration(&text, 0)
    }

    #[test]
    fn absent_elements_take_section_11_1_defaults() {
        let d = config("").unwrap().doc;
        assert_eq!((d.name.as_str(), d.sequence), ("x", 7));
        assert_eq!(d.root_certs, vec![vec![0u8, 0, 0]]);
        assert_eq!((d.max_message_size, d.initial_ttl, d.no_ice, d.clients_permitted), (5000, 100, false, true));
        assert_eq!((d.chord_update_interval_s, d.chord_ping_interval_s, d.chord_reactive), (600, 3600, true));
        assert_eq!(d.link_types, vec![LinkType::DtlsUdpSr]);
        assert!(d.kinds.is_empty() && d.bootstrap.is_empty());
        let d = config("<no-ice>1</no-ice><bootstrap-node address=\"192.0.2.9\"/>").unwrap().doc;
        assert_eq!(d.link_types, vec![LinkType::TlsTcpFhNoIce, LinkType::DtlsUdpSrNoIce]);
        assert_eq!(d.bootstrap, vec!["192.0.2.9:6084".parse().unwrap()]);
        let d = config("<cp:overlay-link-type>QUIC</cp:overlay-link-type>").unwrap().doc;
        assert_eq!(d.link_types, vec![LinkType::Other("QUIC".into())]);
    }

    #[test]
    fn invalid_configurations_name_the_problem() {
        let kind = |body: &str| {
            format!("<required-kinds><kind-block><kind id=\"9\">{body}</kind></kind-block></required-kinds>")
        };
        let full = "<data-model>SINGLE</data-model><max-count>1</max-count><max-size>9</max-size>";
        let cases = [
            (kind(&format!("{full}<access-control>FOO</access-control>")), "unknown access policy 'FOO'"),
            (
                kind(&format!("{full}<access-control>NODE-MULTIPLE</access-control>")),
                "kind '9': missing element <max-node-multiple>",
            ),
            (
                kind("<access-control>NODE-MATCH</access-control><max-count>1</max-count><max-size>9</max-size>"),
                "kind '9': missing element <data-model>",
            ),
            (
                kind(&format!("{full}<access-control>NODE-MATCH</access-control>")).replace("SINGLE", "TREE"),
                "unknown data model 'TREE'",
            ),
            (
                format!(
                    "<required-kinds><kind-block><kind name=\"SIP-REGISTRATION\">{full}<access-control>USER-MATCH</access-control></kind></kind-block><kind-block><kind id=\"1\">{full}<access-control>USER-MATCH</access-control></kind></kind-block></required-kinds>"
                ),
                "kind 'SIP-REGISTRATION' is defined twice",
            ),
            (
                "<required-kinds><kind-block><kind name=\"NOPE\"/></kind-block></required-kinds>".into(),
                "unknown kind name 'NOPE'",
            ),
            ("<required-kinds><kind-block/></required-kinds>".into(), "missing element <kind>"),
            (
                "<topology-plugin>PASTRY</topology-plugin>".into(),
                "unsupported topology-plugin 'PASTRY' (only CHORD-RELOAD)",
            ),
            ("<node-id-length>20</node-id-length>".into(), "unsupported node-id-length 20 (only 16)"),
            (
                "<initial-ttl>300</initial-ttl>".into(),
                "invalid value '300' in <initial-ttl>: number too large to fit in target type",
            ),
            ("<no-ice>maybe</no-ice>".into(), "invalid value 'maybe' in <no-ice>: not a boolean"),
            (
                "<bootstrap-node address=\"boot.example.org\"/>".into(),
                "invalid value 'boot.example.org' in <bootstrap-node>: address is not an IP address",
            ),
            ("<bootstrap-node port=\"1\"/>".into(), "element <bootstrap-node> lacks attribute 'address'"),
            (
                "<mandatory-extension>urn:example:x</mandatory-extension>".into(),
                "mandatory extension 'urn:example:x' is not supported",
            ),
            (
                "<overlay-link-protocol>SCTP</overlay-link-protocol>".into(),
                "no overlay link protocol this node speaks (TLS/DTLS)",
            ),
        ];
        for (body, message) in cases {
            match config(&body) {
                Err(e) => assert_eq!(e.to_string(), message, "{body}"),
                Ok(_) => panic!("accepted {body}"),
            }
        }
        let no_root = parse_configuration("<configuration instance-name=\"x\" sequence=\"1\"/>", 0);
        assert_eq!(no_root.err().unwrap().to_string(), "missing element <root-cert>");
        let no_seq = parse_configuration("<configuration instance-name=\"x\"/>", 0);
        assert_eq!(no_seq.err().unwrap().to_string(), "element <configuration> lacks attribute 'sequence'");
    }

    #[test]
    fn policy_and_model_names() {
        let table = [
            ("USER-MATCH", AccessPolicy::UserMatch),
            ("NODE-MATCH", AccessPolicy::NodeMatch),
            ("USER-NODE-MATCH", AccessPolicy::UserNodeMatch),
            ("NODE-MULTIPLE", AccessPolicy::NodeMultiple),
        ];
        for (name, policy) in table {
            assert_eq!(access_policy_name(policy), name);
            assert_eq!(parse_access_policy(name).unwrap(), policy);
        }
        for bad in ["", "user-match", "USER_MATCH", "NODE-MULTIPLE ", "FOO"] {
            assert!(matches!(parse_access_policy(bad), Err(DocError::UnknownAccessPolicy(n)) if n == bad));
        }
        for (name, model) in
            [("SINGLE", DataModel::Single), ("ARRAY", DataModel::Array), ("DICTIONARY", DataModel::Dictionary)]
        {
            assert_eq!(parse_data_model(data_model_name(model)).unwrap(), model);
            assert_eq!(data_model_name(model), name);
        }
        for link in ["TLS-TCP-FH-NO-ICE", "DTLS-UDP-SR-NO-ICE", "DTLS-UDP-SR", "OTHER"] {
            assert_eq!(LinkType::parse(link).as_str(), link);
        }
        assert_eq!(LinkType::parse("DTLS-UDP-SR"), LinkType::DtlsUdpSr);
    }

    #[test]
    fn maps_onto_the_overlay_config() {
        let ca = ca(OVERLAY, KeyAlgorithm::Ed25519);
        let mut d = doc(&ca);
        d.sequence = 9;
        d.chord_update_interval_s = 600;
        d.chord_ping_interval_s = 30;
        d.max_message_size = 4000;
        d.initial_ttl = 30;
        d.kinds.truncate(2);
        let c = d.to_overlay_config();
        assert_eq!((c.overlay_name.as_str(), c.configuration_sequence), (OVERLAY, 9));
        assert_eq!((c.update_interval, c.finger_interval), (Duration::from_secs(600), Duration::from_secs(30)));
        assert_eq!((c.max_message_size, c.initial_ttl), (4000, 30));
        assert_eq!(c.kinds, d.kinds);
        let def = OverlayConfig::default();
        assert_eq!((c.neighbors, c.replicas, c.client), (def.neighbors, def.replicas, def.client));
        // new() agrees with the machine's defaults.
        let n = OverlayDocument::new(OVERLAY, vec![1], vec![]).to_overlay_config();
        assert_eq!(
            (n.update_interval, n.finger_interval, n.initial_ttl),
            (def.update_interval, def.finger_interval, def.initial_ttl)
        );
        assert_eq!((n.max_message_size, n.kinds), (def.max_message_size, def.kinds));
    }

    fn arb_kind() -> impl Strategy<Value = KindPolicy> {
        let access = prop_oneof![
            Just(AccessPolicy::UserMatch),
            Just(AccessPolicy::NodeMatch),
            Just(AccessPolicy::UserNodeMatch),
            Just(AccessPolicy::NodeMultiple),
        ];
        let model = prop_oneof![Just(DataModel::Single), Just(DataModel::Array), Just(DataModel::Dictionary)];
        (any::<u32>(), model, access, any::<u32>(), any::<u32>(), prop_oneof![Just(20u32), any::<u32>()]).prop_map(
            |(kind, model, access, max_count, max_size, max_node_multiple)| KindPolicy {
                kind: KindId(kind),
                model,
                access,
                max_count,
                max_size,
                max_node_multiple,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn arbitrary_kinds_round_trip(kinds in proptest::collection::btree_map(any::<u32>(), arb_kind(), 0..6),
                                      sequence in any::<u16>(), name in "[a-z][a-z0-9.\"&<-]{0,20}") {
            let ca = ca(OVERLAY, KeyAlgorithm::Ed25519);
            let mut d = doc(&ca);
            d.name = name;
            d.sequence = sequence;
            d.kinds = kinds.into_iter().map(|(id, k)| KindPolicy { kind: KindId(id), ..k }).collect();
            let xml = d.sign(&ca).unwrap();
            prop_assert_eq!(OverlayDocument::verify_signed(&xml, Some(ca.cert_der())).unwrap(), d);
        }

        #[test]
        fn arbitrary_text_does_not_panic(s in ".{0,200}") {
            let _ = OverlayDocument::verify_signed(&s, None);
            let wrapped = format!("<overlay xmlns=\"{NS_BASE}\"><configuration instance-name=\"x\" sequence=\"1\">{s}</configuration><signature>AA==</signature></overlay>");
            prop_assert!(OverlayDocument::verify_signed(&wrapped, None).is_err());
        }
    }
}
