//! What a proxy in front says about the request it forwards: gunicorn's
//! `--forwarded-allow-ips` and uvicorn's `--proxy-headers`.
//!
//! A proxy that terminates TLS (nginx with `ssl`) talks plain HTTP to the
//! app server, and says the client used HTTPS in a header
//! (`X-Forwarded-Proto: https`). The app needs to know (it builds URLs,
//! marks cookies secure), but anyone can send that header: it is believed
//! only from the proxies listed as trusted (`--forwarded-allow-ips`, by
//! default the loopback addresses, as gunicorn's). gunicorn never takes the
//! client's address from `X-Forwarded-For`; uvicorn does with
//! `--proxy-headers`, taking the right-most address a trusted proxy did not
//! add. Werkzeug's `ProxyFix` does the same inside the app.

use std::net::IpAddr;

use crate::http::request::{HttpError, RequestHead};

/// Which peers are trusted, and what their headers may change.
#[derive(Clone, Debug)]
pub struct Forwarded {
    trusted: Vec<Network>,
    /// `REMOTE_ADDR` from `X-Forwarded-For` (uvicorn's `--proxy-headers`).
    pub proxy_headers: bool,
}

/// An address with a prefix length (`10.0.0.0/8`), or every address (`*`).
#[derive(Clone, Copy, Debug)]
enum Network {
    Any,
    Prefix(IpAddr, u8),
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Network::Any, _) => true,
            (Network::Prefix(IpAddr::V4(net), len), IpAddr::V4(ip)) => prefix_match(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                len,
            ),
            (Network::Prefix(IpAddr::V6(net), len), IpAddr::V6(ip)) => {
                prefix_match(u128::from(net), u128::from(ip), len)
            }
            (Network::Prefix(IpAddr::V6(_), _), IpAddr::V4(ip)) => {
                self.contains(IpAddr::V6(ip.to_ipv6_mapped()))
            }
            (Network::Prefix(IpAddr::V4(_), _), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
        }
    }
}

fn prefix_match(a: u128, b: u128, len: u8) -> bool {
    len == 0 || (a ^ b) >> (128 - u32::from(len.min(128))) == 0
}

/// gunicorn's `secure_scheme_headers`: a header, and the value that means
/// HTTPS.
const SECURE_SCHEME_HEADERS: [(&str, &str); 3] = [
    ("x-forwarded-protocol", "ssl"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-ssl", "on"),
];

impl Forwarded {
    /// Reads `--forwarded-allow-ips`: addresses, networks (`10.0.0.0/8`,
    /// `fd00::/8`) or `*`, separated by commas.
    pub fn parse(allow: &str, proxy_headers: bool) -> Result<Forwarded, String> {
        let mut trusted = Vec::new();
        for item in allow.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                trusted.push(Network::Any);
                continue;
            }
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| {
                format!(
                    "--forwarded-allow-ips: '{item}' is not an address, a network (10.0.0.0/8) or *"
                )
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(l) => l.parse().ok().filter(|l| *l <= max).ok_or_else(|| {
                    format!("--forwarded-allow-ips: '{item}' has a bad prefix length")
                })?,
            };
            trusted.push(Network::Prefix(ip, len));
        }
        Ok(Forwarded {
            trusted,
            proxy_headers,
        })
    }

    pub fn trusts(&self, peer: &str) -> bool {
        peer.parse::<IpAddr>()
            .is_ok_and(|ip| self.trusted.iter().any(|n| n.contains(ip)))
    }

    /// What the trusted proxy `peer` says of `head`: `Ok(None)` if nothing,
    /// else the scheme and client address it reports. Headers that
    /// contradict each other (`X-Forwarded-Proto: https` with
    /// `X-Forwarded-Ssl: off`) are a 400, as gunicorn answers.
    pub fn read(&self, peer: &str, head: &RequestHead) -> Result<Option<Said>, HttpError> {
        if !self.trusts(peer) {
            return Ok(None);
        }
        let mut https: Option<bool> = None;
        for (name, value) in &head.headers {
            let Some((_, secure)) = SECURE_SCHEME_HEADERS
                .iter()
                .find(|(h, _)| name.eq_ignore_ascii_case(h))
            else {
                continue;
            };
            let says = value.trim_ascii().eq_ignore_ascii_case(secure.as_bytes());
            match https {
                Some(before) if before != says => {
                    return Err(HttpError::new(400, "contradictory scheme headers"));
                }
                _ => https = Some(says),
            }
        }
        let client = if self.proxy_headers {
            self.client_from_forwarded_for(head)
        } else {
            None
        };
        if https.is_none() && client.is_none() {
            return Ok(None);
        }
        Ok(Some(Said {
            https: https == Some(true),
            client,
        }))
    }

    /// The right-most address of `X-Forwarded-For` that no trusted proxy
    /// added: each proxy appends the address it got the request from.
    fn client_from_forwarded_for(&self, head: &RequestHead) -> Option<String> {
        let list: Vec<String> = head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
            .flat_map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect();
        let untrusted = list.iter().rev().find(|a| !self.trusts(a));
        untrusted.or(list.first()).cloned()
    }
}

/// What a trusted proxy reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Said {
    pub https: bool,
    pub client: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{Limits, parse_head};

    fn head(headers: &str) -> RequestHead {
        let raw = format!("GET / HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
        parse_head(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn only_trusted_peers_change_the_scheme() {
        let f = Forwarded::parse("127.0.0.1,::1", false).unwrap();
        let h = head("X-Forwarded-Proto: https\r\n");
        assert!(f.read("127.0.0.1", &h).unwrap().unwrap().https);
        assert_eq!(f.read("10.1.2.3", &h).unwrap(), None);
        let conflict = head("X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n");
        assert_eq!(f.read("127.0.0.1", &conflict).unwrap_err().status, 400);
    }

    #[test]
    fn networks_and_star() {
        let f = Forwarded::parse("10.0.0.0/8, fd00::/8", false).unwrap();
        assert!(f.trusts("10.200.0.1") && !f.trusts("11.0.0.1"));
        assert!(f.trusts("fd12::1") && !f.trusts("fe80::1"));
        assert!(Forwarded::parse("*", false).unwrap().trusts("203.0.113.9"));
        assert!(Forwarded::parse("10.0.0.0/33", false).is_err());
        assert!(Forwarded::parse("nope", false).is_err());
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let f = Forwarded::parse("127.0.0.1,10.0.0.0/8", true).unwrap();
        let h = head("X-Forwarded-For: 203.0.113.7, 198.51.100.2, 10.0.0.5\r\n");
        let said = f.read("127.0.0.1", &h).unwrap().unwrap();
        assert_eq!(said.client.as_deref(), Some("198.51.100.2"));
        assert!(!said.https);
    }
}
