//! Local node settings (`node.toml` in the data directory) and the files a
//! node keeps there.
//!
//! What the whole overlay must agree on lives in the signed overlay
//! document (RFC 6940 §11.1, [`super::overlay_doc`]); this file holds what
//! each operator chooses for their own node: addresses, client mode, the
//! link type among those the overlay permits, queue sizes, logging and
//! the SIP edge.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::overlay_doc::LinkType;

/// RELOAD's IANA-registered port (RFC 6940 §14.2).
pub const RELOAD_PORT: u16 = 6084;
/// SIP's registered port (RFC 3261 §19.1.2).
pub const SIP_PORT: u16 = 5060;
/// SIP over TLS's registered port (RFC 3261 §19.1.2, §26.2).
pub const SIPS_PORT: u16 = 5061;

/// Link types the runtime can open (§6.6.1): the ones without ICE.
const SUPPORTED_LINKS: [&str; 2] = ["TLS-TCP-FH-NO-ICE", "DTLS-UDP-SR-NO-ICE"];

/// The files of one node's data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePaths {
    pub data_dir: PathBuf,
}

impl NodePaths {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodePaths { data_dir: data_dir.into() }
    }

    /// The signed overlay configuration document (§11.1).
    pub fn overlay_xml(&self) -> PathBuf {
        self.data_dir.join("overlay.xml")
    }

    /// The node's database (identity, stored data, peer cache).
    pub fn db(&self) -> PathBuf {
        self.data_dir.join("node.db")
    }

    /// The local settings, [`LocalSettings`].
    pub fn settings(&self) -> PathBuf {
        self.data_dir.join("node.toml")
    }

    /// The control socket the CLI talks to a running node through.
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
}

/// This node's own settings. Every key is optional: an empty file (or no
/// file) gives [`LocalSettings::default`]. Optional addresses take the
/// string `"off"` for "none".
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalSettings {
    /// Where overlay links are accepted.
    pub listen: SocketAddr,
    /// The address peers should dial when `listen` is a wildcard.
    #[serde(with = "optional_addr")]
    pub advertise: Option<SocketAddr>,
    /// Join as a client that neither routes nor stores (§4.2).
    pub client: bool,
    /// "TLS-TCP-FH-NO-ICE" or "DTLS-UDP-SR-NO-ICE"; by default the first
    /// link type the overlay document lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Where the HTTP metrics endpoint listens, if anywhere.
    #[serde(with = "optional_addr")]
    pub metrics_listen: Option<SocketAddr>,
    /// Peers remembered for the next bootstrap (§11.4).
    pub host_cache_size: usize,
    /// A tracing filter, e.g. "info" or "chordphone=debug".
    pub log: String,
    /// Bound of the runtime's internal queues.
    pub queue_depth: usize,
    pub sip: SipSettings,
    pub dataplane: super::dataplane::DataPlaneSettings,
}

/// The SIP edge: where local phones register and send calls.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSettings {
    #[serde(with = "optional_addr")]
    pub udp: Option<SocketAddr>,
    #[serde(with = "optional_addr")]
    pub tcp: Option<SocketAddr>,
    /// SIP over TLS for phones (RFC 3261 §26.2.1, RFC 5630 §3).
    #[serde(with = "optional_addr")]
    pub tls: Option<SocketAddr>,
    /// The PEM certificate (chain, leaf first) the TLS listener shows;
    /// relative to the data directory. Without it (and `tls_key`) the node's
    /// overlay certificate is shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Where other chordphone nodes reach this node's SIP (SIP over TLS with
    /// node certificates, offered through AppAttach 5060, RFC 7904 §4).
    #[serde(with = "optional_addr")]
    pub node_tls: Option<SocketAddr>,
    /// The domain this node registers AORs for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The digest authentication realm (defaults to the domain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// Offer the MD5 digest challenge before SHA-256 (for clients that only
    /// read the first challenge and only know MD5, e.g. sipp).
    #[serde(default)]
    pub md5_first: bool,
    /// Offer only MD5 (for clients such as baresip 1.0 that refuse a 401
    /// carrying an algorithm they do not know).
    #[serde(default)]
    pub md5_only: bool,
    /// Seconds a fetched AOR's serving nodes are reused before the overlay
    /// is asked again (forgotten at the first failure); 0 disables.
    #[serde(default = "default_location_cache_s")]
    pub location_cache_s: u32,
}

fn default_location_cache_s() -> u32 {
    5
}

