//! Which destination addresses the gateway may send to.
//!
//! Loopback, private, link-local and other special-purpose addresses are refused unless the
//! `network.allow` setting names them: a template must not be able to turn the gateway into
//! a proxy to the internal network. The HTTP client ([`crate::delivery::client`]) applies
//! [`NetworkPolicy::check`] to the peer address of every connection it makes; before
//! connecting it also checks IP literals and every address a hostname resolves to, so a
//! refused address is normally never connected to at all.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::Deserialize;
use url::{Host, Url};

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

impl schemars::JsonSchema for AllowRule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AllowRule".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`loopback`, `private`, `link-local`, an IP address or a CIDR block (`10.1.0.0/16`).",
            "anyOf": [
                {"enum": ["loopback", "private", "link-local", "link_local"]},
                {"type": "string", "pattern": r"^\s*[0-9A-Fa-f:.]+(/[0-9]{1,3})?\s*$"},
            ],
        })
    }
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
    /// Private (RFC 1918, shared 100.64/10, unique-local fc00::/7, site-local fec0::/10).
    Private,
    LinkLocal,
    /// Not a destination on the internet: unspecified, broadcast, multicast, documentation,
    /// benchmarking, protocol assignments, discard, deprecated and unallocated ranges.
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

/// The IPv4 address an IPv6 address carries, for the forms whose traffic ends at it: the
/// IPv4-mapped `::ffff:a.b.c.d` (a dual-stack socket's view of an IPv4 peer), NAT64 with the
/// well-known prefix `64:ff9b::a.b.c.d` (RFC 6052; the translator forwards to `a.b.c.d`) and
/// 6to4 `2002:AABB:CCDD::/48` (RFC 3056; relays tunnel to `AA.BB.CC.DD`).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if bits >> 112 == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// Classifies an address after the IANA special-purpose registries (RFC 6890 and updates).
///
/// IPv6 forms that carry an IPv4 address the traffic ends at ([`embedded_ipv4`]) are
/// classified by that address: `64:ff9b::169.254.169.254` is link-local, `2002:0a00:0001::`
/// private, `64:ff9b::8.8.8.8` public (an IPv6-only network reaches IPv4 sites that way).
/// Forms whose IPv4 address cannot be read reliably, or that are deprecated, are reserved
/// outright: IPv4-compatible `::a.b.c.d` (deprecated by RFC 4291), the local-use NAT64
/// prefix `64:ff9b:1::/48` (RFC 8215; the operator picks where the IPv4 address sits) and
/// Teredo `2001::/32`. Only a CIDR rule in `network.allow` opens a reserved address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(v4: Ipv4Addr) -> AddressClass {
    let bits = u32::from(v4);
    let within = |net: [u8; 4], prefix: u32| {
        let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
        bits & mask == u32::from_be_bytes(net) & mask
    };
    if within([127, 0, 0, 0], 8) {
        AddressClass::Loopback
    } else if within([10, 0, 0, 0], 8)
        || within([172, 16, 0, 0], 12)
        || within([192, 168, 0, 0], 16)
        || within([100, 64, 0, 0], 10)
    {
        AddressClass::Private
    } else if within([169, 254, 0, 0], 16) {
        AddressClass::LinkLocal
    } else if within([0, 0, 0, 0], 8) // "this network", including 0.0.0.0
        || within([192, 0, 0, 0], 24) // IETF protocol assignments (DS-Lite, NAT64 discovery, ...)
        || within([192, 0, 2, 0], 24) // TEST-NET-1
        || within([192, 88, 99, 0], 24) // deprecated 6to4 relay anycast (RFC 7526)
        || within([198, 18, 0, 0], 15) // benchmarking
        || within([198, 51, 100, 0], 24) // TEST-NET-2
        || within([203, 0, 113, 0], 24) // TEST-NET-3
        || within([224, 0, 0, 0], 4) // multicast
        || within([240, 0, 0, 0], 4)
    // reserved, including the broadcast 255.255.255.255
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(v6: Ipv6Addr) -> AddressClass {
    let bits = u128::from(v6);
    let within = |net: u128, prefix: u32| {
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
        bits & mask == net & mask
    };
    if bits == 1 {
        AddressClass::Loopback
    } else if within(0xfc00 << 112, 7) || within(0xfec0 << 112, 10) {
        // Unique-local, and the deprecated site-local (RFC 3879) some networks still route.
        AddressClass::Private
    } else if within(0xfe80 << 112, 10) {
        AddressClass::LinkLocal
    } else if !within(0x2000 << 112, 3) {
        // Outside global unicast: unspecified ::, IPv4-compatible ::/96, discard-only
        // 100::/64 and the dummy prefix 100:0:0:1::/64, the local-use NAT64 prefix
        // 64:ff9b:1::/48, SRv6 SIDs 5f00::/16, multicast ff00::/8 and everything IANA has not
        // allocated. (The well-known NAT64 prefix was read as its IPv4 address above.)
        AddressClass::Reserved
    } else if within(0x2001_0000 << 96, 23) && !global_in_2001_23(v6) {
        // IETF protocol assignments: Teredo 2001::/32, benchmarking 2001:2::/48, ORCHID
        // 2001:10::/28 and ORCHIDv2 2001:20::/28 (identifiers, not locators), DETs 2001:30::/28.
        AddressClass::Reserved
    } else if within(0x2001_0db8 << 96, 32) || within(0x3fff << 112, 20) {
        // Documentation (RFC 3849, RFC 9637).
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// The globally reachable assignments inside 2001::/23: the PCP, TURN and DNS-SD anycast
/// addresses 2001:1::1..3, AMT 2001:3::/32 and AS112-v6 2001:4:112::/48.
fn global_in_2001_23(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    let bits = u128::from(v6);
    matches!(bits, 0x2001_0001_0000_0000_0000_0000_0000_0001..=0x2001_0001_0000_0000_0000_0000_0000_0003)
        || (s[0] == 0x2001 && s[1] == 3)
        || (s[0] == 0x2001 && s[1] == 4 && s[2] == 0x112)
}

/// The `network` section of `hookgate.yaml`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Address classes or CIDR blocks that destinations may use besides public addresses.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// Refuse cleartext `http://` for destinations, token URLs and plugin fetches: only an
    /// IP-literal host that an address or CIDR rule of `allow` covers may still use it
    /// (class rules such as `loopback` and hostnames do not count). Default false.
    #[serde(default)]
    pub https_only: bool,
}

impl NetworkPolicy {
    /// A policy that also allows loopback destinations (tests, `hookgate catch`).
    pub fn allow_loopback() -> Self {
        Self { allow: vec![AllowRule::Loopback], ..Self::default() }
    }

    /// `Ok` when the gateway may connect to `ip`; otherwise why not. IPv6 forms that carry
    /// an IPv4 address are classified by it (see [`classify`]), and CIDR rules match either.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let class = classify(ip);
        if class == AddressClass::Public {
            return Ok(());
        }
        let allowed = self.allow.iter().any(|rule| match rule {
            AllowRule::Loopback => class == AddressClass::Loopback,
            AllowRule::Private => class == AddressClass::Private,
            AllowRule::LinkLocal => class == AddressClass::LinkLocal,
            AllowRule::Cidr { net, prefix } => cidr_covers(*net, *prefix, ip),
        });
        if allowed {
            Ok(())
        } else {
            Err(format!("{ip} is {class} address, which `network.allow` in hookgate.yaml does not allow"))
        }
    }

    /// Whether an address or CIDR rule of `allow` covers `ip` (what `https_only` accepts
    /// cleartext to).
    pub fn names_explicitly(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|rule| matches!(rule, AllowRule::Cidr { net, prefix } if cidr_covers(*net, *prefix, ip)))
    }

    /// What can be told from a URL before connecting: the scheme is http or https (and
    /// https when `https_only` asks for it), it has a host, and an IP-literal host is
    /// allowed. Hostnames are checked on every address they resolve to, and every
    /// connection on the address it reached, by the HTTP client.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let literal: Option<IpAddr> = match url.host() {
            Some(Host::Ipv4(v4)) => Some(v4.into()),
            Some(Host::Ipv6(v6)) => Some(v6.into()),
            Some(Host::Domain(_)) => None,
            None => return Err("the URL has no host".into()),
        };
        match url.scheme() {
            "https" => {}
            "http" if !self.https_only => {}
            "http" => {
                if !literal.is_some_and(|ip| self.names_explicitly(ip)) {
                    return Err("`http://` is refused because `network.https_only` is set in hookgate.yaml; use \
                         https, or list the IP address (or its CIDR block) in `network.allow` and use it as the host"
                        .into());
                }
            }
            other => return Err(format!("scheme `{other}` is not http or https")),
        }
        match literal {
            Some(ip) => self.check(ip),
            None => Ok(()),
        }
    }
}

