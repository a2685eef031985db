//! Loading a kernel module from its file (`finit_module`), as PID 1 does for the modules the
//! image ships.

use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use tracing::info_span;

/// Errors of loading a module; each names the call and the module's file.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("finit_module {path}")]
    Load {
        path: String,
        #[source]
        source: nix::Error,
    },
}

/// What loading a module did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Now,
    /// It was loaded already (EEXIST): built in, or loaded as another module's dependency.
    Already,
}

/// Loads the module in `path` (a `.ko`) with no parameters.
pub fn load(path: &Path) -> Result<Loaded, ModuleError> {
    let _span = info_span!("module_load", path = %path.display()).entered();
    let file = File::open(path).map_err(|source| ModuleError::Open {
        path: path.display().to_string(),
        source,
    })?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) => Ok(Loaded::Now),
        Err(Errno::EEXIST) => Ok(Loaded::Already),
        Err(source) => Err(ModuleError::Load {
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_refused_naming_it() {
        match load(Path::new("/lib/modules/no-such-module.ko")) {
            Err(ModuleError::Open { path, source }) => {
                assert_eq!(path, "/lib/modules/no-such-module.ko");
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected Open, got {other:?}"),
        }
    }

    /// The kernel refuses a file that is not an ELF module (ENOEXEC), or anyone without
    /// CAP_SYS_MODULE (EPERM) before reading it: either way nothing is loaded.
    #[test]
    fn a_file_that_is_not_a_module_is_refused_by_finit_module() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-module.ko");
        std::fs::write(&path, b"this is not an ELF file").unwrap();
        match load(&path) {
            Err(ModuleError::Load {
                path: named,
                source,
            }) => {
                assert_eq!(named, path.display().to_string());
                assert_ne!(source, Errno::EEXIST, "EEXIST would mean loaded already");
            }
            other => panic!("expected Load, got {other:?}"),
        }
    }
}
