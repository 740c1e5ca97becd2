//! The operator's commands (`chordphone overlay/enroll/node/status/store/
//! fetch/lookup`): argument definitions and what each does. `main.rs` only
//! dispatches here.

pub mod forward;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};

use crate::node::config::NodePaths;
use crate::node::control::{self, ControlRequest, ControlResponse};
use crate::node::runtime::{self, RunOptions};

/// Where a node keeps its state unless told otherwise (systemd's
/// `StateDirectory=chordphone`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/chordphone";

/// How long the CLI waits for a node to answer (a fetch may retransmit).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The node's data directory (identity, overlay.xml, node.toml, database).
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address for overlay links (default from node.toml, else 0.0.0.0:6084).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Join as a non-routing client (RFC 6940 §4.2): no listener, no routing, no storage for others.
    #[arg(long)]
    pub client: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StoreArgs {
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Lifetime of the value in seconds.
    #[arg(long, default_value_t = 3600)]
    pub lifetime: u32,
    pub name: String,
    pub value: String,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    pub name: String,
}

fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    Ok(rt.block_on(f))
}

/// `chordphone node`: runs until SIGTERM.
pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    if !args.data_dir.is_dir() {
        bail!("data directory {} does not exist: enroll first", args.data_dir.display());
    }
    block_on(runtime::run(RunOptions { data_dir: args.data_dir, listen: args.listen, client: args.client }))?
}

fn call(data_dir: &Path, req: ControlRequest) -> anyhow::Result<serde_json::Value> {
    call_with(data_dir, req, CALL_TIMEOUT)
}

fn call_with(data_dir: &Path, req: ControlRequest, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let socket = NodePaths { data_dir: data_dir.to_path_buf() }.control_socket();
    let answer: ControlResponse = block_on(control::call(&socket, &req, timeout))??;
    if answer.ok {
        Ok(answer.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(anyhow!(answer.error.unwrap_or_else(|| "the node refused the request".into())))
    }
}

/// `v[k]` without indexing (absent keys read as null).
fn field<'a>(v: &'a serde_json::Value, k: &str) -> &'a serde_json::Value {
    v.get(k).unwrap_or(&serde_json::Value::Null)
}

fn list(v: &serde_json::Value) -> String {
    match v.as_array() {
        Some(a) if a.is_empty() => "-".into(),
        Some(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string()))
            .collect::<Vec<_>>()
            .join(" "),
        None => v.to_string(),
    }
}

/// `chordphone status`.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let s = call(&args.data_dir, ControlRequest::Status)?;
    if args.json {
        println!("{s}");
        return Ok(());
    }
    println!("node         {}", field(&s, "node_id").as_str().unwrap_or("?"));
    println!("overlay      {}", field(&s, "overlay").as_str().unwrap_or("?"));
    println!(
        "state        {}{}",
        field(&s, "state").as_str().unwrap_or("?"),
        if field(&s, "client") == true { " (client)" } else { "" }
    );
    println!("uptime       {} s", field(&s, "uptime_s"));
    println!("successors   {}", list(field(&s, "successors")));
    println!("predecessors {}", list(field(&s, "predecessors")));
    println!("fingers      {}", list(field(&s, "fingers")));
    let links: Vec<String> = field(&s, "links")
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    format!(
                        "{}@{}",
                        field(l, "peer").as_str().unwrap_or("?"),
                        field(l, "remote").as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!("links        {}", if links.is_empty() { "-".into() } else { links.join(" ") });
    let records: Vec<String> = field(&s, "records_by_kind")
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    println!("records      {}", if records.is_empty() { "-".into() } else { records.join(" ") });
    Ok(())
}

/// `chordphone store`.
pub fn store(args: StoreArgs) -> anyhow::Result<()> {
    let r =
        call(&args.data_dir, ControlRequest::Store { name: args.name, value: args.value, lifetime_s: args.lifetime })?;
    println!("stored (generation {}, replicas {})", field(&r, "generation"), list(field(&r, "replicas")));
    Ok(())
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub name: NameArgs,
    /// What to fetch: `test` (the values `chordphone store` writes) or
    /// `sip-registration` (an AOR's RFC 7904 entries: which nodes serve it).
    #[arg(long, default_value = "test", value_parser = ["test", "sip-registration"])]
    pub kind: String,
}

