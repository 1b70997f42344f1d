//! IP address prefixes as [`crate::sandbox::IpFirewall`] carries them: `10.0.0.0/8`,
//! `::1/128`. berthd writes them (after expanding `any`, `localhost`, ...), berth-helper reads
//! them back before it builds the firewall, so both sides agree on one spelling.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a string is not an address prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("{text:?} is not an IPv4 or IPv6 address")]
    Address { text: String },
    #[error("{text:?} is not a prefix length (0 to {max})")]
    Length { text: String, max: u8 },
}

/// An address and the number of its leading bits that matter; the other bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// The prefix of `addr`'s first `len` bits (host bits cleared, as systemd does);
    /// `len` is clamped to the family's width.
    pub fn new(addr: IpAddr, len: u8) -> IpPrefix {
        let len = len.min(width(&addr));
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(len))),
        };
        IpPrefix { addr, len }
    }

    /// Parses `ADDRESS` (the whole address) or `ADDRESS/LENGTH`.
    pub fn parse(text: &str) -> Result<IpPrefix, PrefixError> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| PrefixError::Address {
            text: text.to_owned(),
        })?;
        let max = width(&addr);
        let len = match len_text {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                // "+8" parses as a u8; a prefix length is digits only.
                .filter(|n| *n <= max && l.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| PrefixError::Length {
                    text: text.to_owned(),
                    max,
                })?,
        };
        Ok(IpPrefix::new(addr, len))
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether every address of `other` is in `self` (same family only).
    pub fn contains(&self, other: &IpPrefix) -> bool {
        if self.len > other.len {
            return false;
        }
        match (self.addr, other.addr) {
            (IpAddr::V4(a), IpAddr::V4(b)) => u32::from(b) & mask32(self.len) == u32::from(a),
            (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(b) & mask128(self.len) == u128::from(a),
            _ => false,
        }
    }

    /// The two halves of this prefix (one bit longer each), or `None` for a whole address.
    pub fn halves(&self) -> Option<(IpPrefix, IpPrefix)> {
        if self.len == width(&self.addr) {
            return None;
        }
        let upper = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | (1u32 << (31 - self.len)))),
            IpAddr::V6(a) => {
                IpAddr::V6(Ipv6Addr::from(u128::from(a) | (1u128 << (127 - self.len))))
            }
        };
        Some((
            IpPrefix::new(self.addr, self.len + 1),
            IpPrefix::new(upper, self.len + 1),
        ))
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn width(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// The netmask of a `len`-bit IPv4 prefix, as a host-order number.
pub fn mask32(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

/// The netmask of a `len`-bit IPv6 prefix, as a host-order number.
pub fn mask128(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpPrefix {
        IpPrefix::parse(s).unwrap()
    }

    #[test]
    fn a_bare_address_is_a_whole_address_prefix() {
        assert_eq!(p("127.0.0.1").to_string(), "127.0.0.1/32");
        assert_eq!(p("::1").to_string(), "::1/128");
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(p("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("fe80::1:2/64").to_string(), "fe80::/64");
        assert_eq!(p("1.2.3.4/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0/8",
            "host",
            "1.2.3.4/8/8",
            " 1.2.3.4",
        ] {
            assert!(IpPrefix::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn containment_follows_the_prefix_length() {
        assert!(p("10.0.0.0/8").contains(&p("10.20.0.0/16")));
        assert!(p("10.0.0.0/8").contains(&p("10.0.0.0/8")));
        assert!(!p("10.20.0.0/16").contains(&p("10.0.0.0/8")));
        assert!(!p("10.0.0.0/8").contains(&p("11.0.0.0/16")));
        assert!(p("0.0.0.0/0").contains(&p("255.255.255.255")));
        assert!(!p("0.0.0.0/0").contains(&p("::1")));
        assert!(p("::/0").contains(&p("::1")));
    }

    #[test]
    fn halves_split_a_prefix_in_two() {
        let (low, high) = p("10.0.0.0/8").halves().unwrap();

        assert_eq!(
            (low.to_string(), high.to_string()),
            ("10.0.0.0/9".into(), "10.128.0.0/9".into())
        );
        assert_eq!(p("::1").halves(), None);
    }
}
