//! The studio's directory (OpenLDAP, Active Directory) as the appliance is pointed at it: where
//! it is, the CA its certificate must chain to, the service account (its password sealed with
//! the appliance's key wherever it is kept), where users are found, and which groups give
//! which role and tenant. `api::directory` logs users in with it.

use std::time::Duration;

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

use super::access::{AccountRole, Sealed, Secret};
use super::ids::TenantName;

/// Which kind of directory: where a user's groups are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[derive(Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryKind {
    /// OpenLDAP and the like: the `groupOfNames` entries that list the user as `member`.
    Ldap,
    /// Active Directory: the user entry's `memberOf`.
    ActiveDirectory,
}

impl DirectoryKind {
    /// As typed in a settings file.
    pub fn name(self) -> &'static str {
        match self {
            DirectoryKind::Ldap => "ldap",
            DirectoryKind::ActiveDirectory => "active_directory",
        }
    }
}

/// A directory group and what its members are on the appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[derive(Archive, RkyvSerialize, RkyvDeserialize)]
pub struct GroupMapping {
    /// The group's DN, or its common name (`cn`), compared without regard to case.
    pub group: String,
    pub role: AccountRole,
    /// The tenant whose systems its members see; None = every tenant's.
    #[serde(default)]
    pub tenant: Option<TenantName>,
}

/// How to reach the directory and read it. Orders carry the bind password as typed
/// (`DirectorySettings<BindPassword>`), State and the journal sealed with the appliance's key
/// (`DirectorySettings<Sealed>`), a login opens it (`DirectorySettings<String>`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[derive(Archive, RkyvSerialize, RkyvDeserialize)]
pub struct DirectorySettings<P = Sealed> {
    pub kind: DirectoryKind,
    /// `ldaps://host:port`, or `ldap://host:port` with `starttls` (or `allow_plain`).
    pub uri: String,
    #[serde(default)]
    pub starttls: bool,
    /// Lets `ldap://` go without TLS: passwords cross the network in clear. Off unless set.
    #[serde(default)]
    pub allow_plain: bool,
    /// The CA that signed the directory's certificate (PEM); the only one trusted.
    pub ca_pem: String,
    /// The service account that searches for users.
    pub bind_dn: String,
    pub bind_password: P,
    /// Where users and groups are searched (subtree).
    pub base: String,
    /// The attribute holding a user's login name: `uid` (LDAP), `sAMAccountName` (AD).
    pub user_attribute: String,
    /// The user entry's attribute that lists the DNs of its groups: `memberOf` (Active
    /// Directory, or OpenLDAP with its memberof overlay). None: Active Directory's `memberOf`,
    /// and for LDAP the `groupOfNames` entries that name the user as `member`.
    #[serde(default)]
    pub groups_attribute: Option<String>,
    /// The attribute of a group's name (the first of its DN), compared with a mapping's group
    /// when that is not a DN.
    #[serde(default = "default_group_name_attribute")]
    pub group_name_attribute: String,
    /// First match wins.
    pub mappings: Vec<GroupMapping>,
    /// The longest a connection or an operation may take.
    pub timeout_ms: u64,
}

fn default_group_name_attribute() -> String {
    "cn".into()
}

/// Bounds of a configuration.
pub const TIMEOUT_MS_MIN: u64 = 100;
pub const TIMEOUT_MS_MAX: u64 = 30_000;

impl<P> DirectorySettings<P> {
    /// Refuses a configuration that cannot work or would not be safe; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let secure = match self.uri.split_once("://") {
            Some(("ldaps", rest)) if !rest.is_empty() => true,
            Some(("ldap", rest)) if !rest.is_empty() => self.starttls,
            _ => {
                return Err(format!(
                    "uri {:?} is not ldaps://HOST[:PORT] or ldap://HOST[:PORT]",
                    self.uri
                ))
            }
        };
        if !secure && !self.allow_plain {
            return Err(format!(
                "uri {:?} is plain LDAP: passwords would cross the network in clear; use ldaps://, StartTLS, or allow plain LDAP explicitly",
                self.uri
            ));
        }
        if secure && !self.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err("ca_pem holds no certificate: the directory's could not be checked".into());
        }
        for (field, value) in [
            ("bind_dn", &self.bind_dn),
            ("base", &self.base),
            ("user_attribute", &self.user_attribute),
            ("group_name_attribute", &self.group_name_attribute),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{field} is empty"));
            }
        }
        let attributes = [
            ("user_attribute", Some(&self.user_attribute)),
            ("groups_attribute", self.groups_attribute.as_ref()),
            ("group_name_attribute", Some(&self.group_name_attribute)),
        ];
        for (field, value) in attributes {
            let Some(value) = value else { continue };
            let name = !value.is_empty()
                && value.starts_with(|c: char| c.is_ascii_alphabetic())
                && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !name {
                return Err(format!("{field} {value:?} is not an attribute name"));
            }
        }
        if self.mappings.is_empty() {
            return Err("no group is mapped to a role: nobody could log in".into());
        }
        if !(TIMEOUT_MS_MIN..=TIMEOUT_MS_MAX).contains(&self.timeout_ms) {
            return Err(format!(
                "timeout_ms {} is outside {TIMEOUT_MS_MIN} to {TIMEOUT_MS_MAX}",
                self.timeout_ms
            ));
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Where a user's groups are read: the user entry's attribute, or None for the
    /// `groupOfNames` entries that name it.
    pub fn groups_from(&self) -> Option<&str> {
        match (&self.groups_attribute, self.kind) {
            (Some(attribute), _) => Some(attribute),
            (None, DirectoryKind::ActiveDirectory) => Some("memberOf"),
            (None, DirectoryKind::Ldap) => None,
        }
    }

    /// The same settings with another form of the bind password.
    pub fn with_password<Q>(&self, bind_password: Q) -> DirectorySettings<Q> {
        DirectorySettings {
            kind: self.kind,
            uri: self.uri.clone(),
            starttls: self.starttls,
            allow_plain: self.allow_plain,
            ca_pem: self.ca_pem.clone(),
            bind_dn: self.bind_dn.clone(),
            bind_password,
            base: self.base.clone(),
            user_attribute: self.user_attribute.clone(),
            groups_attribute: self.groups_attribute.clone(),
            group_name_attribute: self.group_name_attribute.clone(),
            mappings: self.mappings.clone(),
            timeout_ms: self.timeout_ms,
        }
    }
}

