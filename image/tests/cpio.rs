//! The cpio newc writer: round trip through the reader, reproducibility, and refused inputs.

use image::cpio::{read, Archive, Node};

fn sample(order: &[usize]) -> Archive {
    let entries = [
        (
            "init",
            Node::File {
                data: b"\x7fELF static".to_vec(),
                executable: true,
            },
        ),
        (
            "lib/modules/nvme.ko",
            Node::File {
                data: vec![7u8; 1001],
                executable: false,
            },
        ),
        (
            "lib/modules/load-order",
            Node::File {
                data: b"nvme_core\nnvme\n".to_vec(),
                executable: false,
            },
        ),
        ("dev/console", Node::CharDevice { major: 5, minor: 1 }),
        (
            "lib64/ld.so",
            Node::Symlink {
                target: "/lib/x86_64-linux-gnu/ld.so".into(),
            },
        ),
        ("proc", Node::Dir),
        (
            "empty",
            Node::File {
                data: Vec::new(),
                executable: false,
            },
        ),
    ];
    let mut archive = Archive::new();
    for &i in order {
        let (path, node) = &entries[i];
        archive.add(path, node.clone()).unwrap();
    }
    archive
}

fn bytes(archive: &Archive) -> Vec<u8> {
    let mut out = Vec::new();
    let written = archive.write_to(&mut out).unwrap();
    assert_eq!(written, out.len() as u64);
    out
}

#[test]
fn round_trip_keeps_every_entry_and_adds_parents() {
    let out = bytes(&sample(&[0, 1, 2, 3, 4, 5, 6]));
    assert_eq!(out.len() % 4, 0, "newc archives are 4-byte aligned");
    let entries = read(&out).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "dev",
            "dev/console",
            "empty",
            "init",
            "lib",
            "lib/modules",
            "lib/modules/load-order",
            "lib/modules/nvme.ko",
            "lib64",
            "lib64/ld.so",
            "proc"
        ]
    );
    let init = entries.iter().find(|e| e.path == "init").unwrap();
    assert_eq!(
        init.node,
        Node::File {
            data: b"\x7fELF static".to_vec(),
            executable: true
        }
    );
    assert_eq!(init.mode, 0o100755);
    let nvme = entries
        .iter()
        .find(|e| e.path == "lib/modules/nvme.ko")
        .unwrap();
    assert_eq!(
        nvme.node,
        Node::File {
            data: vec![7u8; 1001],
            executable: false
        }
    );
    let console = entries.iter().find(|e| e.path == "dev/console").unwrap();
    assert_eq!(console.node, Node::CharDevice { major: 5, minor: 1 });
    let link = entries.iter().find(|e| e.path == "lib64/ld.so").unwrap();
    assert_eq!(
        link.node,
        Node::Symlink {
            target: "/lib/x86_64-linux-gnu/ld.so".into()
        }
    );
    assert!(entries.iter().all(|e| e.mtime == 0), "fixed mtimes");
    let inos: Vec<u32> = entries.iter().map(|e| e.ino).collect();
    assert_eq!(
        inos,
        (1..=entries.len() as u32).collect::<Vec<_>>(),
        "inodes by position"
    );
}

#[test]
fn same_entries_in_any_order_give_the_same_bytes() {
    let a = bytes(&sample(&[0, 1, 2, 3, 4, 5, 6]));
    let b = bytes(&sample(&[6, 5, 4, 3, 2, 1, 0]));
    let c = bytes(&sample(&[3, 0, 6, 1, 5, 2, 4]));
    assert_eq!(a, b);
    assert_eq!(a, c);
    let mut changed = sample(&[0, 1, 2, 3, 4, 5, 6]);
    changed.add("extra", Node::Dir).unwrap();
    assert_ne!(a, bytes(&changed));
}

#[test]
fn bad_paths_and_conflicts_are_refused_by_name() {
    let mut archive = Archive::new();
    for bad in ["", "a//b", "a/../b", "./a"] {
        let err = archive.add(bad, Node::Dir).unwrap_err().to_string();
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
    archive
        .add(
            "etc/x",
            Node::File {
                data: b"1".to_vec(),
                executable: false,
            },
        )
        .unwrap();
    archive
        .add(
            "etc/x",
            Node::File {
                data: b"1".to_vec(),
                executable: false,
            },
        )
        .unwrap();
    let err = archive
        .add(
            "etc/x",
            Node::File {
                data: b"2".to_vec(),
                executable: false,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("other contents"), "{err}");
    let err = archive.add("etc/x/y", Node::Dir).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn truncated_or_foreign_archives_are_read_errors() {
    let out = bytes(&sample(&[0, 1]));
    let err = read(&out[..out.len() / 2]).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    let err = read(b"070707 old ascii cpio").unwrap_err().to_string();
    assert!(err.contains("truncated") || err.contains("magic"), "{err}");
    let mut garbage = out.clone();
    garbage[0..6].copy_from_slice(b"xxxxxx");
    let err = read(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("bad magic") && err.contains("at byte 0"),
        "{err}"
    );
}
