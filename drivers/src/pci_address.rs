//! PCI addresses in the kernel's `DDDD:BB:DD.F` notation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A PCI function address: domain, bus, device (slot) and function.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize
)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// Why a string is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a PCI address (expected DDDD:BB:DD.F in hex): {reason}")]
pub struct ParsePciAddressError {
    pub text: String,
    pub reason: &'static str,
}

impl FromStr for PciAddress {
    type Err = ParsePciAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParsePciAddressError {
            text: text.to_string(),
            reason,
        };
        let (domain, rest) = text
            .split_once(':')
            .ok_or_else(|| fail("missing ':' after domain"))?;
        let (bus, rest) = rest
            .split_once(':')
            .ok_or_else(|| fail("missing ':' after bus"))?;
        let (device, function) = rest
            .split_once('.')
            .ok_or_else(|| fail("missing '.' before function"))?;
        let field = |s: &str, width: usize| {
            if s.len() != width || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fail("a field has the wrong width or a non-hex digit"));
            }
            u32::from_str_radix(s, 16).map_err(|_| fail("a field is not hex"))
        };
        let address = PciAddress {
            domain: field(domain, 4)? as u16,
            bus: field(bus, 2)? as u8,
            device: field(device, 2)? as u8,
            function: field(function, 1)? as u8,
        };
        if address.device > 0x1f || address.function > 7 {
            return Err(fail("device must be <= 1f and function <= 7"));
        }
        Ok(address)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let a: PciAddress = "0000:01:1f.7".parse().expect("valid address");
        assert_eq!(a.to_string(), "0000:01:1f.7");
        for bad in [
            "",
            "0000:01:00",
            "0000:1:00.0",
            "0000:01:20.0",
            "0000:01:00.8",
            "zzzz:01:00.0",
        ] {
            assert!(
                bad.parse::<PciAddress>().is_err(),
                "{bad:?} must be refused"
            );
        }
    }
}
