//! Kernel modules for the initramfs: read each module's `.modinfo` (ELF section) for its
//! `depends=`, and order the modules so that every dependency loads before its users.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection};
use tracing::{debug, info_span};

/// Modules the appliance's drivers need, by module name (dependencies are added automatically).
/// Crypto algorithms that the kernel looks up by name (`crc32` for rdma_rxe, `crc32c` for ext4 and
/// jbd2) are listed because there is no modprobe in the image to load them on request; so are
/// vfio_iommu_type1 (requested by vfio) and evdev (the power button's /dev/input/event node);
/// raid1 (with md_mod) carries the NAS gateway's mirrors; virtio_scsi (the bench's HBA) and
/// sd_mod the disks behind its HBA.
pub const APPLIANCE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "nvme",
    "crc32_generic",
    "crc32c_generic",
    "rdma_rxe",
    "ib_uverbs",
    "vfio_pci",
    "vfio_iommu_type1",
    "i6300esb",
    "ext4",
    "raid1",
    "virtio_scsi",
    "sd_mod",
    "button",
    "evdev",
];

/// Limit on the size of one module file read into memory.
pub const MODULE_BYTES_MAX: u64 = 64 << 20;

/// Errors of reading modules and resolving their dependencies.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("list modules under {path}")]
    ListModules {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read module {path}")]
    ReadModule {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("module {path} is {size} bytes, more than {max} bytes")]
    ModuleTooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("parse module {path} as a 64-bit ELF: {reason}")]
    ParseElf { path: PathBuf, reason: String },
    #[error("module {path} has no .modinfo section")]
    NoModinfo { path: PathBuf },
    #[error("module {path}: .modinfo entry {entry:?} is not key=value UTF-8")]
    BadModinfo { path: PathBuf, entry: String },
    #[error(
        "module {path} is compressed ({ext}); this kernel's modules were expected as plain .ko"
    )]
    Compressed { path: PathBuf, ext: String },
    #[error(
        "module {name:?} (needed by {needed_by}) is neither in {dir} nor built into the kernel"
    )]
    NotFound {
        name: String,
        needed_by: String,
        dir: PathBuf,
    },
    #[error("module dependency cycle: {}", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
}

/// What a module's `.modinfo` says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=` (kernels since 5.x record it); None on older modules.
    pub name: Option<String>,
    /// `depends=`, in the order listed.
    pub depends: Vec<String>,
}

/// Parses the contents of a `.modinfo` section: NUL-separated `key=value` strings.
pub fn parse_modinfo(bytes: &[u8], path: &Path) -> Result<ModInfo, ModuleError> {
    let mut info = ModInfo::default();
    for raw in bytes.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let bad = || ModuleError::BadModinfo {
            path: path.into(),
            entry: String::from_utf8_lossy(raw).into_owned(),
        };
        let entry = std::str::from_utf8(raw).map_err(|_| bad())?;
        let (key, value) = entry.split_once('=').ok_or_else(bad)?;
        match key {
            "name" => info.name = Some(value.to_string()),
            "depends" => {
                info.depends = value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(normalize)
                    .collect();
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Reads the `.modinfo` section of the ELF module at `path`.
pub fn read_modinfo(path: &Path) -> Result<ModInfo, ModuleError> {
    let data = read_module(path)?;
    let parse_err = |reason: String| ModuleError::ParseElf {
        path: path.into(),
        reason,
    };
    let elf = ElfFile64::<Endianness>::parse(&*data).map_err(|e| parse_err(e.to_string()))?;
    let section = elf
        .section_by_name(".modinfo")
        .ok_or_else(|| ModuleError::NoModinfo { path: path.into() })?;
    let bytes = section
        .data()
        .map_err(|e| parse_err(format!(".modinfo: {e}")))?;
    parse_modinfo(bytes, path)
}

/// Reads a module file, refusing absurd sizes.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let read_err = |source| ModuleError::ReadModule {
        path: path.into(),
        source,
    };
    let size = fs::metadata(path).map_err(read_err)?.len();
    if size > MODULE_BYTES_MAX {
        return Err(ModuleError::ModuleTooLarge {
            path: path.into(),
            size,
            max: MODULE_BYTES_MAX,
        });
    }
    fs::read(path).map_err(read_err)
}

/// A module name as the kernel compares them: `-` and `_` are the same.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules of one kernel, by name.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    pub dir: PathBuf,
    /// Module name to its `.ko` file.
    pub files: BTreeMap<String, PathBuf>,
    /// Modules built into the kernel (from `modules.builtin`).
    pub builtin: BTreeSet<String>,
}