/// `chordphone fetch`.
pub fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let FetchArgs { name: args, kind } = args;
    let kind = (kind != "test").then_some(kind);
    let r = call(&args.data_dir, ControlRequest::Fetch { name: args.name, kind })?;
    if args.json {
        println!("{r}");
    } else {
        for v in field(&r, "values").as_array().into_iter().flatten() {
            println!("{}", v.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct LookupArgs {
    #[command(flatten)]
    pub name: NameArgs,
    /// Run K lookups of NAME0, NAME1, … back to back inside the node and
    /// report their latency, measured in the node from issuing each
    /// overlay request to its answer (with --json: every sample).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=i64::from(control::MAX_LOOKUP_SERIES)))]
    pub repeat: Option<u32>,
}

/// Time allowed per lookup of a series on top of [`CALL_TIMEOUT`].
const SERIES_TIME_PER_LOOKUP: Duration = Duration::from_millis(100);

/// `chordphone lookup`.
pub fn lookup(args: LookupArgs) -> anyhow::Result<()> {
    let LookupArgs { name: args, repeat } = args;
    if let Some(count) = repeat {
        return lookup_series(args, count);
    }
    let r = call(&args.data_dir, ControlRequest::Lookup { name: args.name })?;
    if args.json {
        println!("{r}");
    } else {
        println!("responsible  {}", field(&r, "responsible").as_str().unwrap_or("?"));
        println!("hops         {}", field(&r, "hops"));
        println!("route        {}", list(field(&r, "route")));
        println!("elapsed      {} µs", field(&r, "elapsed_us"));
    }
    Ok(())
}

fn lookup_series(args: NameArgs, count: u32) -> anyhow::Result<()> {
    let timeout = CALL_TIMEOUT + SERIES_TIME_PER_LOOKUP * count;
    let r = call_with(&args.data_dir, ControlRequest::LookupSeries { prefix: args.name, count }, timeout)?;
    if args.json {
        println!("{r}");
        return Ok(());
    }
    let numbers = |k: &str| -> Vec<u64> {
        field(&r, k).as_array().map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect()).unwrap_or_default()
    };
    let mut us = numbers("elapsed_us");
    us.sort_unstable();
    let hops = numbers("hops");
    let mean = |v: &[u64]| if v.is_empty() { 0.0 } else { v.iter().sum::<u64>() as f64 / v.len() as f64 };
    println!("lookups      {} ({} failed)", field(&r, "count"), field(&r, "failed"));
    println!(
        "latency      p50 {} µs, p99 {} µs, max {} µs, mean {:.0} µs",
        percentile(&us, 50),
        percentile(&us, 99),
        us.last().copied().unwrap_or(0),
        mean(&us)
    );
    println!("hops         mean {:.2}", mean(&hops));
    Ok(())
}

/// The nearest-rank `p`th percentile of sorted samples (0 when empty).
fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or(0)
}

// ---- overlay administration and enrollment ----

use crate::node::db::{NodeDb, StoredIdentity};
use crate::node::enroll::{self, EnrollServerConfig, EnrollUsers, Enrollment};
use crate::overlay::document::OverlayDocument;
use crate::security::{KeyAlgorithm, KeyPair, OverlayCa};

/// Files of an overlay directory (kept by the overlay's operator).
struct OverlayDir(PathBuf);

impl OverlayDir {
    fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.der")
    }
    fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    fn document(&self) -> PathBuf {
        self.0.join("overlay.xml")
    }
    fn users(&self) -> PathBuf {
        self.0.join("enroll-users.toml")
    }

    fn load_ca(&self) -> anyhow::Result<(OverlayCa, OverlayDocument, String)> {
        let cert = std::fs::read(self.ca_cert()).with_context(|| {
            format!("cannot read {} (is {} an overlay directory?)", self.ca_cert().display(), self.0.display())
        })?;
        let key = std::fs::read(self.ca_key()).with_context(|| format!("cannot read {}", self.ca_key().display()))?;
        let xml = std::fs::read_to_string(self.document())
            .with_context(|| format!("cannot read {}", self.document().display()))?;
        let doc = OverlayDocument::verify_signed(&xml, Some(&cert))
            .map_err(|e| anyhow!("{} refused: {e}", self.document().display()))?;
        let ca = OverlayCa::from_parts(&doc.name, cert, &key).context("the overlay CA files do not match")?;
        Ok((ca, doc, xml))
    }
}

