//! Schema version 1, read once to migrate: the values chordphone 0.1 wrote
//! with a hand-written encoding (big-endian integers, byte strings prefixed
//! with their `u64` length, an identity format byte). [`migrate`] rewrites
//! every row in the current encoding ([`super::rows`]) inside the opening
//! write transaction, so a crash during the migration leaves the file at
//! version 1, and a row that does not decode aborts it with the file
//! untouched.

use redb::{ReadableTable, WriteTransaction};

use super::{
    DbError, HOST_CACHE, HostCacheEntry, IDENTITY, Op, RECORDS, RecordRow, SIP_USERS, SipUser, StoredIdentity,
};
use super::{IDENTITY_KEY, rows};

/// The schema version this module reads.
pub(super) const VERSION: u32 = 1;
/// Version 1's identity format tag.
const IDENTITY_FORMAT: u8 = 1;

/// Rewrites every version-1 value of `txn`'s tables in the current
/// encoding. The caller records the new schema version in the same
/// transaction.
pub(super) fn migrate(op: &Op<'_>, txn: &WriteTransaction) -> Result<(), DbError> {
    let enc = |what: &'static str| move |reason: String| op.encode(what, reason);
    {
        let mut table = txn.open_table(IDENTITY).map_err(op.st())?;
        let old = table.get(IDENTITY_KEY).map_err(op.st())?.map(|v| v.value().to_vec());
        if let Some(old) = old {
            let id = decode_identity(&old).map_err(|r| op.corrupt("schema 1 identity", r))?;
            let new = rows::encode_identity(&id).map_err(enc("identity"))?;
            table.insert(IDENTITY_KEY, new.as_slice()).map_err(op.st())?;
        }
    }
    {
        let mut table = txn.open_table(HOST_CACHE).map_err(op.st())?;
        let mut old = Vec::new();
        for item in table.iter().map_err(op.st())? {
            let (k, v) = item.map_err(op.st())?;
            old.push(decode_host(k.value(), v.value()).map_err(|r| op.corrupt("schema 1 host cache entry", r))?);
        }
        for e in old {
            let new = rows::encode_host(&e).map_err(enc("host cache entry"))?;
            table.insert(e.node_id.0.as_slice(), new.as_slice()).map_err(op.st())?;
        }
    }
    {
        let mut table = txn.open_table(RECORDS).map_err(op.st())?;
        let mut old = Vec::new();
        for item in table.iter().map_err(op.st())? {
            let (k, v) = item.map_err(op.st())?;
            old.push((k.value(), decode_record(v.value()).map_err(|r| op.corrupt("schema 1 record", r))?));
        }
        for (index, row) in old {
            let new = rows::encode_record(&row).map_err(enc("record"))?;
            table.insert(index, new.as_slice()).map_err(op.st())?;
        }
    }
    let mut table = txn.open_table(SIP_USERS).map_err(op.st())?;
    let mut old = Vec::new();
    for item in table.iter().map_err(op.st())? {
        let (k, v) = item.map_err(op.st())?;
        old.push(decode_sip_user(k.value(), v.value()).map_err(|r| op.corrupt("schema 1 SIP user", r))?);
    }
    for user in old {
        let new = rows::encode_sip_user(&user).map_err(enc("SIP user"))?;
        table.insert(user.aor.as_str(), new.as_slice()).map_err(op.st())?;
    }
    Ok(())
}

pub(super) fn decode_identity(bytes: &[u8]) -> Result<StoredIdentity, String> {
    let mut dec = Dec(bytes);
    let format = dec.u8()?;
    if format != IDENTITY_FORMAT {
        return Err(format!("unknown identity format {format}"));
    }
    let key_pkcs8 = dec.bytes()?.to_vec();
    let cert_der = dec.bytes()?.to_vec();
    let ca_der = dec.bytes()?.to_vec();
    let node_id = rows::node_id(dec.bytes()?)?;
    let user = match dec.u8()? {
        0 => None,
        1 => Some(dec.string()?),
        tag => return Err(format!("bad user tag {tag}")),
    };
    dec.finish()?;
    Ok(StoredIdentity { key_pkcs8, cert_der, ca_der, node_id, user })
}

pub(super) fn decode_host(key: &[u8], value: &[u8]) -> Result<HostCacheEntry, String> {
    let node_id = rows::node_id(key)?;
    let mut dec = Dec(value);
    let addr_text = dec.string()?;
    let addr = addr_text.parse().map_err(|_| format!("bad socket address {addr_text:?}"))?;
    let last_seen_unix_s = dec.u64()?;
    dec.finish()?;
    Ok(HostCacheEntry { node_id, addr, last_seen_unix_s })
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<RecordRow, String> {
    let mut dec = Dec(bytes);
    let resource = dec.bytes()?.to_vec();
    let kind = dec.u32()?;
    let data = dec.bytes()?.to_vec();
    dec.finish()?;
    Ok(RecordRow { resource, kind, data })
}

pub(super) fn decode_sip_user(aor: &str, bytes: &[u8]) -> Result<SipUser, String> {
    let mut dec = Dec(bytes);
    let realm = dec.string()?;
    let ha1_md5 = dec.string()?;
    let ha1_sha256 = dec.string()?;
    let created_unix_s = dec.u64()?;
    dec.finish()?;
    Ok(SipUser { aor: aor.to_owned(), realm, ha1_md5, ha1_sha256, created_unix_s })
}

/// Reader of the version-1 encoding; every read is bounds-checked.
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
