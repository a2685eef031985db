//! Builds fake sysfs trees in a temp dir from the `.tree` fixtures under tests/fixtures.

#![allow(dead_code, reason = "each test binary uses a part of the helpers")]

use std::path::{Path, PathBuf};

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Applies one fixture line ("file P = V", "link P -> T", "dir P") under `root`.
pub fn apply_line(root: &Path, line: &str) {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return;
    }
    let (kind, rest) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("fixture line {line:?} has no kind"));
    match kind {
        "file" => {
            let (path, value) = rest
                .split_once(" =")
                .unwrap_or_else(|| panic!("file line {line:?} has no ' ='"));
            let path = root.join(path.trim());
            std::fs::create_dir_all(path.parent().expect("file has a parent"))
                .expect("create parent");
            let value = value.strip_prefix(' ').unwrap_or(value);
            let content = if value.is_empty() {
                String::new()
            } else {
                format!("{value}\n")
            };
            std::fs::write(&path, content)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        "link" => {
            let (path, target) = rest
                .split_once(" -> ")
                .unwrap_or_else(|| panic!("link line {line:?} has no ' -> '"));
            let path = root.join(path.trim());
            std::fs::create_dir_all(path.parent().expect("link has a parent"))
                .expect("create parent");
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(target.trim(), &path)
                .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
        }
        "dir" => std::fs::create_dir_all(root.join(rest.trim())).expect("create dir"),
        other => panic!("fixture line {line:?} has unknown kind {other:?}"),
    }
}

/// A temp dir holding the trees named, applied in order.
pub fn tree(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in names {
        let text = std::fs::read_to_string(fixture_path(name))
            .unwrap_or_else(|e| panic!("read fixture {name}: {e}"));
        for line in text.lines() {
            apply_line(dir.path(), line);
        }
    }
    dir
}

/// The fixture's lines that are not comments, for tests that apply them one by one.
pub fn lines(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture_path(name))
        .unwrap_or_else(|e| panic!("read fixture {name}: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}