#[derive(Subcommand, Debug)]
pub enum OverlayCmd {
    /// Create an overlay: its CA and its signed configuration document (RFC 6940 §11.1).
    Init(OverlayInitArgs),
    /// Run the HTTPS enrollment server (RFC 6940 §11.3) for nodes that enroll remotely.
    Serve(OverlayServeArgs),
    /// Add (or change) an account allowed to enroll through the enrollment server.
    AddUser(OverlayAddUserArgs),
}

#[derive(Args, Debug)]
pub struct OverlayInitArgs {
    /// Overlay name (a DNS-style name, e.g. chordphone.example.org).
    #[arg(long)]
    pub name: String,
    /// Directory for the CA key, root certificate and overlay.xml (created; must not hold an overlay).
    #[arg(long)]
    pub dir: PathBuf,
    /// Bootstrap peers (HOST:PORT, an IP address), repeatable.
    #[arg(long = "bootstrap")]
    pub bootstrap: Vec<SocketAddr>,
    /// URL of the enrollment server, written into the configuration.
    #[arg(long)]
    pub enrollment_server: Option<String>,
    /// chord-update-interval in seconds (§10.7.2).
    #[arg(long, default_value_t = 60)]
    pub update_interval: u32,
    /// chord-ping-interval in seconds (finger refresh).
    #[arg(long, default_value_t = 60)]
    pub ping_interval: u32,
    /// Link types in order of preference (TLS-TCP-FH-NO-ICE, DTLS-UDP-SR-NO-ICE).
    #[arg(long = "link")]
    pub links: Vec<String>,
}

#[derive(Args, Debug)]
pub struct OverlayServeArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// Where to listen for HTTPS.
    #[arg(long, default_value = "0.0.0.0:6085")]
    pub listen: SocketAddr,
    /// Host name or IP address the server's certificate names (what clients put in the URL).
    #[arg(long)]
    pub host: Option<String>,
    /// Validity of issued certificates, in days.
    #[arg(long, default_value_t = 365)]
    pub validity_days: u64,
}

#[derive(Args, Debug)]
pub struct OverlayAddUserArgs {
    #[arg(long)]
    pub dir: PathBuf,
    pub username: String,
    #[arg(long)]
    pub password: String,
}

#[derive(Args, Debug)]
pub struct EnrollArgs {
    /// The overlay directory (enroll locally with the CA key).
    #[arg(long, conflicts_with = "server")]
    pub overlay: Option<PathBuf>,
    /// Enrollment server URL (https://HOST:PORT/enroll); needs --config, --username and --password.
    #[arg(long, requires_all = ["config", "username", "password"])]
    pub server: Option<String>,
    /// The overlay configuration document (obtained from the operator) when enrolling remotely.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    /// The new node's data directory.
    #[arg(long)]
    pub out: PathBuf,
    /// User name (rfc822Name) for the certificate, e.g. alice@example.org (local enrollment).
    #[arg(long)]
    pub user: Option<String>,
    /// Node key algorithm.
    #[arg(long, value_parser = ["ecdsa-p256", "ed25519", "rsa"], default_value = "ecdsa-p256")]
    pub key: String,
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()?;
    Ok(())
}

