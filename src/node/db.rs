//! The node's embedded database: one file, `node.db`, in the node's data
//! directory, holding what a node keeps across restarts — its enrolled
//! identity (RFC 6940 §11.3 certificate and key), a cache of peers it reached
//! recently (the bootstrap hint list of §11.4, tried first on restart), a
//! snapshot of the overlay records it stores (§7), the SIP edge's digest
//! accounts and a small key/value `meta` table.
//!
//! Why redb: it is pure Rust (no C library to build or link, unlike SQLite or
//! RocksDB), its copy-on-write B-trees publish a commit by atomically
//! switching the root in the file header, and a writer that crashes mid
//! transaction leaves the last committed state readable on the next open.
//!
//! Every change is made inside one redb write transaction and committed with
//! `Durability::Immediate` (the default): each method is atomic, consistent,
//! isolated and durable once it returns `Ok`, and a crash at any point leaves
//! either the state before or the state after the call, never a mix
//! (`tests/db_crash.rs` SIGKILLs a writer to check this).
//!
//! Values are encoded with a small explicit binary format (big-endian
//! integers, `u64`-length-prefixed byte strings) under the schema version kept
//! in `meta`; decoding malformed bytes gives [`DbError::Corrupt`], never a
//! panic.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use redb::{
    Builder, Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

use crate::wire::{NODE_ID_LEN, NodeId};

/// File name of the database inside the node's data directory.
pub const FILE_NAME: &str = "node.db";

/// Schema version written by this build. Opening a file with a newer version
/// is refused ([`DbError::NewerSchema`]) rather than risking misreading it.
pub const SCHEMA_VERSION: u32 = 1;

/// The `meta` key that holds the schema version; [`NodeDb::put_meta`] refuses it.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const IDENTITY: TableDefinition<&str, &[u8]> = TableDefinition::new("identity");
const HOST_CACHE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("host_cache");
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const SIP_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("sip_users");

/// The single row key of the `identity` table.
const IDENTITY_KEY: &str = "self";
/// Format tag of an encoded identity, bumped with the schema if it changes.
const IDENTITY_FORMAT: u8 = 1;
/// The database is small (identity, a few hundred peers, stored records), so
/// redb's default 1 GiB page cache would only be an upper bound to forget.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Errors of the node database. Each names the file and the operation.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The file could not be opened as a redb database (not a database,
    /// unreadable, corrupted).
    #[error("cannot open node database {}: {error}", path.display())]
    Open { path: PathBuf, error: DatabaseError },
    /// Another process holds the database's lock.
    #[error("cannot open node database {}: database is locked by another chordphone process?", path.display())]
    Locked { path: PathBuf },
    /// The file was written by a newer chordphone.
    #[error(
        "cannot open node database {}: schema version {found} is newer than version {supported} supported by this chordphone; upgrade chordphone",
        path.display()
    )]
    NewerSchema { path: PathBuf, found: u32, supported: u32 },
    /// redb failed during an operation.
    #[error("node database {}: {op} failed: {error}", path.display())]
    Storage { path: PathBuf, op: &'static str, error: Box<redb::Error> },
    /// A stored value did not decode.
    #[error("node database {}: {op} failed: corrupt {what}: {reason}", path.display())]
    Corrupt { path: PathBuf, op: &'static str, what: &'static str, reason: String },
    /// The caller tried to write a key the database manages itself.
    #[error("node database {}: {op} refused: meta key {key:?} is reserved", path.display())]
    ReservedKey { path: PathBuf, op: &'static str, key: String },
}

/// The node's enrolled identity: key, certificate and the CA that signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredIdentity {
    /// Private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// The node's certificate, DER.
    pub cert_der: Vec<u8>,
    /// The enrollment server's CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// The Node-ID the certificate binds.
    pub node_id: NodeId,
    /// The user name the certificate binds, if any.
    pub user: Option<String>,
}

/// A peer this node reached recently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCacheEntry {
    pub node_id: NodeId,
    pub addr: SocketAddr,
    /// Wall-clock time the peer was last reached, seconds since the Unix epoch.
    pub last_seen_unix_s: u64,
}

