//! Host programs shipped in the image with their shared libraries and the dynamic loader
//! (`mke2fs`, so PID 1 can format the data disk), and the static appliance binary as `/init`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object};
use tracing::{info, info_span};

/// Errors of finding host tools and building the static appliance.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} not found in {searched}; install it with `apt-get install -y {package}`")]
    NotInstalled {
        tool: String,
        searched: String,
        package: String,
    },
    #[error("run ldd on {path}: {reason}")]
    Ldd { path: PathBuf, reason: String },
    #[error("ldd output for {path}, line {line:?}: cannot parse it")]
    LddLine { path: PathBuf, line: String },
    #[error("build the static appliance binary (`cargo build --release -p appliance`, target dir {target_dir}): {reason}")]
    BuildAppliance { target_dir: PathBuf, reason: String },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a static x86_64 ELF executable: {reason}")]
    NotStatic { path: PathBuf, reason: String },
}

/// Finds `tool` in the usual sbin/bin directories.
pub fn find_tool(tool: &str, package: &str) -> Result<PathBuf, ToolError> {
    let dirs = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
    dirs.iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| ToolError::NotInstalled {
            tool: tool.into(),
            searched: dirs.join(":"),
            package: package.into(),
        })
}

/// Parses `ldd` output into the absolute paths of the libraries and loader it names (vdso left
/// out), in the order given.
pub fn parse_ldd(output: &str, path: &Path) -> Result<Vec<PathBuf>, ToolError> {
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad = || ToolError::LddLine {
            path: path.into(),
            line: line.into(),
        };
        if line.starts_with("linux-vdso") || line.starts_with("linux-gate") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let file = target.split_whitespace().next().ok_or_else(bad)?;
        if file == "not" {
            return Err(ToolError::Ldd {
                path: path.into(),
                reason: format!("missing library: {line}"),
            });
        }
        if !file.starts_with('/') {
            return Err(bad());
        }
        libs.push(PathBuf::from(file));
    }
    Ok(libs)
}

/// The shared libraries (and loader) `program` needs, from `ldd`.
pub fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, ToolError> {
    let err = |reason: String| ToolError::Ldd {
        path: program.into(),
        reason,
    };
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| err(format!("cannot run ldd: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_ldd(&String::from_utf8_lossy(&out.stdout), program)
}

/// RUSTFLAGS of the nested build: static glibc, and no DWARF in /init (the release profile's line
/// tables make the binary ~40 MB, which QEMU's firmware loads slowly; symbols stay for backtraces).
pub const APPLIANCE_RUSTFLAGS: &str = "-C target-feature=+crt-static -C strip=debuginfo";

/// Builds the appliance binary statically (`+crt-static` on x86_64-unknown-linux-gnu) with its
/// own target directory, so this nested cargo never waits on an outer cargo's lock. The firmware
/// carries no simulated fabric (`appliance`'s feature `sim` is off).
pub fn build_static_appliance(workspace: &Path, target_dir: &Path) -> Result<PathBuf, ToolError> {
    let _span = info_span!("build_static_appliance", target_dir = %target_dir.display()).entered();
    info!("cargo build --release -p appliance (static)");
    let args = [
        "--no-default-features",
        "--target",
        "x86_64-unknown-linux-gnu",
    ];
    cargo_build_appliance(workspace, target_dir, &args, Some(APPLIANCE_RUSTFLAGS))?;
    let binary = target_dir.join("x86_64-unknown-linux-gnu/release/appliance");
    check_static(&binary)?;
    Ok(binary)
}

/// Builds the appliance binary for this host as `cargo build --release` does (the simulated
/// fabric and synthetic journals included) into `target_dir`; returns its path.
pub fn build_host_appliance(workspace: &Path, target_dir: &Path) -> Result<PathBuf, ToolError> {
    let _span = info_span!("build_host_appliance", target_dir = %target_dir.display()).entered();
    cargo_build_appliance(workspace, target_dir, &[], None)?;
    Ok(target_dir.join("release/appliance"))
}

/// `cargo build --release -p appliance --bin appliance EXTRA` in `workspace`.
fn cargo_build_appliance(
    workspace: &Path,
    target_dir: &Path,
    extra: &[&str],
    rustflags: Option<&str>,
) -> Result<(), ToolError> {
    let err = |reason: String| ToolError::BuildAppliance {
        target_dir: target_dir.into(),
        reason,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "-p",
            "appliance",
            "--bin",
            "appliance",
        ])
        .args(extra)
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET");
    if let Some(flags) = rustflags {
        command.env("RUSTFLAGS", flags);
    }
    let status = command
        .status()
        .map_err(|e| err(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(err(format!(
            "cargo exited with {status}; its errors are above"
        )));
    }
    Ok(())
}

/// Checks that `path` is a 64-bit ELF executable with no program interpreter (statically linked).
pub fn check_static(path: &Path) -> Result<(), ToolError> {
    let data = fs::read(path).map_err(|source| ToolError::Read {
        path: path.into(),
        source,
    })?;
    let not_static = |reason: String| ToolError::NotStatic {
        path: path.into(),
        reason,
    };
    let elf = ElfFile64::<Endianness>::parse(&*data)
        .map_err(|e| not_static(format!("not ELF64: {e}")))?;
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(not_static(format!("architecture {:?}", elf.architecture())));
    }
    let endian = elf.endian();
    for segment in elf.elf_program_headers() {
        if segment.p_type(endian) == object::elf::PT_INTERP {
            return Err(not_static("it has a PT_INTERP (dynamic loader)".into()));
        }
    }
    Ok(())
}
