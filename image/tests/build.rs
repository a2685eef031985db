//! A whole image build on the pinned kernel (with a stand-in static /init): the initramfs holds
//! /init, every module in load order and mke2fs with its loader; two builds give the same bytes.

use image::cpio::{read, Node};
use image::BuildOptions;

/// Debian's ldconfig is a static x86_64 executable: a stand-in for the appliance binary, so this
/// test does not rebuild the appliance.
const STATIC_STAND_IN: &str = "/sbin/ldconfig";

fn options(out: &std::path::Path) -> BuildOptions {
    BuildOptions {
        out_dir: out.into(),
        appliance_binary: Some(STATIC_STAND_IN.into()),
        ..BuildOptions::default()
    }
}

#[test]
fn build_is_complete_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let a = image::build(&options(&dir.path().join("a"))).unwrap();
    let b = image::build(&options(&dir.path().join("b"))).unwrap();
    let bytes_a = std::fs::read(&a.initramfs).unwrap();
    assert_eq!(
        bytes_a,
        std::fs::read(&b.initramfs).unwrap(),
        "same inputs, same bytes"
    );
    assert_eq!(
        std::fs::read(&a.kernel).unwrap(),
        std::fs::read(&b.kernel).unwrap()
    );
    assert!(
        std::fs::read(&a.kernel).unwrap().starts_with(b"\x7fELF"),
        "the kernel is the uncompressed ELF, booted through its PVH entry"
    );
    assert_eq!(a.kernel_version, "6.1.0-50-amd64");
    assert!(a.cmdline.contains("console=ttyS0"));

    let entries = read(&bytes_a).unwrap();
    let file = |path: &str| match entries.iter().find(|e| e.path == path).map(|e| &e.node) {
        Some(Node::File { data, executable }) => (data.clone(), *executable),
        other => panic!("{path}: {other:?}"),
    };
    assert_eq!(
        file("init"),
        (std::fs::read(STATIC_STAND_IN).unwrap(), true)
    );
    let order = String::from_utf8(file(image::LOAD_ORDER_PATH).0).unwrap();
    let listed: Vec<&str> = order.lines().collect();
    assert_eq!(
        listed,
        a.modules.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for name in &listed {
        assert!(
            !file(&format!("lib/modules/{name}.ko")).0.is_empty(),
            "{name}"
        );
    }
    assert!(file("usr/sbin/mke2fs").1);
    assert!(
        entries
            .iter()
            .any(|e| e.path == "lib64/ld-linux-x86-64.so.2"),
        "the dynamic loader ships"
    );
    assert!(entries
        .iter()
        .any(|e| e.path == "dev/console" && e.node == Node::CharDevice { major: 5, minor: 1 }));
}

#[test]
fn a_dynamic_appliance_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.appliance_binary = Some("/bin/true".into());
    let err = image::build(&opts).unwrap_err().to_string();
    assert!(
        err.contains("/bin/true") && err.contains("not a static"),
        "{err}"
    );
}