/// Whether the block covers `ip`, or the IPv4 address `ip` carries ([`embedded_ipv4`]).
fn cidr_covers(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let embedded = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    cidr_contains(net, prefix, ip) || embedded.is_some_and(|v4| cidr_contains(net, prefix, v4))
}

fn cidr_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            (u32::from(n) & mask) == (u32::from(a) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
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
    fn every_special_purpose_range_is_refused() {
        let p = NetworkPolicy::default();
        let reserved = [
            // IPv4
            "0.1.2.3",
            "192.0.0.8",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.254",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "250.1.2.3",
            "255.255.255.255",
            // IPv6
            "::",
            "::7f00:1",
            "::a9fe:a9fe",
            "::8.8.8.8",
            "100::1",
            "100:0:0:1::1",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:ffff::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "2001:30::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "ff02::1",
            "4000::1",
        ];
        for a in reserved {
            assert_eq!(classify(ip(a)), AddressClass::Reserved, "{a}");
            assert!(p.check(ip(a)).unwrap_err().contains("reserved"), "{a} must be refused as reserved");
        }
        for (a, class) in [
            ("fec0::1", AddressClass::Private),
            ("feff::1", AddressClass::Private),
            ("fd00::1", AddressClass::Private),
            ("100.127.255.254", AddressClass::Private),
        ] {
            assert_eq!(classify(ip(a)), class, "{a}");
            assert!(p.check(ip(a)).is_err(), "{a} must be refused");
        }
    }

    #[test]
    fn embedded_ipv4_is_classified_by_the_address_it_carries() {
        let p = NetworkPolicy::default();
        for (a, class) in [
            // NAT64, well-known prefix (RFC 6052): the metadata service through a translator.
            ("64:ff9b::169.254.169.254", AddressClass::LinkLocal),
            ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
            ("64:ff9b::127.0.0.1", AddressClass::Loopback),
            ("64:ff9b::10.0.0.1", AddressClass::Private),
            ("64:ff9b::192.0.2.1", AddressClass::Reserved),
            // 6to4 (RFC 3056): the IPv4 address in bits 16..48.
            ("2002:a9fe:a9fe::1", AddressClass::LinkLocal),
            ("2002:7f00:1::", AddressClass::Loopback),
            ("2002:c0a8:101::1", AddressClass::Private),
            ("2002:e000:1::1", AddressClass::Reserved),
            // IPv4-mapped.
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:198.18.0.1", AddressClass::Reserved),
            ("::ffff:240.0.0.1", AddressClass::Reserved),
        ] {
            assert_eq!(classify(ip(a)), class, "{a}");
            assert!(p.check(ip(a)).is_err(), "{a} must be refused");
        }
        // Public IPv4 through NAT64 or 6to4 is public, as in an IPv6-only network.
        for a in ["64:ff9b::8.8.8.8", "2002:808:808::1", "::ffff:93.184.216.34"] {
            assert!(p.check(ip(a)).is_ok(), "{a}");
        }
        // The globally reachable assignments inside 2001::/23 stay public.
        for a in ["2001:1::1", "2001:1::2", "2001:3::1", "2001:4:112::1", "2001:200::1"] {
            assert_eq!(classify(ip(a)), AddressClass::Public, "{a}");
        }
        // Class and CIDR rules see the embedded address too.
        let loopback = NetworkPolicy::allow_loopback();
        assert!(loopback.check(ip("64:ff9b::127.0.0.1")).is_ok());
        assert!(loopback.check(ip("64:ff9b::169.254.169.254")).is_err());
        let cidr = NetworkPolicy { allow: vec!["10.1.0.0/16".parse().unwrap()], ..Default::default() };
        assert!(cidr.check(ip("::ffff:10.1.2.3")).is_ok());
        assert!(cidr.check(ip("64:ff9b::10.1.2.3")).is_ok());
        assert!(cidr.check(ip("64:ff9b::10.2.2.3")).is_err());
        // A reserved form opens only by a CIDR rule that names it.
        let compat = NetworkPolicy { allow: vec!["::/96".parse().unwrap()], ..Default::default() };
        assert!(NetworkPolicy::allow_loopback().check(ip("::127.0.0.1")).is_err());
        assert!(compat.check(ip("::127.0.0.1")).is_ok());
    }

    #[test]
    fn urls_are_checked_for_scheme_host_and_literal() {
        let p = NetworkPolicy::allow_loopback();
        let url = |s: &str| s.parse::<Url>().unwrap();
        assert!(p.check_url(&url("http://127.0.0.1:9/")).is_ok());
        assert!(p.check_url(&url("https://example.com/")).is_ok());
        assert!(p.check_url(&url("ftp://example.com/")).unwrap_err().contains("scheme"));
        for refused in [
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[::7f00:1]/",
            "http://[fec0::1]/",
            "http://240.0.0.1/",
            "http://198.18.0.1/",
            "http://192.0.0.1/",
            "http://203.0.113.1/",
            "http://[2001:db8::1]/",
            "http://0xa9.0xfe.0xa9.0xfe/",
        ] {
            assert!(p.check_url(&url(refused)).is_err(), "{refused}");
        }
    }

    #[test]
    fn https_only_refuses_cleartext_except_to_named_addresses() {
        let url = |s: &str| s.parse::<Url>().unwrap();
        let p = NetworkPolicy { allow: vec![AllowRule::Loopback], https_only: true };
        let e = p.check_url(&url("http://127.0.0.1:9/")).unwrap_err();
        assert!(e.contains("https_only"), "{e}");
        assert!(p.check_url(&url("http://localhost:9/")).is_err());
        assert!(p.check_url(&url("http://example.com/")).is_err());
        assert!(p.check_url(&url("https://127.0.0.1:9/")).is_ok());
        assert!(p.check_url(&url("https://example.com/")).is_ok());
        let named = NetworkPolicy { allow: vec!["127.0.0.2".parse().unwrap()], https_only: true };
        assert!(named.check_url(&url("http://127.0.0.2:9/")).is_ok());
        assert!(named.check_url(&url("http://127.0.0.1:9/")).is_err());
        assert!(NetworkPolicy::allow_loopback().check_url(&url("http://127.0.0.1:9/")).is_ok(), "off by default");
    }

    #[test]
    fn allow_rules_open_what_they_name() {
        let p = NetworkPolicy {
            allow: vec!["loopback".parse().unwrap(), "10.1.0.0/16".parse().unwrap()],
            ..Default::default()
        };
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