/// Why the settings could not be read.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Not TOML, an unknown key or a value of the wrong type; the message
    /// from `toml` names the line, column and key.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// Well-formed but unusable.
    #[error("{file}: key `{key}`: {message}")]
    Invalid { file: String, key: &'static str, message: String },
    #[error("cannot write settings: {0}")]
    Write(String),
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), RELOAD_PORT),
            advertise: None,
            client: false,
            link: None,
            metrics_listen: None,
            host_cache_size: 64,
            log: "info".into(),
            queue_depth: 1024,
            sip: SipSettings::default(),
            dataplane: Default::default(),
        }
    }
}

impl Default for SipSettings {
    fn default() -> Self {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), SIP_PORT);
        let tls = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), SIPS_PORT);
        let node_tls = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), SIP_PORT + 2);
        SipSettings {
            udp: Some(any),
            tcp: Some(any),
            tls: Some(tls),
            tls_cert: None,
            tls_key: None,
            node_tls: Some(node_tls),
            domain: None,
            realm: None,
            md5_first: false,
            md5_only: false,
            location_cache_s: default_location_cache_s(),
        }
    }
}

impl LocalSettings {
    /// Reads `node.toml` from the data directory; no file means defaults.
    pub fn load(paths: &NodePaths) -> Result<LocalSettings, ConfigError> {
        let path = paths.settings();
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LocalSettings::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Reads settings from TOML text.
    pub fn from_toml_str(text: &str) -> Result<LocalSettings, ConfigError> {
        Self::parse(text, "node.toml")
    }

    /// The settings as TOML, as [`LocalSettings::load`] reads them back.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Write(e.to_string()))
    }

    /// The link type to use among those the overlay document permits:
    /// the configured one, else the overlay's first.
    pub fn link_type(&self, overlay_links: &[LinkType]) -> Result<LinkType, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { file: "node.toml".into(), key: "link", message };
        match &self.link {
            Some(name) => {
                let wanted = LinkType::parse(name);
                if overlay_links.contains(&wanted) {
                    Ok(wanted)
                } else {
                    Err(invalid(format!("the overlay does not permit link type {name}")))
                }
            }
            None => overlay_links.first().cloned().ok_or_else(|| invalid("the overlay lists no link type".into())),
        }
    }

    fn parse(text: &str, file: &str) -> Result<LocalSettings, ConfigError> {
        let settings: LocalSettings =
            toml::from_str(text).map_err(|e| ConfigError::Parse { file: file.to_owned(), message: e.to_string() })?;
        settings.validate(file)?;
        Ok(settings)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { file: file.to_owned(), key, message };
        if let Some(link) = &self.link
            && !SUPPORTED_LINKS.contains(&link.as_str())
        {
            return Err(invalid("link", format!("unknown link type {link:?}, expected one of {SUPPORTED_LINKS:?}")));
        }
        if self.queue_depth == 0 {
            return Err(invalid("queue_depth", "must be at least 1".into()));
        }
        if let Some((key, message)) = self.dataplane.problem() {
            return Err(invalid(key, message));
        }
        match (&self.sip.tls_cert, &self.sip.tls_key) {
            (Some(_), None) => Err(invalid("tls_key", "missing: tls_cert needs its private key".into())),
            (None, Some(_)) => Err(invalid("tls_cert", "missing: tls_key needs its certificate".into())),
            _ => Ok(()),
        }
    }
}