/// One stored overlay record; `data` is opaque here (the caller's encoding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRow {
    pub resource: Vec<u8>,
    pub kind: u32,
    pub data: Vec<u8>,
}

pub use crate::sip::SipUser;

/// Handle on `node.db`. Cheap to share by reference: methods take `&self` and
/// redb serialises writers internally.
pub struct NodeDb {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for NodeDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDb").field("path", &self.path).finish_non_exhaustive()
    }
}

impl NodeDb {
    /// The database path inside a node's data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Opens (creating if missing) `node.db` in `data_dir`, which must exist.
    pub fn open_in(data_dir: &Path) -> Result<NodeDb, DbError> {
        NodeDb::open(&NodeDb::path_in(data_dir))
    }

    /// Opens or creates the database file at `path`, creates missing tables
    /// and checks the schema version. The file stays locked until the handle
    /// is dropped.
    pub fn open(path: &Path) -> Result<NodeDb, DbError> {
        let mut builder = Builder::new();
        builder.set_cache_size(CACHE_BYTES);
        // Verify page checksums on every open, so a file damaged outside redb
        // is reported as an error instead of trusted (cheap: the file is small).
        builder.set_check_integrity_on_open(true);
        let db = builder.create(path).map_err(|error| match error {
            DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
                DbError::Locked { path: path.to_path_buf() }
            }
            error => DbError::Open { path: path.to_path_buf(), error },
        })?;
        let this = NodeDb { db, path: path.to_path_buf() };
        this.init_schema()?;
        Ok(this)
    }

    /// The file this handle has open.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores the node's identity, replacing any previous one.
    pub fn put_identity(&self, identity: &StoredIdentity) -> Result<(), DbError> {
        let bytes = encode_identity(identity);
        self.write("put identity", |op, txn| {
            txn.open_table(IDENTITY).map_err(op.st())?.insert(IDENTITY_KEY, bytes.as_slice()).map_err(op.st())?;
            Ok(())
        })
    }

    /// The stored identity, if the node has enrolled.
    pub fn identity(&self) -> Result<Option<StoredIdentity>, DbError> {
        self.read("read identity", |op, txn| {
            let table = txn.open_table(IDENTITY).map_err(op.st())?;
            let Some(guard) = table.get(IDENTITY_KEY).map_err(op.st())? else { return Ok(None) };
            decode_identity(guard.value()).map(Some).map_err(|reason| op.corrupt("identity", reason))
        })
    }

    /// Inserts or replaces (by Node-ID) each entry, all in one transaction.
    /// A later entry for the same Node-ID in `entries` wins.
    pub fn record_peers(&self, entries: &[HostCacheEntry]) -> Result<(), DbError> {
        self.write("record peers", |op, txn| {
            let mut table = txn.open_table(HOST_CACHE).map_err(op.st())?;
            for e in entries {
                let value = encode_host(e);
                table.insert(e.node_id.0.as_slice(), value.as_slice()).map_err(op.st())?;
            }
            Ok(())
        })
    }

    /// The host cache, most recently seen first (ties by Node-ID).
    pub fn host_cache(&self) -> Result<Vec<HostCacheEntry>, DbError> {
        self.read("read host cache", |op, txn| {
            let table = txn.open_table(HOST_CACHE).map_err(op.st())?;
            read_host_cache(op, &table)
        })
    }

    /// Keeps the `max_entries` most recently seen peers and deletes the rest;
    /// returns how many were deleted.
    pub fn prune_host_cache(&self, max_entries: usize) -> Result<usize, DbError> {
        self.write("prune host cache", |op, txn| {
            let mut table = txn.open_table(HOST_CACHE).map_err(op.st())?;
            let entries = read_host_cache(op, &table)?;
            let stale = entries.get(max_entries..).unwrap_or_default();
            for e in stale {
                table.remove(e.node_id.0.as_slice()).map_err(op.st())?;
            }
            Ok(stale.len())
        })
    }

    /// Removes a peer from the host cache; returns whether it was there.
    pub fn forget_peer(&self, node_id: NodeId) -> Result<bool, DbError> {
        self.write("forget peer", |op, txn| {
            let mut table = txn.open_table(HOST_CACHE).map_err(op.st())?;
            let removed = table.remove(node_id.0.as_slice()).map_err(op.st())?.is_some();
            Ok(removed)
        })
    }

    /// Makes the records table exactly `rows` (order and duplicates kept) in
    /// one transaction: a reader or a restart after a crash sees either the
    /// previous snapshot or this one.
    pub fn replace_records(&self, rows: &[RecordRow]) -> Result<(), DbError> {
        self.write("replace records", |op, txn| {
            txn.delete_table(RECORDS).map_err(op.st())?;
            let mut table = txn.open_table(RECORDS).map_err(op.st())?;
            for (index, row) in (0u64..).zip(rows) {
                table.insert(index, encode_record(row).as_slice()).map_err(op.st())?;
            }
            Ok(())
        })
    }

    /// The last snapshot given to [`NodeDb::replace_records`], in its order.
    pub fn records(&self) -> Result<Vec<RecordRow>, DbError> {
        self.read("read records", |op, txn| {
            let table = txn.open_table(RECORDS).map_err(op.st())?;
            let mut rows = Vec::new();
            for item in table.iter().map_err(op.st())? {
                let (_, value) = item.map_err(op.st())?;
                rows.push(decode_record(value.value()).map_err(|reason| op.corrupt("record", reason))?);
            }
            Ok(rows)
        })
    }

    /// Inserts or replaces the account for `user.aor`.
    pub fn put_sip_user(&self, user: &SipUser) -> Result<(), DbError> {
        let value = encode_sip_user(user);
        self.write("put SIP user", |op, txn| {
            txn.open_table(SIP_USERS).map_err(op.st())?.insert(user.aor.as_str(), value.as_slice()).map_err(op.st())?;
            Ok(())
        })
    }

    /// The account for `aor`, if any.
    pub fn sip_user(&self, aor: &str) -> Result<Option<SipUser>, DbError> {
        self.read("read SIP user", |op, txn| {
            let table = txn.open_table(SIP_USERS).map_err(op.st())?;
            let Some(guard) = table.get(aor).map_err(op.st())? else { return Ok(None) };
            decode_sip_user(aor, guard.value()).map(Some).map_err(|reason| op.corrupt("SIP user", reason))
        })
    }

    /// All accounts, ordered by AoR.
    pub fn sip_users(&self) -> Result<Vec<SipUser>, DbError> {
        self.read("list SIP users", |op, txn| {
            let table = txn.open_table(SIP_USERS).map_err(op.st())?;
            let mut users = Vec::new();
            for item in table.iter().map_err(op.st())? {
                let (key, value) = item.map_err(op.st())?;
                users.push(
                    decode_sip_user(key.value(), value.value()).map_err(|reason| op.corrupt("SIP user", reason))?,
                );
            }
            Ok(users)
        })
    }

    /// Deletes the account for `aor`; returns whether it existed.
    pub fn remove_sip_user(&self, aor: &str) -> Result<bool, DbError> {
        self.write("remove SIP user", |op, txn| {
            let mut table = txn.open_table(SIP_USERS).map_err(op.st())?;
            let removed = table.remove(aor).map_err(op.st())?.is_some();
            Ok(removed)
        })
    }

    /// Sets a `meta` value. [`SCHEMA_VERSION_KEY`] is reserved.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), DbError> {
        if key == SCHEMA_VERSION_KEY {
            return Err(DbError::ReservedKey { path: self.path.clone(), op: "put meta", key: key.to_owned() });
        }
        self.write("put meta", |op, txn| {
            txn.open_table(META).map_err(op.st())?.insert(key, value).map_err(op.st())?;
            Ok(())
        })
    }

    /// A `meta` value, if set.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        self.read("read meta", |op, txn| {
            let table = txn.open_table(META).map_err(op.st())?;
            Ok(table.get(key).map_err(op.st())?.map(|guard| guard.value().to_vec()))
        })
    }

    /// Creates missing tables and writes or checks the schema version, in
    /// one transaction so a newer file is left untouched.
    fn init_schema(&self) -> Result<(), DbError> {
        self.write("initialise schema", |op, txn| {
            {
                let mut meta = txn.open_table(META).map_err(op.st())?;
                let found = meta.get(SCHEMA_VERSION_KEY).map_err(op.st())?.map(|guard| {
                    <[u8; 4]>::try_from(guard.value()).map(u32::from_be_bytes).map_err(|_| "not 4 bytes".to_owned())
                });
                match found {
                    None => {
                        meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION.to_be_bytes().as_slice()).map_err(op.st())?;
                    }
                    Some(Err(reason)) => return Err(op.corrupt("schema version", reason)),
                    Some(Ok(SCHEMA_VERSION)) => {}
                    Some(Ok(found)) if found > SCHEMA_VERSION => {
                        return Err(DbError::NewerSchema { path: self.path.clone(), found, supported: SCHEMA_VERSION });
                    }
                    // Version 1 is the first; nothing older was ever written.
                    Some(Ok(found)) => return Err(op.corrupt("schema version", format!("unknown version {found}"))),
                }
            }
            txn.open_table(IDENTITY).map_err(op.st())?;
            txn.open_table(HOST_CACHE).map_err(op.st())?;
            txn.open_table(RECORDS).map_err(op.st())?;
            txn.open_table(SIP_USERS).map_err(op.st())?;
            Ok(())
        })
    }

    /// Runs `f` in a write transaction, committing if it returns `Ok` and
    /// aborting otherwise.
    fn write<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&Op<'_>, &WriteTransaction) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let op = Op { path: &self.path, name };
        let txn = self.db.begin_write().map_err(op.st())?;
        match f(&op, &txn) {
            Ok(value) => {
                txn.commit().map_err(op.st())?;
                Ok(value)
            }
            Err(error) => {
                // The operation's error is the one worth reporting; an abort
                // failure leaves nothing committed either way.
                let _ = txn.abort();
                Err(error)
            }
        }
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    fn read<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&Op<'_>, &ReadTransaction) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let op = Op { path: &self.path, name };
        let txn = self.db.begin_read().map_err(op.st())?;
        f(&op, &txn)
    }
}

