//! The stored form of each table's values since schema version 2: one
//! serde row type per table, encoded with postcard (a compact, documented
//! and stable format). The row types are private to the database so the
//! public types can change without changing what is on disk; a change of a
//! row type is a new schema version with a migration (see [`super::v1`]).

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{HostCacheEntry, RecordRow, SipUser, StoredIdentity};
use crate::wire::{NODE_ID_LEN, NodeId};

/// The `identity` table's single value.
#[derive(Serialize, Deserialize)]
struct IdentityRow {
    key_pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
    ca_der: Vec<u8>,
    node_id: [u8; NODE_ID_LEN],
    user: Option<String>,
}

/// A `host_cache` value; the key is the peer's Node-ID.
#[derive(Serialize, Deserialize)]
struct HostRow {
    addr: SocketAddr,
    last_seen_unix_s: u64,
}

/// A `records` value; the key is the row's position in the snapshot.
#[derive(Serialize, Deserialize)]
struct RecordValue {
    resource: Vec<u8>,
    kind: u32,
    data: Vec<u8>,
}

/// A `sip_users` value; the key is the account's AoR.
#[derive(Serialize, Deserialize)]
struct SipUserRow {
    realm: String,
    ha1_md5: String,
    ha1_sha256: String,
    created_unix_s: u64,
}

pub(super) fn encode_identity(id: &StoredIdentity) -> Result<Vec<u8>, String> {
    encode(&IdentityRow {
        key_pkcs8: id.key_pkcs8.clone(),
        cert_der: id.cert_der.clone(),
        ca_der: id.ca_der.clone(),
        node_id: id.node_id.0,
        user: id.user.clone(),
    })
}

pub(super) fn decode_identity(bytes: &[u8]) -> Result<StoredIdentity, String> {
    let row: IdentityRow = decode(bytes)?;
    Ok(StoredIdentity {
        key_pkcs8: row.key_pkcs8,
        cert_der: row.cert_der,
        ca_der: row.ca_der,
        node_id: NodeId(row.node_id),
        user: row.user,
    })
}

pub(super) fn encode_host(e: &HostCacheEntry) -> Result<Vec<u8>, String> {
    encode(&HostRow { addr: e.addr, last_seen_unix_s: e.last_seen_unix_s })
}

pub(super) fn decode_host(key: &[u8], value: &[u8]) -> Result<HostCacheEntry, String> {
    let node_id = node_id(key)?;
    let row: HostRow = decode(value)?;
    Ok(HostCacheEntry { node_id, addr: row.addr, last_seen_unix_s: row.last_seen_unix_s })
}

pub(super) fn encode_record(row: &RecordRow) -> Result<Vec<u8>, String> {
    encode(&RecordValue { resource: row.resource.clone(), kind: row.kind, data: row.data.clone() })
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<RecordRow, String> {
    let row: RecordValue = decode(bytes)?;
    Ok(RecordRow { resource: row.resource, kind: row.kind, data: row.data })
}

pub(super) fn encode_sip_user(user: &SipUser) -> Result<Vec<u8>, String> {
    encode(&SipUserRow {
        realm: user.realm.clone(),
        ha1_md5: user.ha1_md5.clone(),
        ha1_sha256: user.ha1_sha256.clone(),
        created_unix_s: user.created_unix_s,
    })
}

pub(super) fn decode_sip_user(aor: &str, bytes: &[u8]) -> Result<SipUser, String> {
    let row: SipUserRow = decode(bytes)?;
    Ok(SipUser {
        aor: aor.to_owned(),
        realm: row.realm,
        ha1_md5: row.ha1_md5,
        ha1_sha256: row.ha1_sha256,
        created_unix_s: row.created_unix_s,
    })
}

/// A host cache key: the peer's Node-ID, raw.
pub(super) fn node_id(bytes: &[u8]) -> Result<NodeId, String> {
    <[u8; NODE_ID_LEN]>::try_from(bytes)
        .map(NodeId)
        .map_err(|_| format!("node id of {} bytes, expected {NODE_ID_LEN}", bytes.len()))
}

fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(row).map_err(|e| e.to_string())
}

/// One whole value: postcard stops at the end of the row, so bytes after it
/// mean the value is not what was written.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (row, rest) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes", rest.len()));
    }
    Ok(row)
}
