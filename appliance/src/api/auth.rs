//! Who is asking, and how the doors check it: the [`Principal`] a door hands to `api::handle`,
//! the password policy and argon2id hashing, session tokens (only their SHA-256 is journaled),
//! the appliance's key that seals TOTP secret keys in the journal, and RFC 6238 codes.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{ApiError, ErrorCode};
use crate::model::{AccountName, AccountRole, Door, Origin, Privilege, Sealed, Secret, TenantName};

/// Shortest password accepted.
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Longest password accepted.
pub const PASSWORD_CHARS_MAX: usize = 128;
/// Random bytes in a session token (hex-encoded: twice as many characters).
pub const TOKEN_BYTES: usize = 32;
/// Random bytes in a session's id (hex-encoded).
pub const SESSION_ID_BYTES: usize = 8;
/// Bytes of a TOTP secret key (RFC 4226 recommends 160 bits).
pub const TOTP_SECRET_BYTES: usize = 20;
/// The key file in the data directory that seals secrets (mode 0600).
pub const KEY_FILE: &str = "secret.key";

/// Who a request comes from, as the door established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// As journaled with every order it gives.
    pub by: Origin,
    pub account: Option<AccountName>,
    pub role: AccountRole,
    /// The tenant whose systems it sees; None = every tenant's.
    pub scope: Option<TenantName>,
    /// It may change its own password and nothing else until it does.
    pub password_change_required: bool,
}

impl Principal {
    /// Root on the box (the control socket, mode 0600), or the appliance itself.
    pub fn root(door: Door) -> Principal {
        Principal {
            by: Origin::door(door),
            account: None,
            role: AccountRole::Administrator,
            scope: None,
            password_change_required: false,
        }
    }

    /// Whether the principal holds `privilege`.
    pub fn has(&self, privilege: Privilege) -> bool {
        self.role.has(privilege)
    }

    /// Refuses a principal without `privilege` (or one that must change its password first).
    pub fn require(&self, privilege: Privilege) -> Result<(), ApiError> {
        if self.password_change_required {
            return Err(ApiError::new(
                ErrorCode::PasswordChangeRequired,
                "the account must change its password first",
            ));
        }
        if !self.has(privilege) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "the {} role lacks the {} privilege",
                    self.role.name(),
                    privilege.name()
                ),
            ));
        }
        Ok(())
    }

    /// Whether the principal is `account`.
    pub fn is(&self, account: &AccountName) -> bool {
        self.account.as_ref() == Some(account)
    }
}

/// Refuses a password that does not meet the policy: 12 to 128 characters, at least three of
/// lower case, upper case, digits and other characters.
pub fn check_policy(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&chars) {
        return Err(ApiError::new(
            ErrorCode::PasswordPolicy,
            format!(
                "a password has {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters; this one has {chars}"
            ),
        ));
    }
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ];
    if classes.iter().filter(|c| **c).count() < 3 {
        return Err(ApiError::new(
            ErrorCode::PasswordPolicy,
            "a password mixes at least three of: lower case, upper case, digits, other characters",
        ));
    }
    Ok(())
}

/// The argon2id hash (a PHC string) of a password that meets the policy.
pub fn hash_password(password: &Secret) -> Result<String, ApiError> {
    check_policy(&password.0)?;
    Argon2::default()
        .hash_password(password.0.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("hash a password: {e}")))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `count` random bytes from the operating system's generator, hex-encoded.
pub fn random_hex(count: usize) -> String {
    let mut bytes = vec![0u8; count];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// A new session token.
pub fn new_token() -> String {
    random_hex(TOKEN_BYTES)
}

/// A new session id (public, in the session's URI).
pub fn new_session_id() -> String {
    random_hex(SESSION_ID_BYTES)
}

/// SHA-256 of `text`, hex: what the journal keeps of a token.
pub fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// A random password that meets the policy (for the first `admin` when none is given).
pub fn random_password() -> String {
    // 24 characters of base 62 plus the two classes the alphabet may miss.
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let body: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{body}-9a")
}

/// Errors of the appliance's key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("read the key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write the key {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the key {path} is {bytes} bytes, not 32")]
    Size { path: PathBuf, bytes: usize },
}

/// The appliance's key: seals secrets that must be kept (TOTP secret keys) before they reach
/// the journal. Kept in the data directory, readable by root only; made at the first start.
#[derive(Clone)]
pub struct Keyring {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring")
    }
}