/// The file and operation an error is reported against.
struct Op<'a> {
    path: &'a Path,
    name: &'static str,
}

impl Op<'_> {
    fn st<E: Into<redb::Error>>(&self) -> impl FnOnce(E) -> DbError + '_ {
        move |error| DbError::Storage { path: self.path.to_path_buf(), op: self.name, error: Box::new(error.into()) }
    }

    fn corrupt(&self, what: &'static str, reason: impl Into<String>) -> DbError {
        DbError::Corrupt { path: self.path.to_path_buf(), op: self.name, what, reason: reason.into() }
    }
}

fn read_host_cache(
    op: &Op<'_>,
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<Vec<HostCacheEntry>, DbError> {
    let mut entries = Vec::new();
    for item in table.iter().map_err(op.st())? {
        let (key, value) = item.map_err(op.st())?;
        entries.push(decode_host(key.value(), value.value()).map_err(|reason| op.corrupt("host cache entry", reason))?);
    }
    entries.sort_by_key(|e| (Reverse(e.last_seen_unix_s), e.node_id));
    Ok(entries)
}

fn encode_identity(id: &StoredIdentity) -> Vec<u8> {
    let mut enc = Enc::default();
    enc.u8(IDENTITY_FORMAT);
    enc.bytes(&id.key_pkcs8);
    enc.bytes(&id.cert_der);
    enc.bytes(&id.ca_der);
    enc.bytes(&id.node_id.0);
    match &id.user {
        None => enc.u8(0),
        Some(user) => {
            enc.u8(1);
            enc.bytes(user.as_bytes());
        }
    }
    enc.0
}

fn decode_identity(bytes: &[u8]) -> Result<StoredIdentity, String> {
    let mut dec = Dec(bytes);
    let format = dec.u8()?;
    if format != IDENTITY_FORMAT {
        return Err(format!("unknown identity format {format}"));
    }
    let key_pkcs8 = dec.bytes()?.to_vec();
    let cert_der = dec.bytes()?.to_vec();
    let ca_der = dec.bytes()?.to_vec();
    let node_id = node_id(dec.bytes()?)?;
    let user = match dec.u8()? {
        0 => None,
        1 => Some(dec.string()?),
        tag => return Err(format!("bad user tag {tag}")),
    };
    dec.finish()?;
    Ok(StoredIdentity { key_pkcs8, cert_der, ca_der, node_id, user })
}

fn encode_host(e: &HostCacheEntry) -> Vec<u8> {
    let mut enc = Enc::default();
    enc.bytes(e.addr.to_string().as_bytes());
    enc.u64(e.last_seen_unix_s);
    enc.0
}

fn decode_host(key: &[u8], value: &[u8]) -> Result<HostCacheEntry, String> {
    let node_id = node_id(key)?;
    let mut dec = Dec(value);
    let addr_text = dec.string()?;
    let addr = addr_text.parse().map_err(|_| format!("bad socket address {addr_text:?}"))?;
    let last_seen_unix_s = dec.u64()?;
    dec.finish()?;
    Ok(HostCacheEntry { node_id, addr, last_seen_unix_s })
}

fn encode_record(row: &RecordRow) -> Vec<u8> {
    let mut enc = Enc::default();
    enc.bytes(&row.resource);
    enc.u32(row.kind);
    enc.bytes(&row.data);
    enc.0
}

fn decode_record(bytes: &[u8]) -> Result<RecordRow, String> {
    let mut dec = Dec(bytes);
    let resource = dec.bytes()?.to_vec();
    let kind = dec.u32()?;
    let data = dec.bytes()?.to_vec();
    dec.finish()?;
    Ok(RecordRow { resource, kind, data })
}

fn encode_sip_user(user: &SipUser) -> Vec<u8> {
    let mut enc = Enc::default();
    enc.bytes(user.realm.as_bytes());
    enc.bytes(user.ha1_md5.as_bytes());
    enc.bytes(user.ha1_sha256.as_bytes());
    enc.u64(user.created_unix_s);
    enc.0
}

fn decode_sip_user(aor: &str, bytes: &[u8]) -> Result<SipUser, String> {
    let mut dec = Dec(bytes);
    let realm = dec.string()?;
    let ha1_md5 = dec.string()?;
    let ha1_sha256 = dec.string()?;
    let created_unix_s = dec.u64()?;
    dec.finish()?;
    Ok(SipUser { aor: aor.to_owned(), realm, ha1_md5, ha1_sha256, created_unix_s })
}

fn node_id(bytes: &[u8]) -> Result<NodeId, String> {
    <[u8; NODE_ID_LEN]>::try_from(bytes)
        .map(NodeId)
        .map_err(|_| format!("node id of {} bytes, expected {NODE_ID_LEN}", bytes.len()))
}

/// Writer of the value encoding: big-endian integers, byte strings prefixed
/// with their `u64` length.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }
}

