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
    #[error("wrong user name or password")]
    BadCredentials,
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
    if user.is_empty() || password.is_empty() || user.len() > 256 {
        return Err(DirectoryError::BadCredentials);
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
        .search(&config.base, Scope::Subtree, &filter, vec!["memberOf"])
        .and_then(|r| r.success())
        .map_err(|e| unreachable_or_protocol(config, e))?;
    let [entry] = entries.as_slice() else {
        // Nobody, or a name that is not unique: the same answer as a wrong password.
        return Err(DirectoryError::BadCredentials);
    };
    let entry = SearchEntry::construct(entry.clone());
    let mut as_user = connect(config)?;
    as_user
        .with_timeout(config.timeout())
        .simple_bind(&entry.dn, password)
        .and_then(|r| r.success())
        .map_err(|_| DirectoryError::BadCredentials)?;
    let _ = as_user.unbind();
    let groups = match config.kind {
        DirectoryKind::ActiveDirectory => entry.attrs.get("memberOf").cloned().unwrap_or_default(),
        DirectoryKind::Ldap => {
            let filter = format!(
                "(&(objectClass=groupOfNames)(member={}))",
                ldap3::ldap_escape(entry.dn.as_str())
            );
            let (found, _) = ldap
                .with_timeout(config.timeout())
                .search(&config.base, Scope::Subtree, &filter, vec!["cn"])
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
        .find(|m| groups.iter().any(|g| group_matches(&m.group, g)))
        .ok_or_else(|| DirectoryError::NotMapped { user: user.into() })?;
    Ok(DirectoryUser {
        name: user.into(),
        dn: entry.dn,
        groups,
        role: mapping.role,
        tenant: mapping.tenant.clone(),
    })
}

/// Whether a mapping's `wanted` group (a DN or a cn) names the group `dn`.
fn group_matches(wanted: &str, dn: &str) -> bool {
    if wanted.contains('=') {
        return wanted.eq_ignore_ascii_case(dn);
    }
    let first = dn.split(',').next().unwrap_or_default();
    first.split_once('=').is_some_and(|(key, value)| {
        key.eq_ignore_ascii_case("cn") && value.eq_ignore_ascii_case(wanted)
    })
}

fn connect(config: &DirectoryConfig) -> Result<LdapConn, DirectoryError> {
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(config.timeout())
        .set_starttls(config.starttls);
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
        assert!(group_matches("appliance-admins", dn));
        assert!(group_matches(
            "CN=appliance-admins,OU=groups,DC=studio,DC=test",
            dn
        ));
        assert!(!group_matches("appliance", dn));
        assert!(!group_matches("cn=appliance-admins,dc=other", dn));
    }

    #[test]
    fn an_empty_password_is_refused_before_anything_is_sent() {
        // An anonymous bind would succeed; nothing listens on this port either.
        assert_eq!(
            authenticate(&config(), "ana", ""),
            Err(DirectoryError::BadCredentials)
        );
    }
}