impl Keyring {
    /// Opens `DATA_DIR/secret.key`, making it (mode 0600) when it does not exist.
    pub fn open_or_create(data_dir: &Path) -> Result<Keyring, KeyError> {
        let path = data_dir.join(KEY_FILE);
        let key = match std::fs::read(&path) {
            Ok(key) => key,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                write_private(&path, &key).map_err(|source| KeyError::Write {
                    path: path.clone(),
                    source,
                })?;
                key
            }
            Err(source) => return Err(KeyError::Read { path, source }),
        };
        let cipher = ChaCha20Poly1305::new_from_slice(&key).map_err(|_| KeyError::Size {
            path,
            bytes: key.len(),
        })?;
        Ok(Keyring { cipher })
    }

    /// A key for tests.
    pub fn ephemeral() -> Keyring {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Keyring {
            cipher: ChaCha20Poly1305::new_from_slice(&key).unwrap_or_else(|_| unreachable_key()),
        }
    }

    pub fn seal(&self, secret: &[u8]) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt((&nonce).into(), secret)
            .unwrap_or_default();
        Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// The secret, or None when it was not sealed with this key.
    pub fn open(&self, sealed: &Sealed) -> Option<Vec<u8>> {
        let nonce: [u8; 12] = sealed.nonce.as_slice().try_into().ok()?;
        self.cipher
            .decrypt((&nonce).into(), sealed.ciphertext.as_slice())
            .ok()
    }
}

/// A 32-byte key always makes a cipher; this is never reached.
fn unreachable_key() -> ChaCha20Poly1305 {
    panic!("a 32-byte key is refused by ChaCha20Poly1305")
}

/// Writes `bytes` to a new file readable by its owner only, durably.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A new TOTP secret key.
pub fn new_totp_secret() -> Vec<u8> {
    let mut secret = vec![0u8; TOTP_SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// The secret key as authenticator apps take it (base32, RFC 4648, no padding).
pub fn totp_secret_base32(secret: &[u8]) -> String {
    totp_rs::Secret::from(secret.to_vec()).to_base32()
}

/// RFC 6238 with the usual parameters (SHA-1, 6 digits, 30 s steps, one step of skew).
fn totp(secret: &[u8]) -> Option<totp_rs::Totp> {
    totp_rs::Builder::new()
        .with_secret(secret.to_vec())
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .build()
        .ok()
}

/// Whether `code` is the secret's code at `now_s` (seconds since the Unix epoch), one step
/// either side.
pub fn check_totp(secret: &[u8], code: &str, now_s: u64) -> bool {
    totp(secret).is_some_and(|t| t.check(code.trim(), now_s).is_some())
}

/// The secret's code at `now_s` (for tests and for a person setting up an app).
pub fn totp_code(secret: &[u8], now_s: u64) -> Option<String> {
    totp(secret).map(|t| t.generate(now_s).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_what_is_wrong() {
        assert!(check_policy("Sh0rt!").is_err());
        assert!(check_policy("alllowercaseletters").is_err());
        assert!(check_policy("rfpvA1b2C3d4-e5F6").is_ok());
        assert!(check_policy(&random_password()).is_ok());
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password(&Secret("Correct-Horse-7".into())).expect("hashed");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "Correct-Horse-7"));
        assert!(!verify_password(&hash, "Correct-Horse-8"));
        assert!(!verify_password("not a hash", "Correct-Horse-7"));
    }

    #[test]
    fn sealed_secrets_open_with_their_key_only() {
        let keyring = Keyring::ephemeral();
        let sealed = keyring.seal(b"totp secret");
        assert_eq!(keyring.open(&sealed).as_deref(), Some(&b"totp secret"[..]));
        assert_eq!(Keyring::ephemeral().open(&sealed), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Keyring::open_or_create(dir.path()).expect("made");
        let again = Keyring::open_or_create(dir.path()).expect("read");
        assert_eq!(again.open(&first.seal(b"x")).as_deref(), Some(&b"x"[..]));
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("metadata");
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn totp_codes_check_within_one_step() {
        let secret = new_totp_secret();
        let now = 1_796_150_353;
        let code = totp_code(&secret, now).expect("code");
        assert!(check_totp(&secret, &code, now));
        assert!(check_totp(&secret, &code, now + 30));
        assert!(!check_totp(&secret, &code, now + 120));
        assert!(!check_totp(&secret, "000000x", now));
        assert_eq!(totp_secret_base32(&secret).len(), 32);
    }
}
