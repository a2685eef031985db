//! The console's PIN: set at the console's first start (asked twice) or provisioned from a
//! file the operator supplies, stored as an argon2id hash in `DATA_DIR/console-pin` (mode
//! 0600) with the count of wrong tries and the end of a lockout, so that restarting the console
//! (the supervisor does when it dies) gives no new tries.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::password_hash::PasswordHasher;
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use crate::api::auth::verify_password;

/// The PIN file's name in the data directory.
pub const PIN_FILE: &str = "console-pin";
/// Wrong PINs in a row that lock the console.
pub const TRIES_MAX: u32 = 5;
/// How long the console stays locked after them, by default.
pub const LOCKOUT_DEFAULT: Duration = Duration::from_secs(300);

/// Why a PIN was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("a PIN is 4 to 12 digits")]
    Malformed,
    #[error("wrong PIN ({left} tries left before the console locks)")]
    Wrong { left: u32 },
    #[error("the console is locked for {seconds} s more after {TRIES_MAX} wrong PINs")]
    Locked { seconds: u64 },
    #[error("no PIN is set")]
    NotSet,
    #[error("the PIN file {path}: {reason}")]
    Store { path: String, reason: String },
}

/// What the PIN file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    /// The PIN's argon2id hash (a PHC string).
    hash: String,
    /// Wrong PINs since the last right one.
    failures: u32,
    /// When a lockout ends (ms since the epoch; 0: none).
    locked_until_ms: u64,
}

/// The PIN of the console of one data directory.
#[derive(Debug, Clone)]
pub struct PinStore {
    path: PathBuf,
    lockout: Duration,
}

/// Whether `pin` has the PIN's form: 4 to 12 ASCII digits.
pub fn well_formed(pin: &str) -> bool {
    (4..=12).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

impl PinStore {
    pub fn new(data_dir: &Path) -> PinStore {
        PinStore {
            path: data_dir.join(PIN_FILE),
            lockout: LOCKOUT_DEFAULT,
        }
    }

    /// Sets how long a lockout lasts.
    pub fn with_lockout(mut self, lockout: Duration) -> PinStore {
        self.lockout = lockout;
        self
    }

    pub fn is_set(&self) -> bool {
        self.path.exists()
    }

    /// Sets the PIN (the first start's, or a provisioned one): stores its hash, no wrong tries.
    pub fn set(&self, pin: &str) -> Result<(), PinError> {
        if !well_formed(pin) {
            return Err(PinError::Malformed);
        }
        let hash = Argon2::default()
            .hash_password(pin.as_bytes())
            .map_err(|e| self.error(format!("hash the PIN: {e}")))?
            .to_string();
        self.write(&Stored {
            hash,
            failures: 0,
            locked_until_ms: 0,
        })
    }

    /// Sets the PIN from the first line of `file` when none is set yet; true when it did.
    pub fn provision(&self, file: &Path) -> Result<bool, PinError> {
        if self.is_set() {
            return Ok(false);
        }
        let text = std::fs::read_to_string(file).map_err(|e| PinError::Store {
            path: file.display().to_string(),
            reason: e.to_string(),
        })?;
        self.set(text.lines().next().unwrap_or("").trim())?;
        Ok(true)
    }

    /// Checks `pin` at `now_ms`; a wrong one counts, and the fifth in a row locks the console.
    pub fn check(&self, pin: &str, now_ms: u64) -> Result<(), PinError> {
        let mut stored = self.read()?;
        if stored.locked_until_ms > now_ms {
            return Err(PinError::Locked {
                seconds: (stored.locked_until_ms - now_ms).div_ceil(1000),
            });
        }
        if well_formed(pin) && verify_password(&stored.hash, pin) {
            if stored.failures > 0 || stored.locked_until_ms > 0 {
                stored.failures = 0;
                stored.locked_until_ms = 0;
                self.write(&stored)?;
            }
            return Ok(());
        }
        stored.failures += 1;
        let result = if stored.failures >= TRIES_MAX {
            stored.failures = 0;
            let lockout_ms = u64::try_from(self.lockout.as_millis()).unwrap_or(u64::MAX);
            stored.locked_until_ms = now_ms.saturating_add(lockout_ms);
            PinError::Locked {
                seconds: lockout_ms.div_ceil(1000),
            }
        } else {
            PinError::Wrong {
                left: TRIES_MAX - stored.failures,
            }
        };
        self.write(&stored)?;
        Err(result)
    }

    fn error(&self, reason: String) -> PinError {
        PinError::Store {
            path: self.path.display().to_string(),
            reason,
        }
    }

    fn read(&self) -> Result<Stored, PinError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PinError::NotSet),
            Err(e) => return Err(self.error(e.to_string())),
        };
        serde_json::from_str(&text).map_err(|e| self.error(format!("unreadable: {e}")))
    }

    /// Writes the file whole (a temporary file renamed over it), mode 0600.
    fn write(&self, stored: &Stored) -> Result<(), PinError> {
        let temporary = self.path.with_extension("new");
        let text = serde_json::to_string(stored).map_err(|e| self.error(e.to_string()))?;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        written.map_err(|e| self.error(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn five_wrong_pins_lock_and_a_restart_gives_no_new_tries() {
        let dir = tempfile::tempdir().unwrap();
        let pins = PinStore::new(dir.path()).with_lockout(Duration::from_secs(60));
        assert_eq!(pins.check("1234", 0), Err(PinError::NotSet));
        assert_eq!(pins.set("12a4"), Err(PinError::Malformed));
        assert_eq!(pins.set("123"), Err(PinError::Malformed));
        pins.set("4711").unwrap();
        let file = dir.path().join(PIN_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("4711") && text.contains("$argon2id$"),
            "{text}"
        );
        pins.check("4711", 1_000).unwrap();
        for left in (1..TRIES_MAX).rev() {
            assert_eq!(pins.check("0000", 1_000), Err(PinError::Wrong { left }));
        }
        // The console restarts: the same file, the same count.
        let again = PinStore::new(dir.path()).with_lockout(Duration::from_secs(60));
        assert_eq!(
            again.check("0000", 1_000),
            Err(PinError::Locked { seconds: 60 })
        );
        assert_eq!(
            again.check("4711", 31_000),
            Err(PinError::Locked { seconds: 30 }),
            "even the right PIN waits out the lockout"
        );
        again.check("4711", 61_000).unwrap();
        assert_eq!(
            again.check("0000", 61_000),
            Err(PinError::Wrong { left: 4 })
        );
    }

    #[test]
    fn a_provisioned_pin_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let pins = PinStore::new(dir.path());
        let file = dir.path().join("pin.txt");
        std::fs::write(&file, "98765\n").unwrap();
        assert!(pins.provision(&file).unwrap());
        std::fs::write(&file, "11111\n").unwrap();
        assert!(!pins.provision(&file).unwrap(), "a PIN set is kept");
        pins.check("98765", 0).unwrap();
        let missing = pins.provision(&dir.path().join("absent"));
        assert!(missing.is_ok(), "already set: the file is not read");
    }
}