impl DirectorySettings {
    /// The settings as an order that keeps the sealed bind password (a change of the rest).
    pub fn as_order(&self) -> DirectorySettings<BindPassword> {
        self.with_password(BindPassword::Sealed(self.bind_password.clone()))
    }
}

impl<P> std::fmt::Debug for DirectorySettings<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySettings")
            .field("kind", &self.kind)
            .field("uri", &self.uri)
            .field("starttls", &self.starttls)
            .field("allow_plain", &self.allow_plain)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &"***")
            .field("base", &self.base)
            .field("user_attribute", &self.user_attribute)
            .field("groups_attribute", &self.groups_attribute)
            .field("group_name_attribute", &self.group_name_attribute)
            .field("mappings", &self.mappings)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// The settings as kind 41 journaled them, before the group attributes could be set: frozen,
/// upcast on replay (the groups read as that kind of directory read them).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstDirectorySettings {
    pub kind: DirectoryKind,
    pub uri: String,
    pub starttls: bool,
    pub allow_plain: bool,
    pub ca_pem: String,
    pub bind_dn: String,
    pub bind_password: Sealed,
    pub base: String,
    pub user_attribute: String,
    pub mappings: Vec<GroupMapping>,
    pub timeout_ms: u64,
}

impl From<FirstDirectorySettings> for DirectorySettings {
    fn from(first: FirstDirectorySettings) -> Self {
        DirectorySettings {
            kind: first.kind,
            uri: first.uri,
            starttls: first.starttls,
            allow_plain: first.allow_plain,
            ca_pem: first.ca_pem,
            bind_dn: first.bind_dn,
            bind_password: first.bind_password,
            base: first.base,
            user_attribute: first.user_attribute,
            groups_attribute: None,
            group_name_attribute: default_group_name_attribute(),
            mappings: first.mappings,
            timeout_ms: first.timeout_ms,
        }
    }
}

impl std::fmt::Debug for FirstDirectorySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstDirectorySettings")
            .field("kind", &self.kind)
            .field("uri", &self.uri)
            .field("bind_password", &"***")
            .finish_non_exhaustive()
    }
}

/// What the appliance keeps of a directory user, who has no local account: a lockout after
/// repeated wrong passwords, and the secret key of its TOTP second factor (sealed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[derive(Archive, RkyvSerialize, RkyvDeserialize)]
pub struct DirectoryUserRecord {
    pub locked_until_ms: Option<u64>,
    pub totp: Option<Sealed>,
}

impl DirectoryUserRecord {
    pub fn is_locked(&self, now_ms: u64) -> bool {
        self.locked_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// A change to what the appliance keeps of a directory user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryUserChange {
    /// Locked until then (the lockout), or unlocked (None).
    Locked { until_ms: Option<u64> },
    /// Its TOTP secret key (sealed), or none.
    Totp(Option<Sealed>),
}

/// What a directory user's groups gave it at login: journaled with its session (the user has
/// no local account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[derive(Archive, RkyvSerialize, RkyvDeserialize)]
pub struct DirectoryGrant {
    pub role: AccountRole,
    pub tenant: Option<TenantName>,
}

/// The bind password as an order carries it: as typed (a door to `api::handle`, which seals
/// it) or sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindPassword {
    Plain(Secret),
    Sealed(Sealed),
}

impl std::fmt::Debug for BindPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindPassword::Plain(_) => f.write_str("Plain(***)"),
            BindPassword::Sealed(_) => f.write_str("Sealed(***)"),
        }
    }
}
