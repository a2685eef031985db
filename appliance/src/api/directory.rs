//! Studio accounts from the studio's directory (OpenLDAP, Active Directory), through `ldap3`:
//! a login the local accounts do not know is checked by binding as the user, and the user's
//! groups are mapped to a role and a tenant. Only over TLS (`ldaps://`, or `ldap://` with
//! StartTLS) with the server's certificate checked against the CA the operator gave; plain
//! `ldap://` only when the configuration explicitly allows it. Every call is bounded by the
//! configuration's timeout.
//!
//! The steps of [`authenticate`]: bind as the service account, find the user by its name
//! attribute (the name escaped, RFC 4515: `*)(uid=*` finds nobody), bind as the entry found with
//! the user's password, read its groups (Active Directory's `memberOf`; in OpenLDAP the
//! `groupOfNames` that list it as `member`), and take the first mapping whose group is one of
//! them. No mapped group, no login.
//!
//! Blocking (ldap3's synchronous connection runs a runtime of its own): call it from a blocking
//! thread, never from inside an async task.

use std::sync::Arc;

use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub use crate::model::directory::{DirectoryKind, DirectorySettings, GroupMapping};
use crate::model::{AccountRole, TenantName};

/// The settings with the bind password opened, as a login uses them.
pub type DirectoryConfig = DirectorySettings<String>;

/// A directory user who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub name: String,
    pub dn: String,
    /// The DNs of its groups.
    pub groups: Vec<String>,
    /// From the first mapping that matched.
    pub role: AccountRole,
    pub tenant: Option<TenantName>,
}

/// Why a directory login failed. `BadCredentials` does not say whether the user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("the directory configuration: {0}")]
    Config(String),
    #[error("the directory at {uri} did not answer: {reason}")]
    Unreachable { uri: String, reason: String },
    #[error("the directory refused the service account {bind_dn}: {reason}")]
    ServiceBind { bind_dn: String, reason: String },
    /// No user of that name (or more than one): told apart from a wrong password only inside
    /// the appliance (the lockout counts wrong passwords of users who exist).
    #[error("wrong user name or password")]
    UnknownUser,
    #[error("wrong user name or password")]
    WrongPassword,
    #[error("{user} is in no group mapped to a role")]
    NotMapped { user: String },
    #[error("the directory's answer: {0}")]
    Protocol(String),
}

/// Checks `user`'s `password` against the directory and maps its groups (see the module's
/// steps). An empty password is refused before anything is sent: LDAP takes a simple bind
/// with an empty password as an anonymous one, which succeeds.
pub fn authenticate(
    config: &DirectoryConfig,
    user: &str,
    password: &str,
) -> Result<DirectoryUser, DirectoryError> {
    let _span = tracing::info_span!("directory_login", uri = %config.uri, user).entered();
    config.check().map_err(DirectoryError::Config)?;
    if user.is_empty() || user.len() > 256 {
        return Err(DirectoryError::UnknownUser);
    }
    if password.is_empty() {
        return Err(DirectoryError::WrongPassword);
    }
    let mut ldap = connect(config)?;
    ldap.with_timeout(config.timeout())
        .simple_bind(&config.bind_dn, &config.bind_password)
        .and_then(|r| r.success())
        .map_err(|e| DirectoryError::ServiceBind {
            bind_dn: config.bind_dn.clone(),
            reason: e.to_string(),
        })?;
    let filter = format!(
        "(&(objectClass=*)({}={}))",
        config.user_attribute,
        ldap3::ldap_escape(user)
    );
    let (entries, _) = ldap
        .with_timeout(config.timeout())
        .search(
            &config.base,
            Scope::Subtree,
            &filter,
            config.groups_from().into_iter().collect::<Vec<_>>(),
        )
        .and_then(|r| r.success())
        .map_err(|e| unreachable_or_protocol(config, e))?;
    let [entry] = entries.as_slice() else {
        // Nobody, or a name that is not unique: the same answer as a wrong password.
        return Err(DirectoryError::UnknownUser);
    };
    let entry = SearchEntry::construct(entry.clone());
    let mut as_user = connect(config)?;
    as_user
        .with_timeout(config.timeout())
        .simple_bind(&entry.dn, password)
        .and_then(|r| r.success())
        .map_err(|_| DirectoryError::WrongPassword)?;
    let _ = as_user.unbind();
    let groups = match config.groups_from() {
        Some(attribute) => entry.attrs.get(attribute).cloned().unwrap_or_default(),
        None => {
            let filter = format!(
                "(&(objectClass=groupOfNames)(member={}))",
                ldap3::ldap_escape(entry.dn.as_str())
            );
            let (found, _) = ldap
                .with_timeout(config.timeout())
                .search(&config.base, Scope::Subtree, &filter, vec!["1.1"])
                .and_then(|r| r.success())
                .map_err(|e| unreachable_or_protocol(config, e))?;
            found
                .into_iter()
                .map(|group| SearchEntry::construct(group).dn)
                .collect()
        }
    };
    let _ = ldap.unbind();
    let mapping = config
        .mappings
        .iter()
        .find(|m| {
            groups
                .iter()
                .any(|g| group_matches(&m.group, g, &config.group_name_attribute))
        })
        .ok_or_else(|| DirectoryError::NotMapped { user: user.into() })?;
    Ok(DirectoryUser {
        name: user.into(),
        dn: entry.dn,
        groups,
        role: mapping.role,
        tenant: mapping.tenant.clone(),
    })
}

