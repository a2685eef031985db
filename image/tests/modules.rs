//! Module dependency resolution: `.modinfo` of a real module (committed fixture), ordering and
//! cycles on a synthetic graph, and the whole appliance module set on the pinned Debian kernel.

use std::collections::HashMap;
use std::path::Path;

use image::modules::{
    load_order, parse_modinfo, read_modinfo, ModuleError, ModuleIndex, APPLIANCE_MODULES,
};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn real_module_modinfo_gives_name_and_normalized_depends() {
    let info = read_modinfo(&fixture("vfio-pci.ko")).unwrap();
    assert_eq!(info.name.as_deref(), Some("vfio_pci"));
    assert_eq!(info.depends, ["vfio_pci_core", "vfio"]);
}

#[test]
fn modinfo_blob_parsing() {
    let blob = b"license=GPL\0depends=\0name=crc16\0\0vermagic=6.1.0 SMP\0";
    let info = parse_modinfo(blob, Path::new("crc16.ko")).unwrap();
    assert_eq!(info.name.as_deref(), Some("crc16"));
    assert!(info.depends.is_empty());
    let err = parse_modinfo(b"license=GPL\0garbage\0", Path::new("x.ko"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.ko") && err.contains("garbage"), "{err}");
}

#[test]
fn non_elf_and_missing_modules_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.ko");
    std::fs::write(&bogus, b"not an elf at all").unwrap();
    let err = read_modinfo(&bogus).unwrap_err().to_string();
    assert!(err.contains("bogus.ko") && err.contains("ELF"), "{err}");
    let err = read_modinfo(&dir.path().join("absent.ko"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.ko"), "{err}");
}

fn graph(edges: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
    edges
        .iter()
        .map(|(m, deps)| (m.to_string(), deps.iter().map(|d| d.to_string()).collect()))
        .collect()
}

fn order_of(g: &HashMap<String, Vec<String>>, roots: &[&str]) -> Result<Vec<String>, ModuleError> {
    let roots: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
    load_order(&roots, |name, needed_by| {
        g.get(name).cloned().ok_or_else(|| ModuleError::NotFound {
            name: name.into(),
            needed_by: needed_by.into(),
            dir: "graph".into(),
        })
    })
}

#[test]
fn dependencies_come_first_each_once() {
    let g = graph(&[
        ("rdma_rxe", &["ib_uverbs", "ib_core", "udp_tunnel"]),
        ("ib_uverbs", &["ib_core"]),
        ("ib_core", &[]),
        ("udp_tunnel", &[]),
        ("ext4", &["jbd2", "mbcache"]),
        ("jbd2", &[]),
        ("mbcache", &[]),
    ]);
    let order = order_of(&g, &["rdma_rxe", "ext4", "ib_core"]).unwrap();
    assert_eq!(
        order,
        [
            "ib_core",
            "ib_uverbs",
            "udp_tunnel",
            "rdma_rxe",
            "jbd2",
            "mbcache",
            "ext4"
        ]
    );
}

#[test]
fn cycles_and_missing_modules_are_named() {
    let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
    let err = order_of(&g, &["a"]).unwrap_err().to_string();
    assert!(err.contains("a -> b -> c -> a"), "{err}");
    let g = graph(&[("a", &["ghost"])]);
    let err = order_of(&g, &["a"]).unwrap_err().to_string();
    assert!(
        err.contains("\"ghost\"") && err.contains("needed by a"),
        "{err}"
    );
}

/// The pinned kernel, fetched into the cache if needed (the setup step does this too).
fn pinned_kernel() -> image::kernel::ExtractedKernel {
    let options = image::BuildOptions::default();
    let deb = image::kernel::ensure_deb(&options.kernel, &options.cache_dir, true)
        .expect("pinned kernel package");
    image::kernel::extract(&options.kernel, &deb, &options.cache_dir).expect("extract kernel")
}

#[test]
fn the_appliance_modules_resolve_on_the_pinned_kernel() {
    let kernel = pinned_kernel();
    let index = ModuleIndex::scan(&kernel.modules_dir).unwrap();
    let order = index.resolve(APPLIANCE_MODULES).unwrap();
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    for needed in [
        "nvme_core",
        "nvme",
        "ib_core",
        "rdma_rxe",
        "crc32_generic",
        "vfio",
        "vfio_pci_core",
        "vfio_pci",
        "jbd2",
        "ext4",
        "button",
        "i6300esb",
        "virtio_net",
    ] {
        assert!(names.contains(&needed), "{needed} missing from {names:?}");
    }
    for (position, (name, path)) in order.iter().enumerate() {
        for dep in read_modinfo(path).unwrap().depends {
            if index.builtin.contains(&dep) {
                continue;
            }
            let at = names
                .iter()
                .position(|n| *n == dep)
                .unwrap_or_else(|| panic!("{dep} (for {name}) not loaded"));
            assert!(at < position, "{dep} must load before {name}: {names:?}");
        }
    }
    let err = index.resolve(&["no_such_module"]).unwrap_err().to_string();
    assert!(err.contains("no_such_module"), "{err}");
}