/// A commented `node.toml` showing every key with its default.
pub fn example_toml() -> String {
    let d = LocalSettings::default();
    let s = &d.sip;
    let addr = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    format!(
        r#"# chordphone node settings: node.toml in the node's data directory.
# Every key is optional; the commented values are the defaults.
# Optional addresses take "off" for none.

# Where overlay links are accepted (6084 is RELOAD's registered port).
# listen = "{listen}"
# The address peers should dial when listen is a wildcard, e.g. "203.0.113.7:6084".
# advertise = "off"
# Join as a client that neither routes nor stores data (RFC 6940 §4.2).
# client = {client}
# "TLS-TCP-FH-NO-ICE" or "DTLS-UDP-SR-NO-ICE"; by default the overlay's first.
# link = "TLS-TCP-FH-NO-ICE"
# Where the HTTP metrics endpoint listens, e.g. "127.0.0.1:9184".
# metrics_listen = "off"
# Peers remembered for the next bootstrap.
# host_cache_size = {host_cache_size}
# Log filter, e.g. "info" or "chordphone=debug".
# log = "{log}"
# Bound of the runtime's internal queues.
# queue_depth = {queue_depth}

[sip]
# Where local phones reach the SIP edge.
# udp = "{udp}"
# tcp = "{tcp}"
# SIP over TLS (5061 is its registered port).
# tls = "{tls}"
# The certificate and key (PEM, relative to the data directory) shown to
# TLS phones, e.g. Let's Encrypt's for the SIP domain. Without them the
# node's overlay certificate is shown: phones must then trust the overlay
# root (ca.der of the overlay directory) and not check the host name.
# tls_cert = "/etc/letsencrypt/live/example.org/fullchain.pem"
# tls_key = "/etc/letsencrypt/live/example.org/privkey.pem"
# The domain AORs are registered under, e.g. "example.org".
# domain = "example.org"
# Digest authentication realm; by default the domain.
# realm = "example.org"
# Seconds a callee's serving nodes, once fetched, are reused without a new
# overlay Fetch (forgotten at the first failure there); 0 disables.
# location_cache_s = {location_cache_s}

[dataplane]
# Worker threads forwarding UDP for `chordphone forward` entries, one
# socket each; 0 means one per CPU.
# workers = 0
# address = "0.0.0.0"
# Worker w binds port_base + w; 0 lets the OS pick.
# port_base = 0
"#,
        listen = d.listen,
        client = d.client,
        host_cache_size = d.host_cache_size,
        log = d.log,
        queue_depth = d.queue_depth,
        udp = addr(s.udp),
        tcp = addr(s.tcp),
        tls = addr(s.tls),
        location_cache_s = s.location_cache_s,
    )
}

