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
//! Values are serde row types encoded with postcard ([`rows`]) under the
//! schema version kept in `meta`; decoding malformed bytes gives
//! [`DbError::Corrupt`], never a panic. A file of schema version 1 (the
//! hand-written encoding of chordphone 0.1) is migrated once, atomically,
//! when it is opened ([`v1`]).

mod rows;
mod v1;

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use redb::{
    Builder, Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

use self::rows::{
    decode_host, decode_identity, decode_record, decode_sip_user, encode_host, encode_identity, encode_record,
    encode_sip_user,
};
use crate::wire::NodeId;

/// File name of the database inside the node's data directory.
pub const FILE_NAME: &str = "node.db";

/// Schema version written by this build. Opening a file with a newer version
/// is refused ([`DbError::NewerSchema`]) rather than risking misreading it;
/// version 1 is migrated on open.
pub const SCHEMA_VERSION: u32 = 2;

/// The `meta` key that holds the schema version; [`NodeDb::put_meta`] refuses it.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const IDENTITY: TableDefinition<&str, &[u8]> = TableDefinition::new("identity");
const HOST_CACHE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("host_cache");
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const SIP_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("sip_users");

/// The single row key of the `identity` table.
const IDENTITY_KEY: &str = "self";
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
    /// A value could not be encoded for storage.
    #[error("node database {}: {op} failed: cannot encode {what}: {reason}", path.display())]
    Encode { path: PathBuf, op: &'static str, what: &'static str, reason: String },
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
        self.write("put identity", |op, txn| {
            let bytes = encode_identity(identity).map_err(|reason| op.encode("identity", reason))?;
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
                let value = encode_host(e).map_err(|reason| op.encode("host cache entry", reason))?;
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
                let value = encode_record(row).map_err(|reason| op.encode("record", reason))?;
                table.insert(index, value.as_slice()).map_err(op.st())?;
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
        self.write("put SIP user", |op, txn| {
            let value = encode_sip_user(user).map_err(|reason| op.encode("SIP user", reason))?;
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

    /// Creates missing tables and writes, checks or migrates the schema
    /// version, in one transaction so a newer file is left untouched and a
    /// migration is all or nothing.
    fn init_schema(&self) -> Result<(), DbError> {
        self.write("initialise schema", |op, txn| {
            txn.open_table(IDENTITY).map_err(op.st())?;
            txn.open_table(HOST_CACHE).map_err(op.st())?;
            txn.open_table(RECORDS).map_err(op.st())?;
            txn.open_table(SIP_USERS).map_err(op.st())?;
            let mut meta = txn.open_table(META).map_err(op.st())?;
            let found = meta.get(SCHEMA_VERSION_KEY).map_err(op.st())?.map(|guard| {
                <[u8; 4]>::try_from(guard.value()).map(u32::from_be_bytes).map_err(|_| "not 4 bytes".to_owned())
            });
            match found {
                Some(Ok(SCHEMA_VERSION)) => return Ok(()),
                // A new file.
                None => {}
                Some(Ok(v1::VERSION)) => v1::migrate(op, txn)?,
                Some(Ok(found)) if found > SCHEMA_VERSION => {
                    return Err(DbError::NewerSchema { path: self.path.clone(), found, supported: SCHEMA_VERSION });
                }
                Some(Ok(found)) => return Err(op.corrupt("schema version", format!("unknown version {found}"))),
                Some(Err(reason)) => return Err(op.corrupt("schema version", reason)),
            }
            meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION.to_be_bytes().as_slice()).map_err(op.st())?;
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

    fn encode(&self, what: &'static str, reason: impl Into<String>) -> DbError {
        DbError::Encode { path: self.path.to_path_buf(), op: self.name, what, reason: reason.into() }
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
        let id = encode_identity(&identity()).unwrap();
        for n in 0..id.len() {
            assert!(decode_identity(id.get(..n).unwrap()).is_err(), "prefix {n}");
        }
        let rec = encode_record(&row(9)).unwrap();
        for n in 0..rec.len() {
            assert!(decode_record(rec.get(..n).unwrap()).is_err(), "prefix {n}");
        }
        let mut long = rec.clone();
        long.push(0);
        assert!(decode_record(&long).is_err());
        let old = v1_identity(&identity());
        for n in 0..old.len() {
            assert!(v1::decode_identity(old.get(..n).unwrap()).is_err(), "prefix {n}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = decode_identity(&bytes);
            let _ = decode_record(&bytes);
            let _ = decode_sip_user("a", &bytes);
            let _ = decode_host(&bytes, &bytes);
            let _ = v1::decode_identity(&bytes);
            let _ = v1::decode_record(&bytes);
            let _ = v1::decode_sip_user("a", &bytes);
            let _ = v1::decode_host(&bytes, &bytes);
        }
    }

    // Values as chordphone 0.1 (schema version 1) wrote them, built by hand
    // from its format: big-endian integers, byte strings prefixed with their
    // u64 length, the identity led by format byte 1.
    fn v1_str(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    fn v1_identity(id: &StoredIdentity) -> Vec<u8> {
        let mut out = vec![1u8];
        for field in [&id.key_pkcs8[..], &id.cert_der, &id.ca_der, &id.node_id.0] {
            v1_str(&mut out, field);
        }
        match &id.user {
            None => out.push(0),
            Some(user) => {
                out.push(1);
                v1_str(&mut out, user.as_bytes());
            }
        }
        out
    }

    /// A node.db as the previous release left it.
    fn write_v1_file(path: &Path, bad_record: bool) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(SCHEMA_VERSION_KEY, 1u32.to_be_bytes().as_slice()).unwrap();
            meta.insert("overlay", b"chordphone.example".as_slice()).unwrap();
            txn.open_table(IDENTITY).unwrap().insert(IDENTITY_KEY, v1_identity(&identity()).as_slice()).unwrap();
            let mut hosts = txn.open_table(HOST_CACHE).unwrap();
            for p in
                [peer(1, 1000, 10), HostCacheEntry { addr: "[2001:db8::1]:5060".parse().unwrap(), ..peer(2, 0, 20) }]
            {
                let mut v = Vec::new();
                v1_str(&mut v, p.addr.to_string().as_bytes());
                v.extend_from_slice(&p.last_seen_unix_s.to_be_bytes());
                hosts.insert(p.node_id.0.as_slice(), v.as_slice()).unwrap();
            }
            let mut records = txn.open_table(RECORDS).unwrap();
            for (i, r) in (0u64..).zip([row(4), row(2)]) {
                let mut v = Vec::new();
                v1_str(&mut v, &r.resource);
                v.extend_from_slice(&r.kind.to_be_bytes());
                v1_str(&mut v, &r.data);
                if bad_record {
                    v.push(0);
                }
                records.insert(i, v.as_slice()).unwrap();
            }
            let u = user("sip:carol@example.org");
            let mut v = Vec::new();
            for field in [&u.realm, &u.ha1_md5, &u.ha1_sha256] {
                v1_str(&mut v, field.as_bytes());
            }
            v.extend_from_slice(&u.created_unix_s.to_be_bytes());
            txn.open_table(SIP_USERS).unwrap().insert(u.aor.as_str(), v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_schema_1_database_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = NodeDb::path_in(dir.path());
        write_v1_file(&path, false);
        let v6 = HostCacheEntry { addr: "[2001:db8::1]:5060".parse().unwrap(), ..peer(2, 0, 20) };
        for _ in 0..2 {
            // The second open finds version 2 and leaves it as it is.
            let db = NodeDb::open(&path).unwrap();
            assert_eq!(db.meta(SCHEMA_VERSION_KEY).unwrap(), Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
            assert_eq!(db.identity().unwrap(), Some(identity()));
            assert_eq!(db.host_cache().unwrap(), vec![v6.clone(), peer(1, 1000, 10)]);
            assert_eq!(db.records().unwrap(), vec![row(4), row(2)]);
            assert_eq!(db.sip_users().unwrap(), vec![user("sip:carol@example.org")]);
            assert_eq!(db.meta("overlay").unwrap().as_deref(), Some(&b"chordphone.example"[..]));
            // Stored in the new encoding, not merely readable.
            let txn = db.db.begin_read().unwrap();
            let raw = txn.open_table(IDENTITY).unwrap().get(IDENTITY_KEY).unwrap().unwrap().value().to_vec();
            assert_eq!(raw, encode_identity(&identity()).unwrap());
        }
    }

    #[test]
    fn a_schema_1_row_that_does_not_decode_leaves_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = NodeDb::path_in(dir.path());
        write_v1_file(&path, true);
        let err = NodeDb::open(&path).unwrap_err();
        assert!(matches!(&err, DbError::Corrupt { what: "schema 1 record", .. }), "{err}");
        assert!(err.to_string().contains("trailing bytes"), "{err}");
        // Still version 1 with the old identity bytes: nothing was half-migrated.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let version = txn.open_table(META).unwrap().get(SCHEMA_VERSION_KEY).unwrap().unwrap().value().to_vec();
        assert_eq!(version, 1u32.to_be_bytes());
        let raw = txn.open_table(IDENTITY).unwrap().get(IDENTITY_KEY).unwrap().unwrap().value().to_vec();
        assert_eq!(raw, v1_identity(&identity()));
    }
}