/// `chordphone overlay ...`.
pub fn overlay(cmd: OverlayCmd) -> anyhow::Result<()> {
    match cmd {
        OverlayCmd::Init(a) => overlay_init(a),
        OverlayCmd::Serve(a) => overlay_serve(a),
        OverlayCmd::AddUser(a) => {
            let dir = OverlayDir(a.dir);
            let path = dir.users();
            let mut users = if path.exists() { EnrollUsers::load(&path)? } else { EnrollUsers::new() };
            users.add(&a.username, &a.password)?;
            users.save(&path)?;
            println!("enrollment account '{}' saved in {}", a.username, path.display());
            Ok(())
        }
    }
}

fn overlay_init(a: OverlayInitArgs) -> anyhow::Result<()> {
    let dir = OverlayDir(a.dir.clone());
    if dir.ca_key().exists() || dir.document().exists() {
        bail!("{} already holds an overlay; refusing to overwrite its CA", a.dir.display());
    }
    if a.name.is_empty() || a.name.contains(char::is_whitespace) {
        bail!("overlay name '{}' is not a valid name", a.name);
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create {}", a.dir.display()))?;
    let now = now_s();
    let key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256)?;
    let ca = OverlayCa::create(&a.name, key, now.saturating_sub(3600), now + 20 * 365 * 86_400)?;
    let mut doc = OverlayDocument::new(&a.name, ca.cert_der().to_vec(), a.bootstrap.clone());
    doc.enrollment_server = a.enrollment_server.clone();
    doc.chord_update_interval_s = a.update_interval.max(1);
    doc.chord_ping_interval_s = a.ping_interval.max(1);
    if !a.links.is_empty() {
        doc.link_types = a.links.iter().map(|l| crate::overlay::document::LinkType::parse(l)).collect();
    }
    let xml = doc.sign(&ca)?;
    write_private(&dir.ca_key(), &ca.key().to_pkcs8_der())?;
    std::fs::write(dir.ca_cert(), ca.cert_der())
        .with_context(|| format!("cannot write {}", dir.ca_cert().display()))?;
    std::fs::write(dir.document(), &xml).with_context(|| format!("cannot write {}", dir.document().display()))?;
    println!("overlay '{}' created in {}", a.name, a.dir.display());
    println!("  configuration: {}", dir.document().display());
    println!("  CA key:        {} (keep it secret)", dir.ca_key().display());
    Ok(())
}

fn overlay_serve(a: OverlayServeArgs) -> anyhow::Result<()> {
    let dir = OverlayDir(a.dir);
    let (ca, _doc, _) = dir.load_ca()?;
    let users = if dir.users().exists() { EnrollUsers::load(&dir.users())? } else { EnrollUsers::new() };
    if users.is_empty() {
        tracing::warn!("no enrollment accounts: add one with `chordphone overlay add-user`");
    }
    let host = a.host.unwrap_or_else(|| a.listen.ip().to_string());
    let (cert, key) = enroll::server_tls_identity(&ca, &host, now_s(), 365 * 86_400)?;
    let cfg = EnrollServerConfig {
        listen: a.listen,
        ca: std::sync::Arc::new(ca),
        tls_cert_der: cert,
        tls_key_pkcs8: key,
        users,
        validity_s: a.validity_days.max(1) * 86_400,
    };
    block_on(async move {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! { _ = shutdown => {}, _ = term.recv() => {} }
        };
        enroll::serve(cfg, stop).await.map_err(anyhow::Error::from)
    })?
}

