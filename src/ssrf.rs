//! The outbound-address guard (SSRF).
//!
//! By default Deskhook refuses to deliver to loopback, private (RFC 1918, ULA), link-local
//! (169.254.0.0/16, fe80::/10), CGNAT (100.64.0.0/10), 0.0.0.0/8, 192.0.0.0/24,
//! benchmarking (198.18.0.0/15), reserved (240.0.0.0/4), broadcast, multicast, documentation
//! and unspecified addresses, and IPv6 site-local, discard and local-use NAT64 addresses.
//! IPv4-mapped, IPv4-translated, NAT64 and 6to4 IPv6 addresses are judged by the IPv4 address
//! inside. Operators exempt networks with `DESKHOOK_ALLOW_NETWORKS`.
//!
//! Names are checked after resolution, in the HTTP client's resolver, so a name cannot be
//! re-pointed at an internal address between a check and the connection.
//!
//! A leaf: endpoint validation (`webhooks`) and the delivery client both use it, and the
//! server builds the one guard from the settings. It must never resolve a name, open a
//! connection or import another module of the crate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Decides which destination addresses may be contacted.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    allow: Vec<IpNet>,
}

/// A destination the guard refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("destination {address} is a {class} address and is not in DESKHOOK_ALLOW_NETWORKS")]
pub struct Refused {
    /// The refused address.
    pub address: IpAddr,
    /// What kind of address it is.
    pub class: &'static str,
}

impl AddressGuard {
    /// A guard that exempts `allow`.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Whether `address` may be contacted.
    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        let inner = match address {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = |ip: IpAddr| self.allow.iter().any(|net| net.contains(&ip));
        if allowed(address) || inner.is_some_and(allowed) {
            return Ok(());
        }
        match forbidden_class(address) {
            Some(class) => Err(Refused { address, class }),
            None => Ok(()),
        }
    }
}