/// `Option<SocketAddr>` as a string, `"off"` (or `""`) meaning `None`, so
/// that a default address can be switched off in TOML, which has no null.
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de};

    const OFF: &str = "off";

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(OFF),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        match text.trim() {
            "" | OFF => Ok(None),
            other => other.parse().map(Some).map_err(|e| {
                de::Error::custom(format!("invalid socket address {other:?} ({e}); use \"ip:port\" or \"off\""))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn paths_live_in_the_data_dir() {
        let p = NodePaths::new("/var/lib/chordphone");
        assert_eq!(p.overlay_xml(), Path::new("/var/lib/chordphone/overlay.xml"));
        assert_eq!(p.db(), Path::new("/var/lib/chordphone/node.db"));
        assert_eq!(p.settings(), Path::new("/var/lib/chordphone/node.toml"));
        assert_eq!(p.control_socket(), Path::new("/var/lib/chordphone/control.sock"));
    }

    #[test]
    fn empty_file_gives_defaults() {
        let s = LocalSettings::from_toml_str("").unwrap();
        assert_eq!(s, LocalSettings::default());
        assert_eq!(s.listen, "0.0.0.0:6084".parse().unwrap());
        assert_eq!(s.sip.udp, Some("0.0.0.0:5060".parse().unwrap()));
        assert_eq!(s.sip.location_cache_s, 5);
        assert_eq!(s.sip.tcp, Some("0.0.0.0:5060".parse().unwrap()));
        assert_eq!(s.sip.tls, Some("0.0.0.0:5061".parse().unwrap()));
        assert_eq!((s.sip.tls_cert.as_deref(), s.sip.tls_key.as_deref()), (None, None));
        assert_eq!((s.host_cache_size, s.queue_depth, s.log.as_str(), s.client), (64, 1024, "info", false));
    }

    #[test]
    fn values_and_off_are_read() {
        let s = LocalSettings::from_toml_str(
            "listen = \"[::]:7000\"\nadvertise = \"198.51.100.4:7000\"\nclient = true\nlink = \"DTLS-UDP-SR-NO-ICE\"\n\
             [sip]\nudp = \"off\"\ntcp = \"127.0.0.1:5070\"\ndomain = \"example.org\"\nlocation_cache_s = 0\n",
        )
        .unwrap();
        assert_eq!(s.listen, "[::]:7000".parse().unwrap());
        assert_eq!(s.advertise, Some("198.51.100.4:7000".parse().unwrap()));
        assert!(s.client);
        assert_eq!(s.sip.udp, None);
        assert_eq!(s.sip.tcp, Some("127.0.0.1:5070".parse().unwrap()));
        assert_eq!(s.sip.domain.as_deref(), Some("example.org"));
        assert_eq!(s.sip.location_cache_s, 0);
        assert_eq!(LocalSettings::from_toml_str(&s.to_toml().unwrap()).unwrap(), s);
    }

    #[test]
    fn tls_can_be_moved_given_a_certificate_or_switched_off() {
        let s = LocalSettings::from_toml_str(
            "[sip]\ntls = \"192.0.2.1:5071\"\ntls_cert = \"cert.pem\"\ntls_key = \"/etc/sip/key.pem\"\n",
        )
        .unwrap();
        assert_eq!(s.sip.tls, Some("192.0.2.1:5071".parse().unwrap()));
        assert_eq!(s.sip.tls_cert, Some(PathBuf::from("cert.pem")));
        assert_eq!(s.sip.tls_key, Some(PathBuf::from("/etc/sip/key.pem")));
        assert_eq!(LocalSettings::from_toml_str(&s.to_toml().unwrap()).unwrap(), s);
        assert_eq!(LocalSettings::from_toml_str("[sip]\ntls = \"off\"\n").unwrap().sip.tls, None);
        let e = LocalSettings::from_toml_str("[sip]\ntls_cert = \"cert.pem\"\n").unwrap_err().to_string();
        assert_eq!(e, "node.toml: key `tls_key`: missing: tls_cert needs its private key");
        let e = LocalSettings::from_toml_str("[sip]\ntls_key = \"key.pem\"\n").unwrap_err().to_string();
        assert_eq!(e, "node.toml: key `tls_cert`: missing: tls_key needs its certificate");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = LocalSettings::from_toml_str("log = \"debug\"\nlisten_port = 1\n").unwrap_err().to_string();
        assert!(e.contains("listen_port") && e.contains("line 2"), "{e}");
        let e = LocalSettings::from_toml_str("[sip]\nrelm = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("relm") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = LocalSettings::from_toml_str("listen = \"localhost\"\n").unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("line 1"), "{e}");
        let e = LocalSettings::from_toml_str("[sip]\nudp = \"1.2.3.4\"\n").unwrap_err().to_string();
        assert!(e.contains("udp") && e.contains("invalid socket address"), "{e}");
        let e = LocalSettings::from_toml_str("queue_depth = -1\n").unwrap_err().to_string();
        assert!(e.contains("queue_depth"), "{e}");
        let e = LocalSettings::from_toml_str("queue_depth = 0\n").unwrap_err().to_string();
        assert_eq!(e, "node.toml: key `queue_depth`: must be at least 1");
        let e = LocalSettings::from_toml_str("link = \"SCTP\"\n").unwrap_err().to_string();
        assert!(e.starts_with("node.toml: key `link`: unknown link type \"SCTP\""), "{e}");
    }

    #[test]
    fn example_parses_commented_and_uncommented() {
        let example = example_toml();
        assert_eq!(LocalSettings::from_toml_str(&example).unwrap(), LocalSettings::default());
        let uncommented: String = example
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let s = LocalSettings::from_toml_str(&uncommented).unwrap();
        let mut expected = LocalSettings { link: Some("TLS-TCP-FH-NO-ICE".into()), ..LocalSettings::default() };
        expected.sip.domain = Some("example.org".into());
        expected.sip.realm = Some("example.org".into());
        expected.sip.tls_cert = Some("/etc/letsencrypt/live/example.org/fullchain.pem".into());
        expected.sip.tls_key = Some("/etc/letsencrypt/live/example.org/privkey.pem".into());
        assert_eq!(s, expected);
    }

    #[test]
    fn load_reads_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let paths = NodePaths::new(dir.path());
        assert_eq!(LocalSettings::load(&paths).unwrap(), LocalSettings::default());
        fs::write(paths.settings(), "client = true\n").unwrap();
        assert!(LocalSettings::load(&paths).unwrap().client);
        fs::write(paths.settings(), "client = \"yes\"\n").unwrap();
        let e = LocalSettings::load(&paths).unwrap_err().to_string();
        assert!(e.starts_with(&paths.settings().display().to_string()) && e.contains("client"), "{e}");
        fs::remove_file(paths.settings()).unwrap();
        fs::create_dir(paths.settings()).unwrap();
        let e = LocalSettings::load(&paths).unwrap_err();
        assert!(matches!(e, ConfigError::Read { ref path, .. } if *path == paths.settings()), "{e}");
    }

    #[test]
    fn link_type_follows_the_overlay() {
        let overlay = [LinkType::DtlsUdpSrNoIce, LinkType::TlsTcpFhNoIce];
        let mut s = LocalSettings::default();
        assert_eq!(s.link_type(&overlay).unwrap(), LinkType::DtlsUdpSrNoIce);
        s.link = Some("TLS-TCP-FH-NO-ICE".into());
        assert_eq!(s.link_type(&overlay).unwrap(), LinkType::TlsTcpFhNoIce);
        assert!(s.link_type(&[LinkType::DtlsUdpSrNoIce]).is_err());
        assert!(LocalSettings::default().link_type(&[]).is_err());
    }
}
