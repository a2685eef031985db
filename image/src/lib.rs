//! Builds the bootable image: Debian kernel, resolved modules, a cpio initramfs whose /init is the appliance, and a data disk.
//!
//! The initramfs layout is a contract with `appliance::pid1` (which cannot depend on this crate):
//! - `/init`: the static appliance binary;
//! - `/lib/modules/<name>.ko` and `/lib/modules/load-order` (one module name per line,
//!   dependencies first);
//! - `/usr/sbin/mke2fs` and `/usr/sbin/mdadm` (the NAS gateway's mirrors) with their libraries at
//!   their host paths and the dynamic loader;
//! - `/etc/appliance/kernel-release`; `/dev/console` (so /init has a console before devtmpfs).

pub mod cpio;
pub mod kernel;
pub mod modules;
pub mod tools;

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tracing::{info, info_span};

pub use kernel::{KernelError, KernelPackage};
pub use modules::ModuleError;
pub use tools::ToolError;

/// Where PID 1 finds the module load order inside the initramfs.
pub const LOAD_ORDER_PATH: &str = "lib/modules/load-order";
/// The base kernel command line: serial console, only the kernel's errors on it (`quiet`: the
/// boot a person watches is PID 1's stage lines, the rest is in dmesg), reboot 1 s after a
/// panic (PID 1 dying is a panic: a hopeless state reboots), and the IOMMU on for vfio when the
/// VM has one.
pub const BASE_CMDLINE: &str = "console=ttyS0 quiet panic=1 intel_iommu=on";
/// Size of the data disk [`create_blank_data_disk`] makes by default.
pub const DATA_DISK_BYTES_DEFAULT: u64 = 1 << 30;

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where the kernel and initramfs are written.
    pub out_dir: PathBuf,
    /// Where the kernel package is downloaded and extracted.
    pub cache_dir: PathBuf,
    /// Whether a missing kernel package may be downloaded (`apt-get download`).
    pub allow_fetch: bool,
    pub kernel: KernelPackage,
    /// Module names to include (dependencies are added).
    pub modules: Vec<String>,
    /// A prebuilt static appliance binary; None builds it with cargo.
    pub appliance_binary: Option<PathBuf>,
    /// The workspace that holds the appliance crate.
    pub workspace_dir: PathBuf,
    /// CARGO_TARGET_DIR of the nested static build.
    pub appliance_target_dir: PathBuf,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        let workspace = workspace_dir();
        let cache_dir = match std::env::var_os("APPLIANCE_IMAGE_CACHE") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => workspace.join("target/image-cache"),
        };
        BuildOptions {
            out_dir: workspace.join("target/image"),
            cache_dir,
            allow_fetch: true,
            kernel: KernelPackage::pinned(),
            modules: modules::APPLIANCE_MODULES
                .iter()
                .map(|m| m.to_string())
                .collect(),
            appliance_binary: None,
            appliance_target_dir: workspace.join("target/image-build"),
            workspace_dir: workspace,
        }
    }
}

/// The workspace root, found from this crate's manifest directory.
pub fn workspace_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub kernel_version: String,
    /// The base kernel command line (append test flags to it).
    pub cmdline: String,
    /// The modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// The statically linked appliance binary in the initramfs (it also runs on the host: the
    /// bench writes synthetic journals with it).
    pub appliance: PathBuf,
}

/// Errors of an image build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Archive(#[from] cpio::CpioError),
    #[error("kernel image {path}: {reason}")]
    KernelImage { path: PathBuf, reason: String },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        op,
        path: path.into(),
        source,
    }
}

