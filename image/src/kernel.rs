//! The pinned Debian kernel package: fetch it with `apt-get download` into a cache directory,
//! verify its sha256, and extract it with `dpkg-deb -x` (reused offline once cached).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tracing::{info, info_span};

/// A Debian kernel package, pinned by name, version and the sha256 of its `.deb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPackage {
    /// Debian package name, e.g. `linux-image-6.1.0-50-amd64`.
    pub package: String,
    /// Debian version of the package, e.g. `6.1.176-1`.
    pub version: String,
    /// The kernel release (`uname -r`), also the directory under `/lib/modules`.
    pub release: String,
    /// sha256 of the `.deb`, lowercase hex.
    pub sha256: String,
}

impl KernelPackage {
    /// The kernel this image is built from: Debian bookworm's 6.1 from the main archive (point
    /// release 12.x), which stays downloadable longer than a security update does.
    pub fn pinned() -> KernelPackage {
        KernelPackage {
            package: "linux-image-6.1.0-50-amd64".into(),
            version: "6.1.176-1".into(),
            release: "6.1.0-50-amd64".into(),
            sha256: "7b5597492a0a65aee61985a492e6bcc3f2cde830072a0e3b3d8c7e1b90279bd3".into(),
        }
    }

    /// The file name `apt-get download` gives the package.
    pub fn deb_file_name(&self) -> String {
        // apt escapes ':' in versions (epochs) as %3a; the pinned versions have no epoch.
        format!(
            "{}_{}_amd64.deb",
            self.package,
            self.version.replace(':', "%3a")
        )
    }
}

/// Errors of fetching, verifying and extracting the kernel package.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("create kernel cache directory {path}")]
    CreateCache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run `apt-get download {package}={version}` in {cache}: {reason}")]
    Download {
        package: String,
        version: String,
        cache: PathBuf,
        reason: String,
    },
    #[error(
        "kernel package {file} is not in the cache {cache} and fetching is disabled; \
         run `cargo run --release -p image -- fetch-kernel` (needs Debian's package mirror)"
    )]
    Missing { file: String, cache: PathBuf },
    #[error("read kernel package {path}")]
    ReadDeb {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "kernel package {path} has sha256 {actual}, expected {expected} (deleted it; fetch again)"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("extract kernel package {path} with dpkg-deb -x into {dest}: {reason}")]
    Extract {
        path: PathBuf,
        dest: PathBuf,
        reason: String,
    },
    #[error("extracted kernel package {dir} lacks {what}")]
    Incomplete { dir: PathBuf, what: PathBuf },
}

/// A kernel package extracted in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedKernel {
    pub release: String,
    /// The bzImage (`boot/vmlinuz-<release>`).
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules_dir: PathBuf,
}

/// Ensures the pinned `.deb` is in `cache` with the right sha256; downloads it when missing and
/// `allow_fetch` is set. Returns its path.
pub fn ensure_deb(
    pkg: &KernelPackage,
    cache: &Path,
    allow_fetch: bool,
) -> Result<PathBuf, KernelError> {
    let _span =
        info_span!("ensure_kernel_deb", package = %pkg.package, version = %pkg.version).entered();
    fs::create_dir_all(cache).map_err(|source| KernelError::CreateCache {
        path: cache.into(),
        source,
    })?;
    let _lock = lock_cache(cache)?;
    let deb = cache.join(pkg.deb_file_name());
    if !deb.exists() {
        if !allow_fetch {
            return Err(KernelError::Missing {
                file: pkg.deb_file_name(),
                cache: cache.into(),
            });
        }
        download(pkg, cache)?;
    }
    verify_sha256(&deb, &pkg.sha256)?;
    Ok(deb)
}

fn download(pkg: &KernelPackage, cache: &Path) -> Result<(), KernelError> {
    info!(cache = %cache.display(), "downloading kernel package");
    let spec = format!("{}={}", pkg.package, pkg.version);
    let err = |reason: String| KernelError::Download {
        package: pkg.package.clone(),
        version: pkg.version.clone(),
        cache: cache.into(),
        reason,
    };
    let out = Command::new("apt-get")
        .args(["download", "-q", &spec])
        .current_dir(cache)
        .output()
        .map_err(|e| err(format!("cannot run apt-get: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(err(format!(
            "{}: {} (run `apt-get update` first if the package is unknown)",
            out.status,
            stderr.trim()
        )));
    }
    if !cache.join(pkg.deb_file_name()).exists() {
        return Err(err(format!(
            "apt-get succeeded but {} is not there",
            pkg.deb_file_name()
        )));
    }
    Ok(())
}

/// Checks the sha256 of `path`; on a mismatch deletes the file (so the next fetch replaces it).
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), KernelError> {
    let actual = sha256_file(path)?;
    if actual != expected.to_ascii_lowercase() {
        let _ = fs::remove_file(path);
        return Err(KernelError::Checksum {
            path: path.into(),
            expected: expected.into(),
            actual,
        });
    }
    Ok(())
}

/// The sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, KernelError> {
    let read_err = |source| KernelError::ReadDeb {
        path: path.into(),
        source,
    };
    let mut file = fs::File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extracts a verified `.deb` into `cache/<package>_<version>/` (once; a `.complete` marker says it
/// finished) and returns where the kernel and its modules are.
pub fn extract(
    pkg: &KernelPackage,
    deb: &Path,
    cache: &Path,
) -> Result<ExtractedKernel, KernelError> {
    let _span = info_span!("extract_kernel", deb = %deb.display()).entered();
    let dest = cache.join(format!("{}_{}", pkg.package, pkg.version));
    let marker = dest.join(".complete");
    let _lock = lock_cache(cache)?;
    if !marker.exists() {
        let tmp = cache.join(format!(".extract-{}-{}", pkg.package, std::process::id()));
        let err = |reason: String| KernelError::Extract {
            path: deb.into(),
            dest: dest.clone(),
            reason,
        };
        let _ = fs::remove_dir_all(&tmp);
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&tmp)
            .output()
            .map_err(|e| err(format!("cannot run dpkg-deb: {e}")))?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        fs::write(tmp.join(".complete"), b"").map_err(|e| err(format!("write marker: {e}")))?;
        let _ = fs::remove_dir_all(&dest);
        fs::rename(&tmp, &dest)
            .map_err(|e| err(format!("rename {} into place: {e}", tmp.display())))?;
    }
    located(&dest, &pkg.release)
}

fn located(dir: &Path, release: &str) -> Result<ExtractedKernel, KernelError> {
    let vmlinuz = dir.join(format!("boot/vmlinuz-{release}"));
    let modules_dir = dir.join(format!("lib/modules/{release}"));
    for what in [&vmlinuz, &modules_dir] {
        if !what.exists() {
            return Err(KernelError::Incomplete {
                dir: dir.into(),
                what: what.clone(),
            });
        }
    }
    Ok(ExtractedKernel {
        release: release.into(),
        vmlinuz,
        modules_dir,
    })
}

/// Serializes downloads and extractions into one cache (tests and builds run concurrently).
fn lock_cache(cache: &Path) -> Result<nix::fcntl::Flock<fs::File>, KernelError> {
    let path = cache.join(".cache.lock");
    let lock_err = |source| KernelError::CreateCache {
        path: path.clone(),
        source,
    };
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_err)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| lock_err(errno.into()))
}