impl ModuleIndex {
    /// Indexes every `.ko` under `dir` (a `lib/modules/<release>` directory) by file name, and
    /// reads `modules.builtin`.
    pub fn scan(dir: &Path) -> Result<ModuleIndex, ModuleError> {
        let _span = info_span!("scan_modules", dir = %dir.display()).entered();
        let mut index = ModuleIndex {
            dir: dir.into(),
            ..Default::default()
        };
        index.walk(&dir.join("kernel"))?;
        if let Ok(text) = fs::read_to_string(dir.join("modules.builtin")) {
            index.builtin = text
                .lines()
                .filter_map(|l| module_name_of(Path::new(l)))
                .collect();
        }
        debug!(
            modules = index.files.len(),
            builtin = index.builtin.len(),
            "indexed"
        );
        Ok(index)
    }

    fn walk(&mut self, dir: &Path) -> Result<(), ModuleError> {
        let list_err = |source| ModuleError::ListModules {
            path: dir.into(),
            source,
        };
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(list_err)?
            .collect::<Result<_, _>>()
            .map_err(list_err)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if entry.file_type().map_err(list_err)?.is_dir() {
                self.walk(&path)?;
                continue;
            }
            let file = entry.file_name().to_string_lossy().into_owned();
            for ext in [".ko.xz", ".ko.zst", ".ko.gz"] {
                if file.ends_with(ext) {
                    return Err(ModuleError::Compressed {
                        path,
                        ext: ext.into(),
                    });
                }
            }
            if let Some(name) = module_name_of(&path) {
                self.files.insert(name, path);
            }
        }
        Ok(())
    }

    /// Resolves `roots` and their dependencies, read from each module's `.modinfo`, into a load
    /// order; modules built into the kernel are left out.
    pub fn resolve(&self, roots: &[&str]) -> Result<Vec<(String, PathBuf)>, ModuleError> {
        let _span = info_span!("resolve_modules", roots = roots.len()).entered();
        let wanted: Vec<String> = roots
            .iter()
            .map(|r| normalize(r))
            .filter(|r| !self.builtin.contains(r))
            .collect();
        let order = load_order(&wanted, |name, needed_by| {
            let path = self.files.get(name).ok_or_else(|| ModuleError::NotFound {
                name: name.into(),
                needed_by: needed_by.into(),
                dir: self.dir.clone(),
            })?;
            Ok(read_modinfo(path)?
                .depends
                .into_iter()
                .filter(|d| !self.builtin.contains(d))
                .collect())
        })?;
        Ok(order
            .into_iter()
            .map(|name| (name.clone(), self.files[&name].clone()))
            .collect())
    }
}

fn module_name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    file.strip_suffix(".ko").map(normalize)
}

/// Orders `roots` and their dependencies (given by `depends_of(name, needed_by)`) so that every
/// module comes after all its dependencies; deterministic (roots, then dependencies, in the order
/// given). A cycle is an error naming it.
pub fn load_order<F>(roots: &[String], mut depends_of: F) -> Result<Vec<String>, ModuleError>
where
    F: FnMut(&str, &str) -> Result<Vec<String>, ModuleError>,
{
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    let mut memo: HashMap<String, Vec<String>> = HashMap::new();
    for root in roots {
        let mut path = Vec::new();
        visit(
            root,
            "the appliance",
            &mut depends_of,
            &mut memo,
            &mut path,
            &mut done,
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit<F>(
    name: &str,
    needed_by: &str,
    depends_of: &mut F,
    memo: &mut HashMap<String, Vec<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<(), ModuleError>
where
    F: FnMut(&str, &str) -> Result<Vec<String>, ModuleError>,
{
    if done.contains(name) {
        return Ok(());
    }
    if let Some(at) = path.iter().position(|p| p == name) {
        let mut cycle = path[at..].to_vec();
        cycle.push(name.into());
        return Err(ModuleError::Cycle { cycle });
    }
    if !memo.contains_key(name) {
        let deps = depends_of(name, needed_by)?;
        memo.insert(name.into(), deps);
    }
    path.push(name.into());
    for dep in memo[name].clone() {
        visit(&dep, name, depends_of, memo, path, done, order)?;
    }
    path.pop();
    done.insert(name.into());
    order.push(name.into());
    Ok(())
}