/// The class of a non-public address, or `None` for a public one.
pub fn forbidden_class(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return v4_class(v4);
            }
            v6_class(v6)
        }
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let class = if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 100 && (64..=127).contains(&b) {
        "shared (CGNAT)"
    } else if a == 0 {
        "unspecified"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol assignment"
    } else if a == 198 && (b == 18 || b == 19) {
        "benchmarking"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if a >= 240 {
        "reserved"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_documentation() {
        "documentation"
    } else {
        return None;
    };
    Some(class)
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    let class = if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if first & 0xfe00 == 0xfc00 {
        "private (ULA)"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        "documentation"
    } else if first & 0xffc0 == 0xfec0 {
        "site-local"
    } else if first == 0x0100 && ip.segments()[1..4].iter().all(|&x| x == 0) {
        "discard"
    } else if first == 0x0064 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 0x0001 {
        // RFC 8215: the IPv4 address sits where the operator's prefix length puts it, so no
        // one placement can be trusted to judge it.
        "local-use NAT64"
    } else {
        return None;
    };
    Some(class)
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated, IPv4-compatible,
/// NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // 6to4 (2002::/16) carries the IPv4 address in its second and third segments.
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    // IPv4-translated (`::ffff:0:a.b.c.d`, RFC 2765).
    let translated = s[..4].iter().all(|&x| x == 0) && s[4] == 0xffff && s[5] == 0;
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    let compatible = s[..6].iter().all(|&x| x == 0) && !ip.is_loopback() && !ip.is_unspecified();
    (translated || nat64 || compatible).then(|| v4(s[6], s[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        AddressGuard::default()
            .check(text.parse().expect("address"))
            .is_err()
    }

    #[test]
    fn every_documented_range_is_refused() {
        for address in [
            "127.0.0.1",
            "127.0.0.2",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
        ] {
            assert!(refused(address), "{address} must be refused");
        }
    }

    #[test]
    fn v6_forms_that_carry_or_reach_internal_addresses_are_refused() {
        for address in [
            // IPv4-translated (SIIT), judged by the IPv4 inside.
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
            // Local-use NAT64: where the IPv4 sits depends on the operator's prefix length.
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1::5db8:d822",
            // 6to4 embeds the IPv4 address in bits 16-48.
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            // Deprecated site-local and the discard prefix.
            "fec0::1",
            "100::1",
        ] {
            assert!(refused(address), "{address} must be refused");
        }
        assert!(!refused("2002:5db8:d822::1"), "6to4 of a public address");
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
            "100.128.0.1",
        ] {
            assert!(!refused(address), "{address} is public");
        }
    }

    #[test]
    fn the_allow_list_exempts_exactly_its_networks() {
        let guard = AddressGuard::new(vec!["127.0.0.1/32".parse().expect("cidr")]);
        assert!(guard.check("127.0.0.1".parse().expect("ip")).is_ok());
        assert!(guard.check("127.0.0.2".parse().expect("ip")).is_err());
        assert!(guard.check("::1".parse().expect("ip")).is_err());
        assert!(
            guard
                .check("::ffff:127.0.0.2".parse().expect("ip"))
                .is_err()
        );
    }

    mod properties {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

        use proptest::prelude::*;

        use super::super::*;

        /// Every IPv6 form that carries an IPv4 address, built from `v4`.
        fn carriers(v4: Ipv4Addr) -> [Ipv6Addr; 5] {
            let [a, b, c, d] = v4.octets();
            let hi = u16::from_be_bytes([a, b]);
            let lo = u16::from_be_bytes([c, d]);
            [
                v4.to_ipv6_mapped(),
                Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
                Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
                Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo),
            ]
        }

        proptest! {
            /// An IPv4 address is judged the same however IPv6 wraps it (mapped, translated,
            /// NAT64, 6to4, compatible), so no wrapping smuggles a private address out.
            #[test]
            fn every_ipv6_wrapping_of_an_ipv4_address_is_judged_as_the_address(raw in any::<u32>()) {
                let v4 = Ipv4Addr::from(raw);
                let direct = forbidden_class(IpAddr::V4(v4));
                for (i, v6) in carriers(v4).into_iter().enumerate() {
                    // `::a.b.c.d` with a.b.c.d of 0.0.0.0 or 0.0.0.1 is `::`/`::1` itself.
                    if i == 4 && raw <= 1 {
                        prop_assert!(forbidden_class(IpAddr::V6(v6)).is_some());
                        continue;
                    }
                    prop_assert_eq!(forbidden_class(IpAddr::V6(v6)), direct, "{}", v6);
                    prop_assert_eq!(
                        AddressGuard::default().check(IpAddr::V6(v6)).is_err(),
                        direct.is_some(),
                        "{}", v6
                    );
                }
            }

            /// The standard library's own predicates are a floor: whatever it calls loopback,
            /// private, link-local, multicast, broadcast, documentation or unspecified is refused.
            #[test]
            fn what_the_standard_library_calls_non_public_is_refused(raw in any::<u32>(), raw6 in any::<u128>()) {
                let v4 = Ipv4Addr::from(raw);
                if v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_multicast()
                    || v4.is_broadcast() || v4.is_documentation() || v4.is_unspecified()
                {
                    prop_assert!(forbidden_class(IpAddr::V4(v4)).is_some(), "{}", v4);
                }
                let v6 = Ipv6Addr::from(raw6);
                if v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()
                    || v6.is_unicast_link_local() || v6.is_unique_local()
                {
                    prop_assert!(forbidden_class(IpAddr::V6(v6)).is_some(), "{}", v6);
                }
            }

            /// An allow-listed network always passes, and nothing outside it gains from it.
            #[test]
            fn the_allow_list_exempts_exactly_its_networks(raw in any::<u32>(), prefix in 8_u8..=32, probe in any::<u32>()) {
                let net = IpNet::new(IpAddr::V4(Ipv4Addr::from(raw)), prefix).expect("net").trunc();
                let guard = AddressGuard::new(vec![net]);
                let probe = IpAddr::V4(Ipv4Addr::from(probe));
                let expected = net.contains(&probe) || forbidden_class(probe).is_none();
                prop_assert_eq!(guard.check(probe).is_ok(), expected);
            }
        }
    }
}
