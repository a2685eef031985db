//! Bad kernel inputs give clear errors: a missing package offline, a wrong sha256, a broken .deb.

use image::kernel::{ensure_deb, extract, sha256_file, KernelError, KernelPackage};

#[test]
fn missing_kernel_offline_names_the_file_and_the_fix() {
    let cache = tempfile::tempdir().unwrap();
    let pkg = KernelPackage::pinned();
    let err = ensure_deb(&pkg, cache.path(), false).unwrap_err();
    assert!(matches!(err, KernelError::Missing { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&pkg.deb_file_name()) && text.contains("fetch-kernel"),
        "{text}"
    );
}

#[test]
fn wrong_sha256_is_refused_and_the_file_removed() {
    let cache = tempfile::tempdir().unwrap();
    let pkg = KernelPackage::pinned();
    let deb = cache.path().join(pkg.deb_file_name());
    std::fs::write(&deb, b"tampered").unwrap();
    let err = ensure_deb(&pkg, cache.path(), false).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, KernelError::Checksum { .. }), "{err:?}");
    assert!(
        text.contains(&pkg.sha256) && text.contains(&sha256_of(b"tampered")),
        "{text}"
    );
    assert!(
        !deb.exists(),
        "a bad package is deleted so the next fetch replaces it"
    );
}

#[test]
fn broken_deb_fails_extraction_by_name() {
    let cache = tempfile::tempdir().unwrap();
    let contents = b"!<arch>\nthis is not a debian package\n";
    let pkg = KernelPackage {
        package: "linux-image-broken".into(),
        version: "1".into(),
        release: "broken".into(),
        sha256: sha256_of(contents),
    };
    let deb = cache.path().join(pkg.deb_file_name());
    std::fs::write(&deb, contents).unwrap();
    let deb = ensure_deb(&pkg, cache.path(), false).unwrap();
    let err = extract(&pkg, &deb, cache.path()).unwrap_err();
    assert!(matches!(err, KernelError::Extract { .. }), "{err:?}");
    assert!(
        err.to_string().contains("linux-image-broken_1_amd64.deb"),
        "{err}"
    );
}

fn sha256_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, bytes).unwrap();
    sha256_file(&path).unwrap()
}

#[test]
fn a_file_that_is_not_a_bzimage_is_refused_with_the_reason() {
    let err = image::uncompressed_kernel(&[0u8; 4096]).expect_err("zeros are no kernel");
    assert!(err.contains("HdrS"), "{err}");
    let err = image::uncompressed_kernel(b"short").expect_err("too short");
    assert!(err.contains("HdrS"), "{err}");
}