/// Builds the kernel and initramfs into `options.out_dir`. Concurrent builds into the same
/// directory are serialized by a lock file; outputs are replaced atomically.
pub fn build(options: &BuildOptions) -> Result<Artifacts, BuildError> {
    let _span = info_span!("image_build", out = %options.out_dir.display()).entered();
    fs::create_dir_all(&options.out_dir)
        .map_err(io_err("create output directory", &options.out_dir))?;
    let _lock = lock_dir(&options.out_dir)?;
    let appliance = match &options.appliance_binary {
        Some(path) => {
            tools::check_static(path)?;
            path.clone()
        }
        None => {
            tools::build_static_appliance(&options.workspace_dir, &options.appliance_target_dir)?
        }
    };
    let deb = kernel::ensure_deb(&options.kernel, &options.cache_dir, options.allow_fetch)?;
    let extracted = kernel::extract(&options.kernel, &deb, &options.cache_dir)?;
    let index = modules::ModuleIndex::scan(&extracted.modules_dir)?;
    let wanted: Vec<&str> = options.modules.iter().map(String::as_str).collect();
    let order = index.resolve(&wanted)?;
    let archive = initramfs(&extracted.release, &appliance, &order)?;
    let initramfs = options.out_dir.join("initramfs.cpio");
    write_atomically(&initramfs, |out| archive.write_to(out).map(|_| ()))?;
    let kernel = options
        .out_dir
        .join(format!("vmlinux-{}", extracted.release));
    let vmlinuz =
        fs::read(&extracted.vmlinuz).map_err(io_err("read kernel", &extracted.vmlinuz))?;
    let vmlinux = uncompressed_kernel(&vmlinuz).map_err(|reason| BuildError::KernelImage {
        path: extracted.vmlinuz.clone(),
        reason,
    })?;
    write_atomically(&kernel, |out| {
        out.write_all(&vmlinux).map_err(cpio::CpioError::Write)
    })?;
    info!(
        modules = order.len(),
        entries = archive.len(),
        "image built"
    );
    Ok(Artifacts {
        kernel,
        initramfs,
        kernel_version: extracted.release,
        cmdline: BASE_CMDLINE.into(),
        modules: order.into_iter().map(|(name, _)| name).collect(),
        appliance,
    })
}

/// The uncompressed ELF kernel inside a bzImage whose payload is xz-compressed (Debian's).
///
/// QEMU boots an ELF kernel with a PVH entry note directly, skipping the real-mode setup and the
/// kernel's self-decompression: under TCG that saves about 3.4 s of every boot (measured: /init
/// reached after 3.0 s instead of 6.4 s of wall time).
pub fn uncompressed_kernel(bzimage: &[u8]) -> Result<Vec<u8>, String> {
    // The boot protocol's setup header (Documentation/arch/x86/boot.rst): setup_sects at 0x1f1,
    // "HdrS" at 0x202, payload_offset and payload_length at 0x248 / 0x24c, relative to the
    // protected-mode code, which starts after (setup_sects + 1) sectors of 512 bytes.
    let u32_at = |at: usize| -> Result<usize, String> {
        let bytes = bzimage.get(at..at + 4).ok_or(format!(
            "{} bytes: too short for a bzImage header",
            bzimage.len()
        ))?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err("no \"HdrS\" boot-protocol signature at byte 0x202".into());
    }
    let setup_sects = usize::from(bzimage[0x1f1]).max(4);
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let length = u32_at(0x24c)?;
    let payload = bzimage.get(start..start + length).ok_or(format!(
        "payload {start}+{length} lies outside the {} bytes",
        bzimage.len()
    ))?;
    if !payload.starts_with(b"\xfd7zXZ\x00") {
        return Err(format!("the payload at byte {start} is not xz-compressed"));
    }
    // The kernel's build appends the uncompressed size (4 bytes, little-endian) to the stream.
    let (stream, size) = payload.split_at(payload.len().saturating_sub(4));
    let size = u32::from_le_bytes(
        size.try_into()
            .map_err(|_| "payload shorter than 4 bytes")?,
    );
    let mut elf = Vec::new();
    // Debian's payload uses the x86 BCJ filter, which liblzma (xz2) decodes.
    std::io::Read::read_to_end(&mut xz2::read::XzDecoder::new(stream), &mut elf)
        .map_err(|e| format!("the xz payload at byte {start} does not decompress: {e}"))?;
    if elf.len() != size as usize {
        return Err(format!(
            "the payload decompressed to {} bytes, its trailer says {size}",
            elf.len()
        ));
    }
    if !elf.starts_with(b"\x7fELF") {
        return Err(format!("the payload at byte {start} is not an ELF kernel"));
    }
    Ok(elf)
}

