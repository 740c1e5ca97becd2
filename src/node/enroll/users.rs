//! The enrollment server's accounts file: user names and salted password
//! hashes, read and written in the overlay directory.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use rand::Rng;
use ring::pbkdf2;
use serde::{Deserialize, Serialize};

use super::EnrollError;
use crate::security::enroll::validate_user_name;

/// PBKDF2-HMAC-SHA256 rounds for new password hashes.
const PBKDF2_ROUNDS: u32 = 100_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// The accounts the enrollment server accepts: user name → salted
/// PBKDF2-HMAC-SHA256 password hash. Stored as TOML in the overlay
/// directory's [`super::USERS_FILE`]:
///
/// ```toml
/// [users]
/// "alice@example.org" = "pbkdf2-sha256$100000$<salt hex>$<hash hex>"
/// ```
#[derive(Clone, Default)]
pub struct EnrollUsers {
    users: BTreeMap<String, PasswordHash>,
}

#[derive(Serialize, Deserialize, Default)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, String>,
}

impl EnrollUsers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a users file.
    pub fn load(path: &Path) -> Result<Self, EnrollError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| EnrollError::Io { what: format!("read {}", path.display()), source })?;
        Self::parse(&text).map_err(|reason| EnrollError::UsersFile { path: path.to_owned(), reason })
    }

    /// Writes the users file (owner-only permissions; written beside it
    /// and renamed into place so a crash never leaves half a file).
    pub fn save(&self, path: &Path) -> Result<(), EnrollError> {
        let file = UsersFile { users: self.users.iter().map(|(u, h)| (u.clone(), h.to_string())).collect() };
        let body = toml::to_string(&file)
            .map_err(|e| EnrollError::UsersFile { path: path.to_owned(), reason: e.to_string() })?;
        let text = format!("# chordphone enrollment accounts (RFC 6940 §11.3); `chordphone overlay` edits it.\n{body}");
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io = |what: &str, source| EnrollError::Io { what: format!("{what} {}", tmp.display()), source };
        write_private(&tmp, text.as_bytes()).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))
    }

    /// Adds `user` or replaces its password. The name must be usable as an
    /// rfc822Name (ASCII, no spaces); the password must not be empty.
    pub fn add(&mut self, user: &str, password: &str) -> Result<(), EnrollError> {
        validate_user_name(user)?;
        if password.is_empty() {
            return Err(EnrollError::EmptyPassword);
        }
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        self.users.insert(user.to_owned(), PasswordHash::new(&salt, password));
        Ok(())
    }

    /// Removes `user`; whether it existed.
    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// Whether `password` is `user`'s. The hash comparison is constant
    /// time, and an unknown user costs the same hashing work as a known
    /// one, so timing tells neither which names exist nor how close a
    /// guess was.
    pub fn check(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(h) => h.verify(password),
            None => {
                let _ = PasswordHash::DUMMY.verify(password);
                false
            }
        }
    }

    /// The user names, sorted.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut users = BTreeMap::new();
        for (name, hash) in file.users {
            validate_user_name(&name).map_err(|e| e.to_string())?;
            let h = PasswordHash::parse(&hash).map_err(|r| format!("user {name:?}: {r}"))?;
            users.insert(name, h);
        }
        Ok(EnrollUsers { users })
    }
}

impl fmt::Debug for EnrollUsers {
    // Names only; hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollUsers").field("users", &self.users.keys().collect::<Vec<_>>()).finish()
    }
}

/// A salted PBKDF2-HMAC-SHA256 hash, written
/// `pbkdf2-sha256$<rounds>$<salt hex>$<hash hex>`.
#[derive(Clone)]
struct PasswordHash {
    rounds: NonZeroU32,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

impl PasswordHash {
    const PREFIX: &'static str = "pbkdf2-sha256";
    /// Checked against for unknown users, so they cost the same time.
    const DUMMY: PasswordHash = PasswordHash {
        rounds: NonZeroU32::MIN.saturating_add(PBKDF2_ROUNDS - 1),
        salt: Vec::new(),
        hash: [0; HASH_LEN],
    };

    fn new(salt: &[u8], password: &str) -> Self {
        let rounds = NonZeroU32::MIN.saturating_add(PBKDF2_ROUNDS - 1);
        let mut hash = [0u8; HASH_LEN];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, password.as_bytes(), &mut hash);
        PasswordHash { rounds, salt: salt.to_vec(), hash }
    }

    fn verify(&self, password: &str) -> bool {
        pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, self.rounds, &self.salt, password.as_bytes(), &self.hash).is_ok()
    }

    fn parse(s: &str) -> Result<Self, &'static str> {
        let mut it = s.split('$');
        if it.next() != Some(Self::PREFIX) {
            return Err("password hash is not pbkdf2-sha256$rounds$salt$hash");
        }
        let rounds = it.next().and_then(|r| r.parse::<NonZeroU32>().ok()).ok_or("bad PBKDF2 round count")?;
        let salt = it.next().and_then(|h| hex::decode(h).ok()).ok_or("bad salt (hex expected)")?;
        let hash = it.next().and_then(|h| hex::decode(h).ok()).ok_or("bad hash (hex expected)")?;
        let hash: [u8; HASH_LEN] = hash.try_into().map_err(|_| "hash is not 32 bytes")?;
        if it.next().is_some() {
            return Err("trailing fields after the hash");
        }
        Ok(PasswordHash { rounds, salt, hash })
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}${}${}${}", Self::PREFIX, self.rounds, hex::encode(&self.salt), hex::encode(self.hash))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::super::USERS_FILE;
    use super::*;

    #[test]
    fn users_check_passwords() {
        let mut users = EnrollUsers::new();
        users.add("alice@example.org", "correct horse").unwrap();
        users.add("bob@example.org", "battery staple").unwrap();
        assert!(users.check("alice@example.org", "correct horse"));
        assert!(!users.check("alice@example.org", "battery staple"));
        assert!(!users.check("alice@example.org", ""));
        assert!(!users.check("carol@example.org", "correct horse"));
        assert!(users.add("has space", "x").is_err());
        assert!(users.add("dave@example.org", "").is_err());
        assert!(users.add("é@example.org", "x").is_err());
        assert!(users.remove("bob@example.org"));
        assert!(!users.check("bob@example.org", "battery staple"));
        assert_eq!(users.users().collect::<Vec<_>>(), ["alice@example.org"]);
        assert!(!format!("{users:?}").contains("pbkdf2"));
    }

    #[test]
    fn users_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USERS_FILE);
        let mut users = EnrollUsers::new();
        users.add("alice@example.org", "s3cret").unwrap();
        users.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"alice@example.org\" = \"pbkdf2-sha256$100000$"));
        assert!(!text.contains("s3cret"));
        let again = EnrollUsers::load(&path).unwrap();
        assert!(again.check("alice@example.org", "s3cret"));
        assert!(!again.check("alice@example.org", "s3cret!"));
        std::fs::write(&path, "[users]\n\"alice@example.org\" = \"md5$abc\"\n").unwrap();
        let err = EnrollUsers::load(&path).unwrap_err().to_string();
        assert!(err.contains("alice@example.org") && err.contains("pbkdf2-sha256"), "{err}");
        assert!(EnrollUsers::load(&dir.path().join("missing")).is_err());
    }
}
