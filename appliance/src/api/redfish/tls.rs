//! The HTTPS door's certificate: the operator's (`--tls-cert FILE --tls-key FILE`), or one made
//! at the first start (rcgen, ECDSA P-256, self-signed, X.509 v3) and kept in the data directory
//! (`tls/cert.pem`, `tls/key.pem` readable by root only), so clients can pin it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::api::auth::write_private;

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Made at the first start in `DIR/tls/`, reused after.
    Generated { dir: PathBuf, names: Vec<String> },
    /// The operator's PEM files.
    Files { cert: PathBuf, key: PathBuf },
}

/// Errors of the certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no {what} in PEM form: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("make a self-signed certificate: {reason}")]
    Generate { reason: String },
    #[error("the certificate and key do not make a TLS configuration: {reason}")]
    Config { reason: String },
}

/// The files of a generated certificate.
pub fn generated_paths(dir: &Path) -> (PathBuf, PathBuf) {
    let tls = dir.join("tls");
    (tls.join("cert.pem"), tls.join("key.pem"))
}

/// The certificate's PEM and the key's PEM, made or read.
fn pems(source: &TlsSource) -> Result<(PathBuf, PathBuf), TlsError> {
    match source {
        TlsSource::Files { cert, key } => Ok((cert.clone(), key.clone())),
        TlsSource::Generated { dir, names } => {
            let (cert, key) = generated_paths(dir);
            if !cert.exists() || !key.exists() {
                generate(&cert, &key, names)?;
            }
            Ok((cert, key))
        }
    }
}

fn generate(cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let made =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Generate {
            reason: e.to_string(),
        })?;
    if let Some(parent) = cert.parent() {
        std::fs::create_dir_all(parent).map_err(|source| TlsError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    for path in [cert, key] {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TlsError::Write {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let write = |path: &Path, text: String| {
        write_private(path, text.as_bytes()).map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    write(key, made.signing_key.serialize_pem())?;
    write(cert, made.cert.pem())
}

/// The server's rustls configuration: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN. Returns
/// it with the certificate's PEM (what clients pin).
pub fn server_config(source: &TlsSource) -> Result<(Arc<rustls::ServerConfig>, String), TlsError> {
    let (cert_path, key_path) = pems(source)?;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path,
            what: "certificate",
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config {
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((
        Arc::new(config),
        String::from_utf8_lossy(&cert_pem).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_kept_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = TlsSource::Generated {
            dir: dir.path().to_path_buf(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
        };
        let (_, first) = server_config(&source).expect("made");
        let (_, again) = server_config(&source).expect("read");
        assert_eq!(first, again, "the same certificate after a restart");
        let (_, key) = generated_paths(dir.path());
        let mode = std::fs::metadata(key)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("key");
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").expect("write");
        let source = TlsSource::Files {
            cert: cert.clone(),
            key: cert.clone(),
        };
        let error = server_config(&source).expect_err("refused").to_string();
        assert!(error.contains("cert.pem"), "{error}");
    }
}