/// Reader of the value encoding; every read is bounds-checked.
struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let Some((head, rest)) = self.0.split_at_checked(n) else {
            return Err(format!("truncated: wanted {n} bytes, {} left", self.0.len()));
        };
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let head = self.take(N)?;
        <[u8; N]>::try_from(head).map_err(|_| "length mismatch".to_owned())
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(u8::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| format!("length {len} too large"))?;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".to_owned())
    }
    fn finish(&self) -> Result<(), String> {
        if self.0.is_empty() { Ok(()) } else { Err(format!("{} trailing bytes", self.0.len())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, NodeDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open_in(dir.path()).unwrap();
        (dir, db)
    }

    fn identity() -> StoredIdentity {
        StoredIdentity {
            key_pkcs8: vec![1, 2, 3],
            cert_der: vec![4; 300],
            ca_der: vec![],
            node_id: NodeId::from_u128(0x0123_4567_89ab_cdef),
            user: Some("alice@example.org".to_owned()),
        }
    }

    fn peer(n: u128, port: u16, seen: u64) -> HostCacheEntry {
        HostCacheEntry {
            node_id: NodeId::from_u128(n),
            addr: SocketAddr::from(([192, 0, 2, 1], port)),
            last_seen_unix_s: seen,
        }
    }

    fn row(i: u8) -> RecordRow {
        RecordRow { resource: vec![i; 16], kind: u32::from(i) * 7, data: vec![i; usize::from(i)] }
    }

    fn user(aor: &str) -> SipUser {
        SipUser {
            aor: aor.to_owned(),
            realm: "example.org".to_owned(),
            ha1_md5: "0".repeat(32),
            ha1_sha256: "f".repeat(64),
            created_unix_s: 1_700_000_000,
        }
    }

    #[test]
    fn identity_round_trips_with_and_without_user() {
        let (_dir, db) = fresh();
        assert_eq!(db.identity().unwrap(), None);
        let mut id = identity();
        db.put_identity(&id).unwrap();
        assert_eq!(db.identity().unwrap(), Some(id.clone()));
        id.user = None;
        id.ca_der = vec![9; 10];
        db.put_identity(&id).unwrap();
        assert_eq!(db.identity().unwrap(), Some(id));
    }

    #[test]
    fn host_cache_upserts_orders_newest_first_and_prunes() {
        let (_dir, db) = fresh();
        db.record_peers(&[peer(1, 1000, 10), peer(2, 2000, 30), peer(3, 3000, 20)]).unwrap();
        // Upsert: peer 1 moves address and becomes the newest; an IPv6 peer ties with peer 2.
        let v6 = HostCacheEntry { addr: "[2001:db8::1]:5060".parse().unwrap(), ..peer(4, 0, 30) };
        db.record_peers(&[peer(1, 1111, 40), v6.clone()]).unwrap();
        let cache = db.host_cache().unwrap();
        assert_eq!(cache, vec![peer(1, 1111, 40), peer(2, 2000, 30), v6.clone(), peer(3, 3000, 20)]);

        assert_eq!(db.prune_host_cache(2).unwrap(), 2);
        assert_eq!(db.host_cache().unwrap(), vec![peer(1, 1111, 40), peer(2, 2000, 30)]);
        assert_eq!(db.prune_host_cache(5).unwrap(), 0);

        assert!(db.forget_peer(NodeId::from_u128(2)).unwrap());
        assert!(!db.forget_peer(NodeId::from_u128(2)).unwrap());
        assert_eq!(db.host_cache().unwrap(), vec![peer(1, 1111, 40)]);
        assert_eq!(db.prune_host_cache(0).unwrap(), 1);
        assert!(db.host_cache().unwrap().is_empty());
    }

    #[test]
    fn replace_records_is_an_exact_snapshot() {
        let (_dir, db) = fresh();
        assert!(db.records().unwrap().is_empty());
        let first: Vec<_> = (0..10).map(row).collect();
        db.replace_records(&first).unwrap();
        assert_eq!(db.records().unwrap(), first);
        // A shorter snapshot drops the old tail; order and duplicates are kept.
        let second = vec![row(5), row(1), row(5)];
        db.replace_records(&second).unwrap();
        assert_eq!(db.records().unwrap(), second);
        db.replace_records(&[]).unwrap();
        assert!(db.records().unwrap().is_empty());
    }

    #[test]
    fn sip_users_round_trip_and_remove() {
        let (_dir, db) = fresh();
        assert_eq!(db.sip_user("sip:bob@example.org").unwrap(), None);
        db.put_sip_user(&user("sip:bob@example.org")).unwrap();
        db.put_sip_user(&user("sip:alice@example.org")).unwrap();
        let mut bob = user("sip:bob@example.org");
        bob.realm = "other".to_owned();
        db.put_sip_user(&bob).unwrap();
        assert_eq!(db.sip_user("sip:bob@example.org").unwrap(), Some(bob.clone()));
        assert_eq!(db.sip_users().unwrap(), vec![user("sip:alice@example.org"), bob]);
        assert!(db.remove_sip_user("sip:bob@example.org").unwrap());
        assert!(!db.remove_sip_user("sip:bob@example.org").unwrap());
        assert_eq!(db.sip_users().unwrap(), vec![user("sip:alice@example.org")]);
    }

    #[test]
    fn meta_round_trips_and_reserves_the_schema_key() {
        let (_dir, db) = fresh();
        assert_eq!(db.meta("overlay").unwrap(), None);
        db.put_meta("overlay", b"chordphone.example").unwrap();
        assert_eq!(db.meta("overlay").unwrap().as_deref(), Some(&b"chordphone.example"[..]));
        assert_eq!(db.meta(SCHEMA_VERSION_KEY).unwrap(), Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
        let err = db.put_meta(SCHEMA_VERSION_KEY, b"x").unwrap_err();
        assert!(matches!(err, DbError::ReservedKey { .. }), "{err}");
    }

    #[test]
    fn reopen_after_drop_keeps_everything() {
        let (dir, db) = fresh();
        db.put_identity(&identity()).unwrap();
        db.record_peers(&[peer(7, 7, 7)]).unwrap();
        db.replace_records(&[row(3)]).unwrap();
        db.put_sip_user(&user("sip:carol@example.org")).unwrap();
        db.put_meta("k", b"v").unwrap();
        drop(db);
        let db = NodeDb::open_in(dir.path()).unwrap();
        assert_eq!(db.identity().unwrap(), Some(identity()));
        assert_eq!(db.host_cache().unwrap(), vec![peer(7, 7, 7)]);
        assert_eq!(db.records().unwrap(), vec![row(3)]);
        assert_eq!(db.sip_users().unwrap(), vec![user("sip:carol@example.org")]);
        assert_eq!(db.meta("k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn garbage_file_is_an_open_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in [("short.db", vec![7u8; 10]), ("long.db", b"not a database\n".repeat(2000))] {
            let path = dir.path().join(name);
            std::fs::write(&path, &contents).unwrap();
            let err = NodeDb::open(&path).unwrap_err();
            assert!(matches!(err, DbError::Open { .. }), "{err}");
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
            // The file is left as it was.
            assert_eq!(std::fs::read(&path).unwrap(), contents);
        }
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused_as_locked() {
        let (dir, _db) = fresh();
        let err = NodeDb::open_in(dir.path()).unwrap_err();
        assert!(matches!(err, DbError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("locked by another chordphone process"), "{err}");
    }

    #[test]
    fn newer_schema_is_refused_and_left_untouched() {
        let (dir, db) = fresh();
        let txn = db.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, (SCHEMA_VERSION + 1).to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = NodeDb::open_in(dir.path()).unwrap_err();
        match &err {
            DbError::NewerSchema { found, supported, .. } => {
                assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected NewerSchema, got {other}"),
        }
        assert!(err.to_string().contains("node.db"), "{err}");
        // Refused twice: the failed open did not rewrite the version.
        assert!(matches!(NodeDb::open_in(dir.path()), Err(DbError::NewerSchema { .. })));
    }

    #[test]
    fn garbage_values_decode_to_corrupt_errors() {
        let (_dir, db) = fresh();
        let txn = db.db.begin_write().unwrap();
        txn.open_table(IDENTITY).unwrap().insert(IDENTITY_KEY, [1u8, 0, 0, 0, 0, 0, 0, 0, 200].as_slice()).unwrap();
        txn.open_table(HOST_CACHE).unwrap().insert([1u8; 3].as_slice(), [0u8; 16].as_slice()).unwrap();
        txn.open_table(RECORDS).unwrap().insert(0, [0xffu8; 8].as_slice()).unwrap();
        txn.open_table(SIP_USERS).unwrap().insert("sip:x@y", [0u8; 3].as_slice()).unwrap();
        txn.commit().unwrap();
        for err in [
            db.identity().unwrap_err(),
            db.host_cache().unwrap_err(),
            db.prune_host_cache(0).unwrap_err(),
            db.records().unwrap_err(),
            db.sip_user("sip:x@y").unwrap_err(),
            db.sip_users().unwrap_err(),
        ] {
            assert!(matches!(err, DbError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("node.db"), "{err}");
        }
    }

    #[test]
    fn decoders_never_panic_on_truncations_of_valid_values() {
        let id = encode_identity(&identity());
        for n in 0..id.len() {
            assert!(decode_identity(id.get(..n).unwrap()).is_err(), "prefix {n}");
        }
        let rec = encode_record(&row(9));
        for n in 0..rec.len() {
            assert!(decode_record(rec.get(..n).unwrap()).is_err(), "prefix {n}");
        }
        let mut long = rec.clone();
        long.push(0);
        assert!(decode_record(&long).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = decode_identity(&bytes);
            let _ = decode_record(&bytes);
            let _ = decode_sip_user("a", &bytes);
            let _ = decode_host(&bytes, &bytes);
        }
    }
}
