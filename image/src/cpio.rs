//! A reproducible cpio "newc" archive (the initramfs format): entries sorted by path, parents
//! before children, fixed mtime/uid/gid, inode numbers by position. Same entries, same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// Limit on the length of one path in the archive.
pub const PATH_BYTES_MAX: usize = 4096;
/// Limit on one file's size (the newc header stores 32-bit sizes).
pub const FILE_BYTES_MAX: usize = u32::MAX as usize;

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFMT: u32 = 0o170000;

/// Errors of building, writing or reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("add {path:?} to the archive: {reason}")]
    AddEntry { path: String, reason: String },
    #[error("write the archive")]
    Write(#[source] io::Error),
    #[error("read the archive at byte {offset}: {reason}")]
    Read { offset: usize, reason: String },
}

/// What one archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32 },
}

/// One entry as read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub path: String,
    pub mode: u32,
    pub ino: u32,
    pub mtime: u32,
    pub node: Node,
}

/// An archive being built; written sorted by path.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds `node` at `path` (relative, '/'-separated, e.g. `lib/modules/nvme.ko`); its parent
    /// directories are added as needed. Adding the same path twice with different contents is an
    /// error.
    pub fn add(&mut self, path: &str, node: Node) -> Result<(), CpioError> {
        let path = path.trim_start_matches('/');
        let err = |reason: &str| CpioError::AddEntry {
            path: path.into(),
            reason: reason.into(),
        };
        if path.is_empty() || path.len() > PATH_BYTES_MAX {
            return Err(err("empty or longer than PATH_BYTES_MAX"));
        }
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(err("has an empty, '.' or '..' component"));
        }
        if let Node::File { data, .. } = &node {
            if data.len() > FILE_BYTES_MAX {
                return Err(err("file larger than the 4 GiB newc limit"));
            }
        }
        let mut parent = String::new();
        for component in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p)
            .unwrap_or(&[])
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            match self.entries.get(&parent) {
                Some(Node::Dir) | None => {
                    self.entries.insert(parent.clone(), Node::Dir);
                }
                Some(_) => return Err(err("a parent path is not a directory")),
            }
        }
        match self.entries.get(path) {
            Some(existing) if *existing != node => {
                Err(err("already in the archive with other contents"))
            }
            _ => {
                self.entries.insert(path.into(), node);
                Ok(())
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the archive in newc format. Sorted by path, a directory precedes its contents.
    pub fn write_to<W: Write>(&self, out: &mut W) -> Result<u64, CpioError> {
        let mut written = 0u64;
        for (index, (path, node)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(index + 1).unwrap_or(u32::MAX);
            written += write_entry(out, path, node, ino).map_err(CpioError::Write)?;
        }
        written += write_entry(
            out,
            TRAILER,
            &Node::File {
                data: Vec::new(),
                executable: false,
            },
            0,
        )
        .map_err(CpioError::Write)?;
        Ok(written)
    }
}

fn mode_of(node: &Node) -> u32 {
    match node {
        Node::Dir => S_IFDIR | 0o755,
        Node::File {
            executable: true, ..
        } => S_IFREG | 0o755,
        Node::File {
            executable: false, ..
        } => S_IFREG | 0o644,
        Node::Symlink { .. } => S_IFLNK | 0o777,
        Node::CharDevice { .. } => S_IFCHR | 0o600,
    }
}

fn write_entry<W: Write>(out: &mut W, path: &str, node: &Node, ino: u32) -> io::Result<u64> {
    let (data, rdev): (&[u8], (u32, u32)) = match node {
        Node::File { data, .. } => (data, (0, 0)),
        Node::Symlink { target } => (target.as_bytes(), (0, 0)),
        Node::CharDevice { major, minor } => (&[], (*major, *minor)),
        Node::Dir => (&[], (0, 0)),
    };
    let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
    let name_size = path.len() + 1;
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [
        ino,
        mode_of(node),
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name_size as u32,
        0,
    ];
    let mut header = Vec::with_capacity(110 + name_size + 3);
    header.extend_from_slice(MAGIC);
    for field in fields {
        header.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    header.extend_from_slice(path.as_bytes());
    header.push(0);
    header.resize(pad4(header.len()), 0);
    out.write_all(&header)?;
    out.write_all(data)?;
    let padding = pad4(data.len()) - data.len();
    out.write_all(&[0u8; 3][..padding])?;
    Ok((header.len() + data.len() + padding) as u64)
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Reads a newc archive back (up to its trailer), for tests and inspection.
pub fn read(bytes: &[u8]) -> Result<Vec<ReadEntry>, CpioError> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    loop {
        let err = |reason: String| CpioError::Read { offset: at, reason };
        let header = bytes
            .get(at..at + 110)
            .ok_or_else(|| err("truncated header".into()))?;
        if &header[..6] != MAGIC {
            return Err(err(format!(
                "bad magic {:?}",
                String::from_utf8_lossy(&header[..6])
            )));
        }
        let field = |i: usize| -> Result<u32, CpioError> {
            let text = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).unwrap_or("");
            u32::from_str_radix(text, 16)
                .map_err(|_| err(format!("header field {i} {text:?} is not hex")))
        };
        let (ino, mode, mtime, size) = (field(0)?, field(1)?, field(5)?, field(6)? as usize);
        let (rdev_major, rdev_minor, name_size) = (field(9)?, field(10)?, field(11)? as usize);
        let name_end = at + 110 + name_size;
        let name_bytes = bytes
            .get(at + 110..name_end.saturating_sub(1))
            .ok_or_else(|| err("truncated name".into()))?;
        let path =
            String::from_utf8(name_bytes.to_vec()).map_err(|_| err("name is not UTF-8".into()))?;
        let data_at = pad4(name_end);
        let data = bytes
            .get(data_at..data_at + size)
            .ok_or_else(|| err(format!("truncated data of {path}")))?;
        at = pad4(data_at + size);
        if path == TRAILER {
            return Ok(entries);
        }
        let node = match mode & S_IFMT {
            S_IFDIR => Node::Dir,
            S_IFREG => Node::File {
                data: data.to_vec(),
                executable: mode & 0o111 != 0,
            },
            S_IFLNK => Node::Symlink {
                target: String::from_utf8_lossy(data).into_owned(),
            },
            S_IFCHR => Node::CharDevice {
                major: rdev_major,
                minor: rdev_minor,
            },
            other => {
                return Err(CpioError::Read {
                    offset: at,
                    reason: format!("{path}: unsupported type {other:o}"),
                })
            }
        };
        entries.push(ReadEntry {
            path,
            mode,
            ino,
            mtime,
            node,
        });
    }
}
