//! Which destination addresses the gateway may send to.
//!
//! Loopback, private, link-local and other special-purpose addresses are refused unless the
//! `network.allow` setting names them: a template must not be able to turn the gateway into
//! a proxy to the internal network. The check runs after DNS resolution (a hostname that
//! resolves to a private address is refused too) and on IP literals before any connection.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

/// One entry of `network.allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// `loopback`: 127.0.0.0/8 and ::1.
    Loopback,
    /// `private`: 10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10.
    Private,
    /// `link-local`: 169.254/16, fe80::/10.
    LinkLocal,
    /// A CIDR block such as `10.1.0.0/16` or a single address.
    Cidr { net: IpAddr, prefix: u8 },
}

impl FromStr for AllowRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "loopback" => return Ok(Self::Loopback),
            "private" => return Ok(Self::Private),
            "link-local" | "link_local" => return Ok(Self::LinkLocal),
            _ => {}
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not `loopback`, `private`, `link-local`, an IP address or a CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Self::Cidr { net, prefix })
    }
}

impl<'de> Deserialize<'de> for AllowRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The special-purpose class an address belongs to, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Loopback,
    Private,
    LinkLocal,
    /// Unspecified, broadcast, multicast, documentation: never a real destination.
    Reserved,
    Public,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "a loopback",
            Self::Private => "a private",
            Self::LinkLocal => "a link-local",
            Self::Reserved => "a reserved",
            Self::Public => "a public",
        })
    }
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                AddressClass::Loopback
            } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                AddressClass::Private
            } else if v4.is_link_local() {
                AddressClass::LinkLocal
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || o[0] == 0 {
                AddressClass::Reserved
            } else {
                AddressClass::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                AddressClass::Loopback
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                AddressClass::Private
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                AddressClass::LinkLocal
            } else if v6.is_unspecified() || v6.is_multicast() {
                AddressClass::Reserved
            } else {
                AddressClass::Public
            }
        }
    }
}

/// The `network` section of `hookgate.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Address classes or CIDR blocks that destinations may use besides public addresses.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
}

impl NetworkPolicy {
    /// A policy that also allows loopback destinations (tests, `hookgate catch`).
    pub fn allow_loopback() -> Self {
        Self { allow: vec![AllowRule::Loopback] }
    }

    /// `Ok` when the gateway may connect to `ip`; otherwise why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let class = classify(ip);
        if class == AddressClass::Public {
            return Ok(());
        }
        let allowed = self.allow.iter().any(|rule| match rule {
            AllowRule::Loopback => class == AddressClass::Loopback,
            AllowRule::Private => class == AddressClass::Private,
            AllowRule::LinkLocal => class == AddressClass::LinkLocal,
            AllowRule::Cidr { net, prefix } => cidr_contains(*net, *prefix, ip),
        });
        if allowed {
            Ok(())
        } else {
            Err(format!("{ip} is {class} address, which `network.allow` in hookgate.yaml does not allow"))
        }
    }
}

fn cidr_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            (u32::from(n) & mask) == (u32::from(a) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            (u128::from(n) & mask) == (u128::from(a) & mask)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_refuses_internal_addresses() {
        let p = NetworkPolicy::default();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.20.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(p.check(ip(a)).is_err(), "{a} must be refused");
        }
        assert!(p.check(ip("93.184.216.34")).is_ok());
        assert!(p.check(ip("2606:2800:220:1::1")).is_ok());
        assert!(p.check(ip("127.0.0.1")).unwrap_err().contains("loopback"));
    }

    #[test]
    fn allow_rules_open_what_they_name() {
        let p = NetworkPolicy { allow: vec!["loopback".parse().unwrap(), "10.1.0.0/16".parse().unwrap()] };
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("::1")).is_ok());
        assert!(p.check(ip("10.1.200.3")).is_ok());
        assert!(p.check(ip("10.2.0.1")).is_err());
        assert!(p.check(ip("192.168.0.1")).is_err());
    }

    #[test]
    fn bad_rules_are_explained() {
        assert!("10.0.0.0/33".parse::<AllowRule>().unwrap_err().contains("prefix"));
        assert!("intranet".parse::<AllowRule>().unwrap_err().contains("CIDR"));
    }
}