/// `chordphone enroll`: writes the new node's identity into NODE_DIR/node.db
/// and the overlay configuration into NODE_DIR/overlay.xml.
pub fn enroll(a: EnrollArgs) -> anyhow::Result<()> {
    let paths = NodePaths { data_dir: a.out.clone() };
    if paths.db().exists() {
        let db = NodeDb::open(&paths.db())?;
        if db.identity()?.is_some() {
            bail!("{} is already enrolled; use a new directory", a.out.display());
        }
    }
    let alg = match a.key.as_str() {
        "ed25519" => KeyAlgorithm::Ed25519,
        "rsa" => KeyAlgorithm::RsaPkcs1Sha256,
        _ => KeyAlgorithm::EcdsaP256Sha256,
    };
    let (enrollment, xml): (Enrollment, String) = match (&a.overlay, &a.server) {
        (Some(dir), None) => {
            let (ca, _doc, xml) = OverlayDir(dir.clone()).load_ca()?;
            (enroll::enroll_local(&ca, a.user.as_deref(), alg, now_s())?, xml)
        }
        (None, Some(url)) => {
            let config = a.config.as_ref().ok_or_else(|| anyhow!("--server needs --config"))?;
            let xml = std::fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
            let doc =
                OverlayDocument::verify_signed(&xml, None).map_err(|e| anyhow!("{} refused: {e}", config.display()))?;
            let root =
                doc.root_certs.first().ok_or_else(|| anyhow!("{} names no root certificate", config.display()))?;
            let (user, pass) = (a.username.clone().unwrap_or_default(), a.password.clone().unwrap_or_default());
            let e = block_on(enroll::enroll_remote(url, root, &doc.name, &user, &pass, 1, alg))??;
            (e, xml)
        }
        _ => bail!("say where to enroll: --overlay DIR (local CA) or --server URL (enrollment server)"),
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    std::fs::write(paths.overlay_xml(), xml)
        .with_context(|| format!("cannot write {}", paths.overlay_xml().display()))?;
    let node_id = *enrollment.node_ids.first().ok_or_else(|| anyhow!("the certificate binds no Node-ID"))?;
    let db = NodeDb::open(&paths.db())?;
    db.put_identity(&StoredIdentity {
        key_pkcs8: enrollment.key_pkcs8,
        cert_der: enrollment.cert_der,
        ca_der: enrollment.ca_der,
        node_id,
        user: enrollment.user.clone(),
    })?;
    println!(
        "enrolled node {node_id}{} in {}",
        enrollment.user.map(|u| format!(" (user {u})")).unwrap_or_default(),
        a.out.display()
    );
    Ok(())
}

// ---- SIP accounts ----

use crate::node::accounts::{UserIdentityRecord, delete_account, save_account};
use crate::sip::SipUser;
use base64::Engine as _;

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add (or change) a SIP account: enrolls a user certificate binding the
    /// AOR and this node's Node-ID (RFC 7904 USER-NODE-MATCH) and stores
    /// digest hashes (MD5 and SHA-256) of the password, never the password.
    Add(UserAddArgs),
    /// Add many accounts at once from a file of `user;password` lines (sipp's
    /// injection-file format; a first line without `;` such as SEQUENTIAL is
    /// skipped); AORs are user@DOMAIN.
    Import(UserImportArgs),
    /// List the SIP accounts of a node.
    List(UserDirArgs),
    /// Remove a SIP account.
    Remove(UserRemoveArgs),
}

