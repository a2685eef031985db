//! Who may come in: accounts with a role (and a tenant, or global), their sessions, the event
//! subscriptions they made and the composition reservations they hold. Journaled like every
//! other change; passwords only as argon2 hashes (PHC strings), session tokens only as their
//! SHA-256, TOTP secret keys only sealed with the appliance's key.

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

use super::ids::{DeviceId, TenantName};

pub use super::ids::AccountName;

/// A Redfish privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(Serialize, Deserialize)]
pub enum Privilege {
    Login,
    ConfigureManager,
    ConfigureUsers,
    ConfigureComponents,
    ConfigureSelf,
}

impl Privilege {
    pub fn name(self) -> &'static str {
        match self {
            Privilege::Login => "Login",
            Privilege::ConfigureManager => "ConfigureManager",
            Privilege::ConfigureUsers => "ConfigureUsers",
            Privilege::ConfigureComponents => "ConfigureComponents",
            Privilege::ConfigureSelf => "ConfigureSelf",
        }
    }
}

/// The predefined roles (Redfish's `Administrator`, `Operator`, `ReadOnly`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub enum AccountRole {
    Administrator,
    Operator,
    ReadOnly,
}

impl AccountRole {
    pub const ALL: [AccountRole; 3] = [
        AccountRole::Administrator,
        AccountRole::Operator,
        AccountRole::ReadOnly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AccountRole::Administrator => "Administrator",
            AccountRole::Operator => "Operator",
            AccountRole::ReadOnly => "ReadOnly",
        }
    }

    /// The role's privileges, as DSP0266 assigns them.
    pub fn privileges(self) -> &'static [Privilege] {
        use Privilege::*;
        match self {
            AccountRole::Administrator => &[
                Login,
                ConfigureManager,
                ConfigureUsers,
                ConfigureComponents,
                ConfigureSelf,
            ],
            AccountRole::Operator => &[Login, ConfigureComponents, ConfigureSelf],
            AccountRole::ReadOnly => &[Login, ConfigureSelf],
        }
    }

    pub fn has(self, privilege: Privilege) -> bool {
        self.privileges().contains(&privilege)
    }
}

impl std::str::FromStr for AccountRole {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AccountRole::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("{text:?} is not a role (Administrator, Operator, ReadOnly)"))
    }
}

/// A secret sealed with the appliance's key (ChaCha20-Poly1305): nonce and ciphertext.
#[derive(Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Account {
    pub name: AccountName,
    pub role: AccountRole,
    /// The tenant whose systems the account sees; None = every tenant's.
    pub tenant: Option<TenantName>,
    /// argon2id, as a PHC string.
    pub password_hash: String,
    pub enabled: bool,
    /// Locked (too many failed logins) until this time (ms since the Unix epoch), if locked.
    pub locked_until_ms: Option<u64>,
    /// The account must change its password before anything else.
    pub password_change_required: bool,
    /// The RFC 6238 TOTP secret key, sealed, once the account has one: logins then need a code.
    pub totp: Option<Sealed>,
    /// Sequence of the last event that changed the account (its ETag).
    pub version: u64,
}

impl Account {
    /// Locked at `now_ms`.
    pub fn is_locked(&self, now_ms: u64) -> bool {
        self.locked_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// A password as an order carries it: as the client typed it (only from a door to
/// `api::handle`, which checks the policy and hashes it) or hashed. Events carry hashes only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Password {
    Plain(Secret),
    /// argon2id, as a PHC string.
    Hashed(String),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Plain(_) => f.write_str("Plain(***)"),
            Password::Hashed(_) => f.write_str("Hashed(***)"),
        }
    }
}

/// A secret a client typed (a password, a one-time code): never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One change to an account. Orders carry a [`Password`] (`AccountChange<Password>`), events
/// its hash (`AccountChange`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountChange<P = String> {
    Role(AccountRole),
    /// A new password (in events, its hash), and whether it must be changed at the next login.
    Password {
        password: P,
        change_required: bool,
    },
    /// Must change the password at the next login (set by an administrator).
    PasswordChangeRequired(bool),
    Enabled(bool),
    /// Locked until a time (ms since the Unix epoch), or unlocked.
    Locked {
        until_ms: Option<u64>,
    },
    /// A TOTP secret key (sealed), or none.
    Totp(Option<Sealed>),
}

/// A login session (X-Auth-Token).
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Session {
    /// Public: the last segment of the session's URI.
    pub id: String,
    pub account: AccountName,
    /// SHA-256 of the token, hex.
    pub token_sha256: String,
    pub created_ms: u64,
    /// A directory user's role and tenant (None: a local account's session).
    #[serde(default)]
    pub grant: Option<super::directory::DirectoryGrant>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    Logout,
    Expired,
    /// Its account was deleted, disabled or its password changed.
    AccountChanged,
}

/// A subscription to the appliance's events (Redfish EventDestination).
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Subscription {
    pub id: String,
    /// Where events are pushed (an https:// URL).
    pub destination: String,
    /// The subscriber's own text, sent back with every event.
    pub context: String,
    /// Who made it.
    pub account: AccountName,
    pub created_ms: u64,
}

/// Devices held for a composition that a client previewed (Redfish CompositionReservation).
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Reservation {
    pub id: String,
    pub devices: Vec<DeviceId>,
    /// The manifest previewed (JSON), applied later by its id.
    pub manifest: String,
    pub client: AccountName,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// Why a reservation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationEnd {
    Applied,
    Expired,
    Cancelled,
}
