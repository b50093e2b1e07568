//! Who is on the other end of a request: the socket's peer, unless the peer is a proxy the operator trusts
//! (`TRUSTED_PROXIES`), in which case the address that proxy put in `X-Forwarded-For`. Read from the right:
//! each trusted proxy appends the address it received from, so the rightmost address that is not a trusted
//! proxy is the client as far as anyone trusted can tell; what is further left is whatever the client wrote.

use std::net::IpAddr;

/// Addresses and networks (`10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1`) of proxies allowed to name the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// A list separated by commas or spaces; each an address or `address/prefix`.
    pub fn parse(raw: &str) -> Result<TrustedProxies, String> {
        raw.split([',', ' '])
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (address, prefix) = entry.split_once('/').unwrap_or((entry, ""));
                let address: IpAddr = address.parse().map_err(|_| format!("{entry:?} is not an address"))?;
                let most = if address.is_ipv4() { 32 } else { 128 };
                let prefix = if prefix.is_empty() {
                    most
                } else {
                    prefix.parse::<u8>().ok().filter(|p| *p <= most).ok_or(format!("{entry:?} has a bad prefix"))?
                };
                Ok((address, prefix))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|(network, prefix)| within(address, canonical(*network), *prefix))
    }

    /// The client behind `peer`, given the `X-Forwarded-For` values the request carries.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.contains(peer) {
            return canonical(peer);
        }
        let hops: Vec<IpAddr> = forwarded_for.flat_map(|value| value.split(',')).filter_map(hop).collect();
        hops.iter().rev().copied().find(|hop| !self.contains(*hop)).map_or(canonical(peer), canonical)
    }
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port (`[2001:db8::1]:443`, `192.0.2.1:80`).
fn hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry.parse().ok().or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// IPv4 clients reaching an IPv6 socket arrive as `::ffff:a.b.c.d`: the same client as `a.b.c.d`.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn within(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_may_name_the_client() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.0.2.10 2001:db8::/32").unwrap();
        let forwarded = ["198.51.100.7, 10.1.2.3"];
        assert_eq!(trusted.client(ip("10.9.9.9"), forwarded.into_iter()), ip("198.51.100.7"));
        assert_eq!(trusted.client(ip("203.0.113.5"), forwarded.into_iter()), ip("203.0.113.5"), "not a proxy");
        assert_eq!(TrustedProxies::default().client(ip("10.9.9.9"), forwarded.into_iter()), ip("10.9.9.9"));
    }

    #[test]
    fn what_a_client_writes_left_of_the_proxies_is_not_believed() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client sent its own X-Forwarded-For naming someone else; the proxy appended the real address.
        let forwarded = ["1.2.3.4", "203.0.113.9"];
        assert_eq!(trusted.client(ip("10.0.0.2"), forwarded.into_iter()), ip("203.0.113.9"));
        assert_eq!(trusted.client(ip("10.0.0.2"), ["garbage, 10.0.0.3"].into_iter()), ip("10.0.0.2"));
        assert_eq!(trusted.client(ip("10.0.0.2"), ["[2001:db8::9]:443"].into_iter()), ip("2001:db8::9"));
    }

    #[test]
    fn networks_match_by_prefix_in_both_families() {
        let trusted = TrustedProxies::parse("192.168.0.0/16,2001:db8::/32,127.0.0.1").unwrap();
        assert!(trusted.contains(ip("192.168.44.1")) && !trusted.contains(ip("192.169.0.1")));
        assert!(trusted.contains(ip("2001:db8:ffff::1")) && !trusted.contains(ip("2001:db9::1")));
        assert!(trusted.contains(ip("::ffff:127.0.0.1")) && !trusted.contains(ip("127.0.0.2")));
        assert!(TrustedProxies::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "not-an-ip", "::/129"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }
}
