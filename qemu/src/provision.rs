//! What the bench hands a fresh appliance, as an installer would: a data disk made on the host
//! (`mke2fs -t ext4 -L appliance-data -d TREE`) holding `provision/admin-password` (a random
//! password meeting the appliance's policy) and `provision/tls-cert` / `provision/tls-key` (a
//! self-signed certificate for `localhost` and `127.0.0.1`, made with rcgen). PID 1 reads them at
//! its first start and removes the password file once the account exists
//! (`appliance::pid1::provision`).
//!
//! The bench keeps its own copies beside the data disk, readable by their owner only:
//! `admin-password` (what a person logs in with) and `tls-cert.pem` (what clients pin; the key
//! stays on the data disk only). A data disk that already exists is left as it is, and its
//! copies are read back.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::RngCore;

/// The label PID 1 looks for on its data disk (`appliance::pid1::disk::DATA_LABEL`).
pub const DATA_LABEL: &str = "appliance-data";
/// The directory of the data disk PID 1 reads provisioned items from.
pub const DISK_DIR: &str = "provision";
/// The host names the bench's certificate is valid for (the forwarded port is on 127.0.0.1).
pub const CERT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Errors provisioning a data disk.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{operation} {path}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("make the bench's TLS certificate: {0}")]
    Certificate(String),
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Tool(#[from] image::ToolError),
}

/// The secrets of one data disk, as the bench holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account the password is for.
    pub account: String,
    pub admin_password: String,
    /// The appliance's certificate (PEM), to pin.
    pub cert_pem: String,
    /// Where the bench keeps them (mode 0600).
    pub password_file: PathBuf,
    pub cert_file: PathBuf,
}

/// The bench's copies of a data disk's secrets: `admin-password` and `tls-cert.pem` in the
/// disk's directory.
pub fn credential_files(data_disk: &Path) -> (PathBuf, PathBuf) {
    let dir = data_disk.parent().unwrap_or(Path::new("."));
    (dir.join("admin-password"), dir.join("tls-cert.pem"))
}

/// A random password meeting the appliance's policy (12 to 128 characters, three classes):
/// 24 characters of base 56 (no look-alikes) and a fixed tail that adds the classes it may miss.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let body: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{body}-7Q")
}

/// The data disk's credentials: made with a new disk when `data_disk` does not exist (sparse,
/// `bytes` long), else read back from the bench's copies (None when the bench has none: a disk
/// it did not make, such as a test's foreign disk).
pub fn ensure(data_disk: &Path, bytes: u64) -> Result<Option<Credentials>, ProvisionError> {
    let (password_file, cert_file) = credential_files(data_disk);
    if data_disk.exists() {
        return Ok(read(password_file, cert_file));
    }
    let dir = data_disk.parent().unwrap_or(Path::new("."));
    let tree = dir.join(".provision");
    let _ = std::fs::remove_dir_all(&tree);
    let made = create(data_disk, bytes, &tree);
    let _ = std::fs::remove_dir_all(&tree);
    made.map(Some)
}

/// Makes a fresh `bytes`-long ext4 data disk at `disk` from `tree` (created when missing; a
/// journal's data directory when the bench replays one) with the provisioning items added, and
/// the bench's copies of its secrets beside the disk.
pub fn create(disk: &Path, bytes: u64, tree: &Path) -> Result<Credentials, ProvisionError> {
    let (password_file, cert_file) = credential_files(disk);
    let password = random_password();
    let made = rcgen::generate_simple_self_signed(CERT_NAMES.map(String::from).to_vec())
        .map_err(|e| ProvisionError::Certificate(e.to_string()))?;
    let cert_pem = made.cert.pem();
    let items = tree.join(DISK_DIR);
    std::fs::create_dir_all(&items).map_err(io("create", &items))?;
    write_private(&items.join("admin-password"), &format!("{password}\n"))?;
    write_private(&items.join("tls-cert"), &cert_pem)?;
    write_private(&items.join("tls-key"), &made.signing_key.serialize_pem())?;
    make_disk(disk, bytes, tree)?;
    write_private(&password_file, &format!("{password}\n"))?;
    write_private(&cert_file, &cert_pem)?;
    Ok(Credentials {
        account: "admin".into(),
        admin_password: password,
        cert_pem,
        password_file,
        cert_file,
    })
}

fn make_disk(disk: &Path, bytes: u64, tree: &Path) -> Result<(), ProvisionError> {
    let _ = std::fs::remove_file(disk);
    std::fs::File::create(disk)
        .and_then(|f| f.set_len(bytes))
        .map_err(io("create", disk))?;
    let mke2fs = image::tools::find_tool("mke2fs", "e2fsprogs")?;
    let mut command = Command::new(&mke2fs);
    command
        .args(["-q", "-F", "-t", "ext4", "-L", DATA_LABEL, "-d"])
        .arg(tree)
        .arg(disk);
    let out = command.output().map_err(io("run", &mke2fs))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(disk);
        return Err(ProvisionError::Failed {
            command: format!("{command:?}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        });
    }
    Ok(())
}

fn read(password_file: PathBuf, cert_file: PathBuf) -> Option<Credentials> {
    let password = std::fs::read_to_string(&password_file).ok()?;
    let cert_pem = std::fs::read_to_string(&cert_file).ok()?;
    Some(Credentials {
        account: "admin".into(),
        admin_password: password.lines().next().unwrap_or("").to_string(),
        cert_pem,
        password_file,
        cert_file,
    })
}

/// Creates `path` with mode 0600 (replacing it) and writes `text`.
fn write_private(path: &Path, text: &str) -> Result<(), ProvisionError> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    file.write_all(text.as_bytes()).map_err(io("write", path))
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError {
    let path = path.to_path_buf();
    move |source| ProvisionError::Io {
        operation,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_random_password_meets_the_policy() {
        let password = random_password();
        assert!((12..=128).contains(&password.chars().count()));
        let classes = [
            password.chars().any(|c| c.is_ascii_lowercase()),
            password.chars().any(|c| c.is_ascii_uppercase()),
            password.chars().any(|c| c.is_ascii_digit()),
            password.chars().any(|c| !c.is_ascii_alphanumeric()),
        ];
        assert!(classes.iter().filter(|c| **c).count() >= 3, "{password}");
        assert_ne!(password, random_password());
    }

    #[test]
    fn a_new_disk_holds_the_items_and_the_bench_keeps_private_copies() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("data.img");
        let made = ensure(&disk, 64 << 20).unwrap().unwrap();
        use std::os::unix::fs::PermissionsExt;
        for file in [&made.password_file, &made.cert_file] {
            let mode = std::fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        assert!(made.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // What is on the disk, read with debugfs (no mount needed).
        let cat = |item: &str| {
            let out = Command::new(image::tools::find_tool("debugfs", "e2fsprogs").unwrap())
                .args(["-R", &format!("cat /provision/{item}")])
                .arg(&disk)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        assert_eq!(cat("admin-password").trim_end(), made.admin_password);
        assert_eq!(cat("tls-cert"), made.cert_pem);
        assert!(cat("tls-key").contains("PRIVATE KEY"));
        // A second call reads the same secrets back and leaves the disk alone.
        let again = ensure(&disk, 64 << 20).unwrap().unwrap();
        assert_eq!(again, made);
    }

    #[test]
    fn a_disk_the_bench_did_not_make_has_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("data.img");
        std::fs::write(&disk, b"random").unwrap();
        assert_eq!(ensure(&disk, 1 << 20).unwrap(), None);
        assert_eq!(std::fs::read(&disk).unwrap(), b"random");
    }
}
