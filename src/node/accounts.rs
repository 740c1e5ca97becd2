//! SIP accounts in `node.db`: the digest hashes (a `sip` type) and the
//! user identity (key and certificate) that signs the AOR's registrations.
//! Shared by the CLI (node stopped) and the running node.

use base64::Engine as _;

use super::db::NodeDb;
use crate::sip::SipUser;

/// The database key of a user's certificate and key.
fn user_identity_key(aor: &str) -> String {
    format!("user-identity:{aor}")
}

/// Stored form of a user identity: base64 key and certificate.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct UserIdentityRecord {
    pub key_b64: String,
    pub cert_b64: String,
}

impl UserIdentityRecord {
    /// (PKCS#8 key, DER certificate), or `None` when either is not base64.
    pub fn decode(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let b64 = base64::engine::general_purpose::STANDARD;
        Some((b64.decode(&self.key_b64).ok()?, b64.decode(&self.cert_b64).ok()?))
    }
}

/// Writes a SIP account and its user identity (the CLI with the node
/// stopped, or the running node).
pub fn save_account(db: &NodeDb, account: &SipUser, record: &UserIdentityRecord) -> anyhow::Result<()> {
    db.put_meta(&user_identity_key(&account.aor), &serde_json::to_vec(record)?)?;
    db.put_sip_user(account)?;
    Ok(())
}

/// Deletes a SIP account and its identity; whether the account existed.
pub fn delete_account(db: &NodeDb, aor: &str) -> anyhow::Result<bool> {
    db.put_meta(&user_identity_key(aor), b"")?;
    Ok(db.remove_sip_user(aor)?)
}

/// The stored user identity of an account, if it has a readable one.
pub fn account_identity(db: &NodeDb, aor: &str) -> Option<UserIdentityRecord> {
    db.meta(&user_identity_key(aor)).ok().flatten().and_then(|b| serde_json::from_slice(&b).ok())
}
