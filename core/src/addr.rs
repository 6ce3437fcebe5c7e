//! Relay addresses (`host:port`) and the rule for which addresses learned from the network may
//! be used: relays and clients both learn relay addresses through `/sync/servers`, and neither
//! may be pointed at loopback or a private network by a stranger.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `host:port` of a relay. Hosts are lowercase; IPv6 literals are kept without brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayAddr {
    pub host: String,
    pub port: u16,
}

impl RelayAddr {
    /// Parses `host:port` or `[ipv6]:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or("expected [IPv6]:PORT")?;
            (h, p)
        } else {
            text.rsplit_once(':').ok_or("expected HOST:PORT")?
        };
        let port: u16 = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
        Self::new(host, port)
    }

    pub fn new(host: &str, port: u16) -> Result<Self, String> {
        if port == 0 {
            return Err("port must be 1..65535".into());
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.parse::<IpAddr>().is_err() && !is_valid_domain(&host) {
            return Err(format!(
                "{host:?} is neither an IP address nor a domain name"
            ));
        }
        Ok(Self { host, port })
    }

    pub fn from_socket(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// Base URL for requests to this relay.
    pub fn base_url(&self) -> String {
        format!("http://{self}")
    }

    /// Whether an address learned from another relay (not configured) may be used.
    pub fn learnable(&self, allow_private: bool) -> Result<(), String> {
        if allow_private {
            return Ok(());
        }
        match self.host.parse::<IpAddr>() {
            Ok(ip) if !is_public_ip(ip) => Err(format!("{ip} is not a public address")),
            Ok(_) => Ok(()),
            Err(_) if self.host == "localhost" || self.host.ends_with(".localhost") => {
                Err("localhost is not a public address".into())
            }
            // Names are checked again when resolved (see `PublicOnlyResolver`).
            Err(_) => Ok(()),
        }
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn is_valid_domain(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Globally routable unicast: not loopback, private, link-local, CGNAT, multicast,
/// unspecified, documentation or broadcast.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local
                || (seg0 & 0xffc0) == 0xfe80 // link-local
                || (seg0 == 0x2001 && v6.segments()[1] == 0x0db8)) // documentation
                && v6 != Ipv6Addr::LOCALHOST
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || o[0] >= 240)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print() {
        assert_eq!(
            RelayAddr::parse("127.0.0.1:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            RelayAddr::parse("[::1]:80").unwrap().to_string(),
            "[::1]:80"
        );
        assert_eq!(
            RelayAddr::parse("Relay.Example.org:1").unwrap().host,
            "relay.example.org"
        );
        assert!(RelayAddr::parse("relay:0").is_err());
        assert!(RelayAddr::parse("relay").is_err());
        assert!(RelayAddr::parse("a b:80").is_err());
        assert!(RelayAddr::parse("http://x:80").is_err());
    }

    #[test]
    fn learned_private_addresses_need_permission() {
        for a in [
            "127.0.0.1:1",
            "10.1.2.3:1",
            "192.168.0.1:1",
            "169.254.1.1:1",
            "[::1]:1",
            "[fd00::1]:1",
            "localhost:1",
            "100.64.0.1:1",
            "0.0.0.0:1",
        ] {
            let p = RelayAddr::parse(a).unwrap();
            assert!(p.learnable(false).is_err(), "{a}");
            assert!(p.learnable(true).is_ok(), "{a}");
        }
        for a in [
            "8.8.8.8:53",
            "[2606:4700::1111]:443",
            "relay.example.org:8080",
        ] {
            assert!(RelayAddr::parse(a).unwrap().learnable(false).is_ok(), "{a}");
        }
    }
}
