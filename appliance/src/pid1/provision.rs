//! What the installer hands the appliance at its first boot, as files in `provision/` on the
//! data disk (the QEMU bench writes them with `mke2fs -d`): the first administrator's password
//! (`admin-password`, one line) and, optionally, the HTTPS door's certificate and key
//! (`tls-cert`, `tls-key`, PEM). Nothing provisioned is written to the console or the journal:
//! the password reaches the journal as its argon2 hash only, and its file is removed once the
//! account exists.

use std::path::{Path, PathBuf};

use crate::model::Secret;

/// The data disk's provisioning directory.
pub const DISK_DIR: &str = "provision";

pub const ADMIN_PASSWORD: &str = "admin-password";
pub const TLS_CERT: &str = "tls-cert";
pub const TLS_KEY: &str = "tls-key";

/// Longest provisioned password accepted (the password policy's own limit is lower).
const PASSWORD_BYTES_MAX: u64 = 1024;

/// Where provisioned items are looked for.
#[derive(Debug, Clone)]
pub struct Provision {
    dir: PathBuf,
}

/// What was provisioned.
#[derive(Debug, Default)]
pub struct Provisioned {
    pub admin_password: Option<Secret>,
    /// Certificate and key files (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Items present but unusable, for the boot log (never their content).
    pub problems: Vec<String>,
}

impl Provision {
    pub fn new(data_dir: &Path) -> Provision {
        Provision {
            dir: data_dir.join(DISK_DIR),
        }
    }

    fn find(&self, item: &str) -> Option<PathBuf> {
        Some(self.dir.join(item)).filter(|p| p.is_file())
    }

    /// Removes the provisioned password (once `admin` exists, it is no longer needed).
    pub fn forget_password(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(ADMIN_PASSWORD)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn read(&self) -> Provisioned {
        let mut found = Provisioned::default();
        if let Some(path) = self.find(ADMIN_PASSWORD) {
            match read_password(&path) {
                Ok(password) => found.admin_password = Some(password),
                Err(problem) => found.problems.push(problem),
            }
        }
        match (self.find(TLS_CERT), self.find(TLS_KEY)) {
            (Some(cert), Some(key)) => found.tls = Some((cert, key)),
            (None, None) => {}
            (Some(_), None) => found.problems.push(format!(
                "{TLS_CERT} is provisioned without {TLS_KEY}: ignored"
            )),
            (None, Some(_)) => found.problems.push(format!(
                "{TLS_KEY} is provisioned without {TLS_CERT}: ignored"
            )),
        }
        found
    }
}

/// The password in `path`: one line, its newline dropped.
fn read_password(path: &Path) -> Result<Secret, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(PASSWORD_BYTES_MAX + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > PASSWORD_BYTES_MAX {
        return Err(format!(
            "{}: longer than {PASSWORD_BYTES_MAX} bytes",
            path.display()
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() || line.contains('\n') {
        return Err(format!("{}: not one line of text", path.display()));
    }
    Ok(Secret(line.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_read_and_bad_ones_named_not_shown() {
        let data = tempfile::tempdir().expect("tempdir");
        let provision = Provision::new(data.path());
        assert!(provision.read().admin_password.is_none());
        let dir = data.path().join(DISK_DIR);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(ADMIN_PASSWORD), "from-the-disk\n").expect("write");
        let found = provision.read();
        assert_eq!(
            found.admin_password.map(|s| s.0).as_deref(),
            Some("from-the-disk")
        );
        assert!(found.problems.is_empty());

        std::fs::write(dir.join(ADMIN_PASSWORD), "two\nlines-secret\n").expect("write");
        let found = provision.read();
        assert!(found.admin_password.is_none());
        assert_eq!(found.problems.len(), 1);
        assert!(
            found.problems[0].contains("not one line"),
            "{:?}",
            found.problems
        );
        assert!(
            !found.problems[0].contains("lines-secret"),
            "never the content"
        );
        provision.forget_password().expect("forget");
        assert!(!dir.join(ADMIN_PASSWORD).exists());
        provision
            .forget_password()
            .expect("forgetting twice is fine");

        std::fs::write(dir.join(TLS_CERT), "pem").expect("write");
        let found = provision.read();
        assert!(found.tls.is_none());
        assert!(found.problems.iter().any(|p| p.contains("without tls-key")));
        std::fs::write(dir.join(TLS_KEY), "pem").expect("write");
        assert!(provision.read().tls.is_some());
    }
}
