//! DNS options of a push (protocol doc §10.2): `dhcp-option` for every client and the
//! 2.6 `dns` option (IV_PROTO bit 6), typed with their words.

use std::net::{IpAddr, SocketAddr};

use super::config::{PushError, decimal, directive, invalid, word};
use crate::key_method::Directive;

/// One `dhcp-option <kind> …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpOption {
    /// `DNS <addr>` (2.6 clients take IPv6 here too).
    Dns(IpAddr),
    /// `DOMAIN <name>`: the connection's DNS suffix.
    Domain(String),
    /// `DOMAIN-SEARCH <name>`: one more search domain.
    DomainSearch(String),
    /// Any other kind (`WINS`, `DNS6`, `NTP`, …) with its arguments.
    Other {
        /// The kind word.
        kind: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

/// One resolver address of `dns server N address …`, port optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsAddress {
    /// Address.
    pub ip: IpAddr,
    /// Port (53 when absent).
    pub port: Option<u16>,
}

impl From<IpAddr> for DnsAddress {
    fn from(ip: IpAddr) -> Self {
        DnsAddress { ip, port: None }
    }
}

impl DnsAddress {
    fn to_word(self) -> String {
        match self.port {
            None => self.ip.to_string(),
            Some(port) => SocketAddr::new(self.ip, port).to_string(),
        }
    }

    fn parse(word: &str) -> Option<Self> {
        if let Ok(ip) = word.parse() {
            return Some(DnsAddress { ip, port: None });
        }
        word.parse::<SocketAddr>().ok().map(|s| DnsAddress {
            ip: s.ip(),
            port: Some(s.port()),
        })
    }
}

/// `dns server <priority> address <addr> …` (2.6 `dns` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsServer {
    /// Priority (lower first), −128..=127.
    pub priority: i8,
    /// Addresses, at least one.
    pub addresses: Vec<DnsAddress>,
}

fn parse_priority(text: &str) -> Option<i8> {
    match text.strip_prefix('-') {
        Some(magnitude) => decimal::<i16>(magnitude).and_then(|m| i8::try_from(-m).ok()),
        None => decimal(text),
    }
}

pub(super) fn parse_dhcp_option(d: &Directive) -> Result<DhcpOption, PushError> {
    let Some((kind, args)) = d.args.split_first() else {
        return Err(invalid(d, "<kind> [value]"));
    };
    Ok(match (kind.as_str(), args) {
        ("DNS", [ip]) => DhcpOption::Dns(ip.parse().map_err(|_| invalid(d, "DNS <address>"))?),
        ("DNS", _) => return Err(invalid(d, "DNS <address>")),
        ("DOMAIN", [name]) => DhcpOption::Domain(name.clone()),
        ("DOMAIN", _) => return Err(invalid(d, "DOMAIN <name>")),
        ("DOMAIN-SEARCH", [name]) => DhcpOption::DomainSearch(name.clone()),
        ("DOMAIN-SEARCH", _) => return Err(invalid(d, "DOMAIN-SEARCH <name>")),
        _ => DhcpOption::Other {
            kind: kind.clone(),
            args: args.to_vec(),
        },
    })
}

pub(super) fn dhcp_option_directive(option: &DhcpOption) -> Result<Directive, PushError> {
    let (kind, args) = match option {
        DhcpOption::Dns(ip) => ("DNS", vec![word(ip)]),
        DhcpOption::Domain(name) => ("DOMAIN", vec![name.clone()]),
        DhcpOption::DomainSearch(name) => ("DOMAIN-SEARCH", vec![name.clone()]),
        DhcpOption::Other { kind, .. }
            if matches!(kind.as_str(), "DNS" | "DOMAIN" | "DOMAIN-SEARCH") =>
        {
            return Err(PushError::Unencodable {
                name: "dhcp-option",
                problem: "a typed kind (DNS, DOMAIN, DOMAIN-SEARCH) as `Other`",
            });
        }
        DhcpOption::Other { kind, args } => (kind.as_str(), args.clone()),
    };
    let mut words = vec![kind.to_owned()];
    words.extend(args);
    Ok(directive("dhcp-option", words))
}

/// `dns search-domains …` (if any) and one `dns server N address …` per server.
pub(super) fn dns_directives(
    search_domains: &[String],
    servers: &[DnsServer],
) -> Result<Vec<Directive>, PushError> {
    let mut out = Vec::new();
    if !search_domains.is_empty() {
        let mut args = vec![word("search-domains")];
        args.extend(search_domains.iter().cloned());
        out.push(directive("dns", args));
    }
    for (i, server) in servers.iter().enumerate() {
        if server.addresses.is_empty() {
            return Err(PushError::Unencodable {
                name: "dns",
                problem: "a server without addresses",
            });
        }
        if servers
            .iter()
            .take(i)
            .any(|s| s.priority == server.priority)
        {
            return Err(PushError::Unencodable {
                name: "dns",
                problem: "two servers with the same priority",
            });
        }
        let mut args = vec![word("server"), word(server.priority), word("address")];
        args.extend(server.addresses.iter().map(|a| a.to_word()));
        out.push(directive("dns", args));
    }
    Ok(out)
}

/// Applies one `dns` option: search domains and server addresses are typed (a repeated
/// priority adds addresses); other `dns` forms come back for the untyped list.
pub(super) fn apply_dns(
    search_domains: &mut Vec<String>,
    servers: &mut Vec<DnsServer>,
    d: Directive,
) -> Result<Option<Directive>, PushError> {
    match d.args.as_slice() {
        [kind, domains @ ..] if kind == "search-domains" => {
            if domains.is_empty() {
                return Err(invalid(&d, "search-domains <domain>…"));
            }
            search_domains.extend(domains.iter().cloned());
        }
        [kind, priority, key, addresses @ ..] if kind == "server" && key == "address" => {
            const EXPECTED: &str = "server <-128..127> address <addr[:port]>…";
            let priority = parse_priority(priority).ok_or_else(|| invalid(&d, EXPECTED))?;
            if addresses.is_empty() {
                return Err(invalid(&d, EXPECTED));
            }
            let addresses = addresses
                .iter()
                .map(|a| DnsAddress::parse(a))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid(&d, EXPECTED))?;
            match servers.iter_mut().find(|s| s.priority == priority) {
                Some(server) => server.addresses.extend(addresses),
                None => servers.push(DnsServer {
                    priority,
                    addresses,
                }),
            }
        }
        _ => return Ok(Some(d)),
    }
    Ok(None)
}