/// Whether a mapping's `wanted` group (a DN, or a name: the value of the first part of a DN
/// whose attribute is `name_attribute`) names the group `dn`.
fn group_matches(wanted: &str, dn: &str, name_attribute: &str) -> bool {
    if wanted.contains('=') {
        return wanted.eq_ignore_ascii_case(dn);
    }
    let first = dn.split(',').next().unwrap_or_default();
    first.split_once('=').is_some_and(|(key, value)| {
        key.trim().eq_ignore_ascii_case(name_attribute) && value.trim().eq_ignore_ascii_case(wanted)
    })
}

/// The TCP connection, opened here so that it has TCP_NODELAY: LDAP's small requests would
/// otherwise wait out the peer's delayed ACK (about 40 ms a connection on Linux).
fn tcp(config: &DirectoryConfig) -> Result<std::net::TcpStream, DirectoryError> {
    use std::net::ToSocketAddrs;
    let unreachable = |reason: String| DirectoryError::Unreachable {
        uri: config.uri.clone(),
        reason,
    };
    let (scheme, rest) = config
        .uri
        .split_once("://")
        .ok_or_else(|| DirectoryError::Config(format!("uri {:?} has no scheme", config.uri)))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let default_port = if scheme == "ldaps" { 636 } else { 389 };
    let target = match authority.rsplit_once(':') {
        Some((_, port)) if !authority.ends_with(']') && port.parse::<u16>().is_ok() => {
            authority.to_string()
        }
        _ => format!("{authority}:{default_port}"),
    };
    let address = target
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("resolve {target}: {e}")))?
        .next()
        .ok_or_else(|| unreachable(format!("{target} resolves to no address")))?;
    let stream = std::net::TcpStream::connect_timeout(&address, config.timeout())
        .map_err(|e| unreachable(format!("connect to {address}: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| unreachable(format!("TCP_NODELAY: {e}")))?;
    Ok(stream)
}

fn connect(config: &DirectoryConfig) -> Result<LdapConn, DirectoryError> {
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(config.timeout())
        .set_starttls(config.starttls)
        .set_std_stream(ldap3::StdStream::Tcp(tcp(config)?));
    if !config.ca_pem.trim().is_empty() {
        settings = settings.set_config(tls_config(&config.ca_pem)?);
    }
    LdapConn::with_settings(settings, &config.uri).map_err(|e| DirectoryError::Unreachable {
        uri: config.uri.clone(),
        reason: e.to_string(),
    })
}

fn unreachable_or_protocol(config: &DirectoryConfig, e: ldap3::LdapError) -> DirectoryError {
    match e {
        ldap3::LdapError::Timeout { .. } | ldap3::LdapError::Io { .. } => {
            DirectoryError::Unreachable {
                uri: config.uri.clone(),
                reason: e.to_string(),
            }
        }
        other => DirectoryError::Protocol(other.to_string()),
    }
}

/// One certificate of the CA bundle an operator gave (`ca_pem`), as the doors show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    /// Its own PEM block.
    pub pem: String,
    /// (attribute, value) of the subject's and the issuer's names: `CN`, `O`, `OU`, `L`, `ST`,
    /// `C`.
    pub subject: Vec<(&'static str, String)>,
    pub issuer: Vec<(&'static str, String)>,
    pub not_before_s: i64,
    pub not_after_s: i64,
    /// Hex, colon-separated.
    pub serial: String,
    /// SHA-256 of the DER, hex bytes colon-separated (as DSP0268's `Fingerprint`).
    pub fingerprint_sha256: String,
    pub is_ca: bool,
}

/// Reads every certificate of a PEM bundle; the error names the one that does not parse.
pub fn ca_certificates(ca_pem: &str) -> Result<Vec<CaCertificate>, String> {
    use sha2::{Digest, Sha256};
    use x509_parser::prelude::{FromDer, X509Certificate};
    let mut out = Vec::new();
    for (index, der) in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).enumerate() {
        let number = index + 1;
        let der = der.map_err(|e| format!("certificate {number} of ca_pem: {e}"))?;
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| format!("certificate {number} of ca_pem does not parse: {e}"))?;
        let names = |name: &x509_parser::x509::X509Name| {
            let mut out = Vec::new();
            let fields: [(&'static str, _); 6] = [
                ("CN", name.iter_common_name().collect::<Vec<_>>()),
                ("O", name.iter_organization().collect()),
                ("OU", name.iter_organizational_unit().collect()),
                ("L", name.iter_locality().collect()),
                ("ST", name.iter_state_or_province().collect()),
                ("C", name.iter_country().collect()),
            ];
            for (key, values) in fields {
                if let Some(value) = values.first().and_then(|v| v.as_str().ok()) {
                    out.push((key, value.to_string()));
                }
            }
            out
        };
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64_lines(der.as_ref())
        );
        out.push(CaCertificate {
            pem,
            subject: names(cert.subject()),
            issuer: names(cert.issuer()),
            not_before_s: cert.validity().not_before.timestamp(),
            not_after_s: cert.validity().not_after.timestamp(),
            serial: cert.raw_serial_as_string(),
            fingerprint_sha256: Sha256::digest(der.as_ref())
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":"),
            is_ca: cert.is_ca(),
        });
    }
    if out.is_empty() {
        return Err("ca_pem holds no certificate: the directory's could not be checked".into());
    }
    Ok(out)
}