/// Assembles the initramfs: /init, the modules and their load order, mke2fs and mdadm and their
/// libraries.
pub fn initramfs(
    release: &str,
    appliance: &Path,
    order: &[(String, PathBuf)],
) -> Result<cpio::Archive, BuildError> {
    use cpio::Node;
    let mut archive = cpio::Archive::new();
    for dir in ["proc", "sys", "dev", "run", "data", "tmp"] {
        archive.add(dir, Node::Dir)?;
    }
    archive.add("dev/console", Node::CharDevice { major: 5, minor: 1 })?;
    archive.add("dev/null", Node::CharDevice { major: 1, minor: 3 })?;
    archive.add(
        "init",
        Node::File {
            data: read(appliance)?,
            executable: true,
        },
    )?;
    archive.add(
        "etc/appliance/kernel-release",
        Node::File {
            data: format!("{release}\n").into(),
            executable: false,
        },
    )?;
    let mut load_order = String::new();
    for (name, path) in order {
        archive.add(
            &format!("lib/modules/{name}.ko"),
            Node::File {
                data: read(path)?,
                executable: false,
            },
        )?;
        load_order.push_str(name);
        load_order.push('\n');
    }
    archive.add(
        LOAD_ORDER_PATH,
        Node::File {
            data: load_order.into(),
            executable: false,
        },
    )?;
    add_program(
        &mut archive,
        &tools::find_tool("mke2fs", "e2fsprogs")?,
        "usr/sbin/mke2fs",
    )?;
    add_program(
        &mut archive,
        &tools::find_tool("mdadm", "mdadm")?,
        "usr/sbin/mdadm",
    )?;
    if Path::new("/etc/mke2fs.conf").is_file() {
        archive.add(
            "etc/mke2fs.conf",
            Node::File {
                data: read(Path::new("/etc/mke2fs.conf"))?,
                executable: false,
            },
        )?;
    }
    Ok(archive)
}

fn add_program(archive: &mut cpio::Archive, program: &Path, at: &str) -> Result<(), BuildError> {
    archive.add(
        at,
        cpio::Node::File {
            data: read(program)?,
            executable: true,
        },
    )?;
    for lib in tools::shared_libraries(program)? {
        let data = read(&lib)?;
        archive.add(
            &lib.to_string_lossy(),
            cpio::Node::File {
                data,
                executable: true,
            },
        )?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    fs::read(path).map_err(io_err("read", path))
}

fn write_atomically<F>(path: &Path, write: F) -> Result<(), BuildError>
where
    F: FnOnce(&mut BufWriter<fs::File>) -> Result<(), cpio::CpioError>,
{
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let file = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    let mut out = BufWriter::new(file);
    write(&mut out)?;
    let file = out.into_inner().map_err(|e| BuildError::Io {
        op: "write",
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))
}

fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<fs::File>, BuildError> {
    let path = dir.join(".build.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open lock", &path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
        BuildError::Io {
            op: "flock",
            path,
            source: errno.into(),
        }
    })
}

/// Creates a blank (sparse, all zeros) data disk of `size_bytes` at `path` if none exists; PID 1
/// formats a blank disk on first boot. An existing file is left as it is.
pub fn create_blank_data_disk(path: &Path, size_bytes: u64) -> Result<bool, BuildError> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
    }
    let file = fs::File::create_new(path).map_err(io_err("create data disk", path))?;
    file.set_len(size_bytes)
        .map_err(io_err("size data disk", path))?;
    Ok(true)
}