#[derive(Args, Debug)]
pub struct UserAddArgs {
    /// The address of record, user@domain.
    pub aor: String,
    #[arg(long)]
    pub password: String,
    /// The overlay directory whose CA issues the user certificate.
    #[arg(long)]
    pub overlay: PathBuf,
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct UserImportArgs {
    pub file: PathBuf,
    /// The AOR domain of the imported users.
    #[arg(long)]
    pub domain: String,
    #[arg(long)]
    pub overlay: PathBuf,
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct UserDirArgs {
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct UserRemoveArgs {
    pub aor: String,
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

fn control_reachable(data_dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(NodePaths { data_dir: data_dir.to_path_buf() }.control_socket()).is_ok()
}

/// `chordphone user ...`.
pub fn user(cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add(a) => user_add(a).map(|line| println!("{line}")),
        UserCmd::Import(a) => {
            let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
            let mut n = 0usize;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || (i == 0 && !line.contains(';')) {
                    continue;
                }
                let (user, password) = line
                    .split_once(';')
                    .ok_or_else(|| anyhow!("{}:{}: expected user;password", a.file.display(), i + 1))?;
                let password = password.split(';').next().unwrap_or_default();
                user_add(UserAddArgs {
                    aor: format!("{user}@{}", a.domain),
                    password: password.to_owned(),
                    overlay: a.overlay.clone(),
                    data_dir: a.data_dir.clone(),
                })
                .with_context(|| format!("{}:{}", a.file.display(), i + 1))?;
                n += 1;
            }
            println!("imported {n} SIP accounts");
            Ok(())
        }
        UserCmd::List(a) => {
            let users: Vec<SipUser> = if control_reachable(&a.data_dir) {
                serde_json::from_value(call(&a.data_dir, ControlRequest::ListUsers)?)?
            } else {
                NodeDb::open(&NodePaths { data_dir: a.data_dir.clone() }.db())?.sip_users()?
            };
            for u in users {
                println!("{}\trealm={}", u.aor, u.realm);
            }
            Ok(())
        }
        UserCmd::Remove(a) => {
            let removed = if control_reachable(&a.data_dir) {
                call(&a.data_dir, ControlRequest::RemoveUser { aor: a.aor.clone() })?.as_bool().unwrap_or(false)
            } else {
                delete_account(&NodeDb::open(&NodePaths { data_dir: a.data_dir.clone() }.db())?, &a.aor)?
            };
            if !removed {
                bail!("no SIP account '{}'", a.aor);
            }
            println!("removed {}", a.aor);
            Ok(())
        }
    }
}

fn user_add(a: UserAddArgs) -> anyhow::Result<String> {
    let (user, domain) = a
        .aor
        .split_once('@')
        .filter(|(u, d)| !u.is_empty() && !d.is_empty() && !d.contains('@'))
        .ok_or_else(|| anyhow!("'{}' is not an address of record (user@domain)", a.aor))?;
    if a.password.is_empty() {
        bail!("the password is empty");
    }
    let paths = NodePaths { data_dir: a.data_dir.clone() };
    let settings = crate::node::config::LocalSettings::load(&paths)?;
    let realm = settings.sip.realm.clone().unwrap_or_else(|| domain.to_owned());
    let running = control_reachable(&a.data_dir);
    let node_id = if running {
        let s = call(&a.data_dir, ControlRequest::Status)?;
        let hex = field(&s, "node_id").as_str().unwrap_or_default().to_owned();
        parse_node_id(&hex)?
    } else {
        NodeDb::open(&paths.db())?
            .identity()?
            .ok_or_else(|| anyhow!("{} is not enrolled", a.data_dir.display()))?
            .node_id
    };
    let (ca, _, _) = OverlayDir(a.overlay.clone()).load_ca()?;
    let key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256)?;
    let now = now_s();
    let cert = ca.issue(&key.spki_der(), Some(&a.aor), &[node_id], now.saturating_sub(300), now + 365 * 86_400)?;
    let account = SipUser {
        aor: a.aor.clone(),
        realm: realm.clone(),
        ha1_md5: crate::sip::digest::ha1(crate::sip::digest::DigestAlgorithm::Md5, user, &realm, &a.password),
        ha1_sha256: crate::sip::digest::ha1(crate::sip::digest::DigestAlgorithm::Sha256, user, &realm, &a.password),
        created_unix_s: now,
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let record = UserIdentityRecord { key_b64: b64.encode(key.to_pkcs8_der()), cert_b64: b64.encode(&cert) };
    if running {
        call(&a.data_dir, ControlRequest::AddUser { account, key_b64: record.key_b64, cert_b64: record.cert_b64 })?;
    } else {
        save_account(&NodeDb::open(&paths.db())?, &account, &record)?;
    }
    Ok(format!("SIP account {} (realm {realm}) on node {node_id}", a.aor))
}

fn parse_node_id(hex_id: &str) -> anyhow::Result<crate::wire::NodeId> {
    let bytes = hex::decode(hex_id).map_err(|e| anyhow!("bad node id '{hex_id}': {e}"))?;
    let arr: [u8; 16] = bytes.try_into().map_err(|_| anyhow!("node id '{hex_id}' is not 16 bytes"))?;
    Ok(crate::wire::NodeId(arr))
}