/// DER as PEM's base64, 64 characters a line.
fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    lines.join("\n")
}

/// The operator's CA as the only root.
fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("ca_pem: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_pem: a certificate rustls refuses: {e}"))?;
    }
    if roots.is_empty() {
        return Err("ca_pem holds no certificate: the directory's could not be checked".into());
    }
    Ok(roots)
}

fn tls_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let roots = roots(ca_pem).map_err(DirectoryError::Config)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DirectoryConfig {
        DirectoryConfig {
            kind: DirectoryKind::Ldap,
            uri: "ldap://127.0.0.1:389".into(),
            starttls: false,
            allow_plain: true,
            ca_pem: String::new(),
            bind_dn: "cn=svc,dc=studio,dc=test".into(),
            bind_password: "x".into(),
            base: "dc=studio,dc=test".into(),
            user_attribute: "uid".into(),
            groups_attribute: None,
            group_name_attribute: "cn".into(),
            mappings: vec![GroupMapping {
                group: "appliance-admins".into(),
                role: AccountRole::Administrator,
                tenant: None,
            }],
            timeout_ms: 2000,
        }
    }

    #[test]
    fn plain_ldap_is_refused_unless_allowed_and_bad_fields_are_named() {
        assert_eq!(config().check(), Ok(()));
        let plain = DirectoryConfig {
            allow_plain: false,
            ..config()
        };
        assert!(plain.check().unwrap_err().contains("plain LDAP"));
        let no_ca = DirectoryConfig {
            uri: "ldaps://dir.studio.test".into(),
            ..config()
        };
        assert!(no_ca
            .check()
            .unwrap_err()
            .contains("ca_pem holds no certificate"));
        for (bad, field) in [
            (
                DirectoryConfig {
                    uri: "http://x".into(),
                    ..config()
                },
                "uri",
            ),
            (
                DirectoryConfig {
                    base: " ".into(),
                    ..config()
                },
                "base is empty",
            ),
            (
                DirectoryConfig {
                    user_attribute: "uid)(x".into(),
                    ..config()
                },
                "user_attribute",
            ),
            (
                DirectoryConfig {
                    groups_attribute: Some("memberOf;x".into()),
                    ..config()
                },
                "groups_attribute \"memberOf;x\" is not an attribute name",
            ),
            (
                DirectoryConfig {
                    group_name_attribute: String::new(),
                    ..config()
                },
                "group_name_attribute is empty",
            ),
            (
                DirectoryConfig {
                    mappings: vec![],
                    ..config()
                },
                "no group is mapped",
            ),
            (
                DirectoryConfig {
                    timeout_ms: 0,
                    ..config()
                },
                "timeout_ms 0",
            ),
        ] {
            let got = bad.check().unwrap_err();
            assert!(got.contains(field), "{field}: {got}");
        }
    }

    #[test]
    fn groups_match_by_dn_or_common_name_without_case() {
        let dn = "cn=Appliance-Admins,ou=groups,dc=studio,dc=test";
        assert!(group_matches("appliance-admins", dn, "cn"));
        assert!(group_matches(
            "CN=appliance-admins,OU=groups,DC=studio,DC=test",
            dn,
            "cn"
        ));
        assert!(!group_matches("appliance", dn, "cn"));
        assert!(!group_matches("cn=appliance-admins,dc=other", dn, "cn"));
        // Another name attribute: only groups named by it match by name.
        assert!(!group_matches("appliance-admins", dn, "ou"));
        let by_ou = "ou=Render,ou=groups,dc=studio,dc=test";
        assert!(group_matches("render", by_ou, "ou"));
    }

    #[test]
    fn groups_are_read_where_the_kind_or_the_settings_say() {
        assert_eq!(config().groups_from(), None, "LDAP: groupOfNames");
        let ad = DirectoryConfig {
            kind: DirectoryKind::ActiveDirectory,
            ..config()
        };
        assert_eq!(ad.groups_from(), Some("memberOf"));
        let overlay = DirectoryConfig {
            groups_attribute: Some("memberOf".into()),
            ..config()
        };
        assert_eq!(overlay.groups_from(), Some("memberOf"));
    }

    #[test]
    fn an_empty_password_is_refused_before_anything_is_sent() {
        // An anonymous bind would succeed; nothing listens on this port either.
        assert_eq!(
            authenticate(&config(), "ana", ""),
            Err(DirectoryError::WrongPassword)
        );
    }
}
