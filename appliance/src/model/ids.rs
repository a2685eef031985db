//! Names and numbers that identify things: newtypes, so that a device id is never passed where a
//! system name is wanted. They serialize as the bare value (serde `transparent`, bincode's newtype
//! rule), so the journal's bytes and the JSON of the doors are those of the inner string or number.

#![expect(
    missing_debug_implementations,
    reason = "rkyv's resolver types of the newtypes below carry the macro's spans, so the lint sees them as ours"
)]

use serde::{Deserialize, Serialize};

/// A name newtype over `String`: ordered, hashable, borrowable as `&str` (so maps keyed by it
/// answer `get("gpu-1")`), and printed as the bare name.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        #[serde(transparent)]
        #[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(name: &str) -> Self {
                $name(name.to_string())
            }
        }

        impl From<String> for $name {
            fn from(name: String) -> Self {
                $name(name)
            }
        }

        impl From<&String> for $name {
            fn from(name: &String) -> Self {
                $name(name.clone())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(name: &str) -> Result<Self, Self::Err> {
                Ok($name(name.to_string()))
            }
        }
    };
}

/// A number newtype: copyable, ordered, printed as the bare number.
macro_rules! number_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize,
            Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        #[serde(transparent)]
        #[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$inner> for $name {
            fn from(number: $inner) -> Self {
                $name(number)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map($name)
            }
        }
    };
}

name_type!(
    /// The fabric's name for a device, unique in the fabric, e.g. "gpu-3".
    DeviceId
);
name_type!(
    /// A composed system's name, unique on the appliance, e.g. "ws1".
    SystemName
);
name_type!(
    /// A tenant's name (a studio, a department).
    TenantName
);
name_type!(
    /// A caller's idempotency key: the same id again returns the first answer.
    RequestId
);
name_type!(
    /// The name of a switch of the fabric, e.g. "sw0".
    SwitchName
);
name_type!(
    /// An account's name (the Redfish `UserName`).
    AccountName
);
number_type!(
    /// An operation's number (compose, decompose, mount, unmount, failover), given by the core.
    OperationId(u64)
);
number_type!(
    /// An alarm's number, given by the core in the order alarms are raised.
    AlarmId(u64)
);
number_type!(
    /// A downstream port of the fabric toward this server.
    PortId(u16)
);

impl OperationId {
    /// The operation after this one.
    pub fn next(self) -> OperationId {
        OperationId(self.0 + 1)
    }
}

impl AlarmId {
    /// The alarm after this one.
    pub fn next(self) -> AlarmId {
        AlarmId(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_their_bare_value() {
        let id = DeviceId::from("gpu-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"gpu-1\"");
        assert_eq!(
            bincode::serialize(&id).unwrap(),
            bincode::serialize("gpu-1").unwrap()
        );
        assert_eq!(
            bincode::serialize(&OperationId(7)).unwrap(),
            bincode::serialize(&7u64).unwrap()
        );
        assert_eq!(serde_json::to_string(&PortId(3)).unwrap(), "3");
    }

    #[test]
    fn a_map_keyed_by_an_id_is_read_with_a_str() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(SystemName::from("ws1"), 1);
        assert_eq!(map.get("ws1"), Some(&1));
    }
}
