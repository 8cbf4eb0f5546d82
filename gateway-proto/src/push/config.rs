//! The typed content of a PUSH_REPLY (protocol doc §10.2): what the client applies, turned
//! into options in the order a 2.6 server sends them and parsed back from them.

use std::net::Ipv4Addr;
use std::str::FromStr;

use super::dns::{
    DhcpOption, DnsServer, apply_dns, dhcp_option_directive, dns_directives, parse_dhcp_option,
};
use super::route::{
    Ifconfig, IfconfigIpv6, RedirectGateway, Route, RouteIpv6, Topology, ifconfig_directive,
    ifconfig_ipv6_directive, merge_redirect_gateway, parse_ifconfig, parse_ifconfig_ipv6,
    parse_route, parse_route_ipv6, parse_topology, redirect_gateway_directive, route_directive,
    route_ipv6_directive, topology_directive,
};
use crate::data::Cipher;
use crate::key_method::{Directive, OptionError};

/// Largest pushable `peer-id`; `0xFFFFFF` means "no peer-id" on the wire (§14).
pub const MAX_PEER_ID: u32 = 0xFF_FFFE;

/// Everything a PUSH_REPLY sets, in typed form. [`PushConfig::to_directives`] and
/// [`PushConfig::from_directives`] are inverse; `push-continuation` is not part of it (see
/// [`PushConfig::to_messages`] and [`super::PushReplyAssembler`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushConfig {
    /// `redirect-gateway …` (full tunnel).
    pub redirect_gateway: Option<RedirectGateway>,
    /// `route …` (split tunnel; net30 also pushes the server address).
    pub routes: Vec<Route>,
    /// `route-ipv6 …`.
    pub routes_ipv6: Vec<RouteIpv6>,
    /// `dhcp-option …`, in order.
    pub dhcp_options: Vec<DhcpOption>,
    /// `block-outside-dns` (Windows clients only).
    pub block_outside_dns: bool,
    /// `dns search-domains …` (2.6 `dns` option, IV_PROTO bit 6).
    pub dns_search_domains: Vec<String>,
    /// `dns server <priority> address …` (2.6 `dns` option), at most one per priority.
    pub dns_servers: Vec<DnsServer>,
    /// `route-gateway <addr>`.
    pub route_gateway: Option<Ipv4Addr>,
    /// `topology …`.
    pub topology: Option<Topology>,
    /// `ping <seconds>`.
    pub ping: Option<u32>,
    /// `ping-restart <seconds>`.
    pub ping_restart: Option<u32>,
    /// `explicit-exit-notify <n>`.
    pub explicit_exit_notify: Option<u32>,
    /// `ifconfig <address> <netmask|remote>`.
    pub ifconfig: Option<Ifconfig>,
    /// `ifconfig-ipv6 <address>/<bits> [remote]`.
    pub ifconfig_ipv6: Option<IfconfigIpv6>,
    /// `peer-id <n>`, at most [`MAX_PEER_ID`].
    pub peer_id: Option<u32>,
    /// `cipher <NAME>`.
    pub cipher: Option<Cipher>,
    /// `protocol-flags …`.
    pub protocol_flags: Option<ProtocolFlags>,
    /// `key-derivation tls-ekm` (clients with TLS_KEY_EXPORT but without CC_EXIT_NOTIFY).
    pub key_derivation_tls_ekm: bool,
    /// `tun-mtu <n>`.
    pub tun_mtu: Option<u32>,
    /// `auth-token <token>`.
    pub auth_token: Option<String>,
    /// `auth-token-user <base64 username>`.
    pub auth_token_user: Option<String>,
    /// Options this type does not model, in order, sent last. Must not hold an option the
    /// typed fields cover (building fails with [`PushError::TypedOptionInOther`]).
    pub other: Vec<Directive>,
}

/// Words of `protocol-flags`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtocolFlags {
    /// `cc-exit`: the client sends EXIT on the control channel.
    pub cc_exit: bool,
    /// `tls-ekm`: data keys from the TLS exporter.
    pub tls_ekm: bool,
    /// `dyn-tls-crypt`: dynamic tls-crypt for renegotiations (§8.3).
    pub dyn_tls_crypt: bool,
    /// `aead-epoch`: 2.7 epoch data format (§8.3).
    pub aead_epoch: bool,
}

impl ProtocolFlags {
    fn words(&self) -> [(bool, &'static str); 4] {
        [
            (self.cc_exit, "cc-exit"),
            (self.tls_ekm, "tls-ekm"),
            (self.dyn_tls_crypt, "dyn-tls-crypt"),
            (self.aead_epoch, "aead-epoch"),
        ]
    }
}

/// Why push options could not be built, parsed or split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// A known option with arguments it cannot take.
    #[error("push option {name:?}: expected {expected}, found {found:?}")]
    InvalidOption {
        /// Option name.
        name: String,
        /// What its arguments should look like.
        expected: &'static str,
        /// The arguments given.
        found: Vec<String>,
    },
    /// A typed value the wire cannot carry (our side's configuration).
    #[error("push option {name:?}: cannot send {problem}")]
    Unencodable {
        /// Option name.
        name: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// A `PushConfig::other` entry that a typed field covers.
    #[error("push option {name:?} in the untyped list is covered by a typed field")]
    TypedOptionInOther {
        /// Option name.
        name: String,
    },
    /// An option's text is 256 bytes or more (§10.2).
    #[error("push option {name:?}: {len} bytes, options must stay under 256")]
    OptionTooLong {
        /// Option name.
        name: String,
        /// Its text length.
        len: usize,
    },
    /// The message size limit leaves no room for an option.
    #[error("push option {name:?} needs a {needed}-byte PUSH_REPLY, limit is {limit}")]
    LimitTooSmall {
        /// Option name.
        name: String,
        /// Smallest message that holds it.
        needed: usize,
        /// The limit given.
        limit: usize,
    },
    /// `push-continuation` with a value other than 1 or 2, or given twice in one message.
    #[error("push-continuation: expected one `push-continuation 1|2` per message, found {found:?}")]
    BadContinuation {
        /// The arguments of the offending option.
        found: Vec<String>,
    },
    /// A continued PUSH_REPLY grew past the option count limit.
    #[error("continued PUSH_REPLY: more than {max} options")]
    TooManyOptions {
        /// The limit.
        max: usize,
    },
    /// Option text that does not split into words, or a word with `,` or NUL.
    #[error(transparent)]
    Option(#[from] OptionError),
}

pub(super) fn directive(name: &str, args: Vec<String>) -> Directive {
    Directive {
        name: name.to_owned(),
        args,
    }
}

pub(super) fn word(value: impl ToString) -> String {
    value.to_string()
}

pub(super) fn invalid(d: &Directive, expected: &'static str) -> PushError {
    PushError::InvalidOption {
        name: d.name.clone(),
        expected,
        found: d.args.clone(),
    }
}

/// Strict decimal: ASCII digits only (no sign, no spaces).
pub(super) fn decimal<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub(super) fn one_arg<'a>(d: &'a Directive, expected: &'static str) -> Result<&'a str, PushError> {
    match d.args.as_slice() {
        [only] => Ok(only),
        _ => Err(invalid(d, expected)),
    }
}

fn one_number(d: &Directive, expected: &'static str) -> Result<u32, PushError> {
    decimal(one_arg(d, expected)?).ok_or_else(|| invalid(d, expected))
}

pub(super) fn ipv4(
    d: &Directive,
    text: &str,
    expected: &'static str,
) -> Result<Ipv4Addr, PushError> {
    text.parse().map_err(|_| invalid(d, expected))
}

impl PushConfig {
    /// The options in the order a 2.6 server sends them: routing and DNS first, then
    /// `route-gateway`, `topology`, timers, then the per-client `ifconfig`, `peer-id`,
    /// `cipher`, `protocol-flags`, `tun-mtu`, then `auth-token` and [`Self::other`].
    pub fn to_directives(&self) -> Result<Vec<Directive>, PushError> {
        let mut out = Vec::new();
        out.extend(
            self.redirect_gateway
                .as_ref()
                .map(redirect_gateway_directive),
        );
        out.extend(self.routes.iter().map(route_directive));
        for route in &self.routes_ipv6 {
            out.push(route_ipv6_directive(route)?);
        }
        for option in &self.dhcp_options {
            out.push(dhcp_option_directive(option)?);
        }
        if self.block_outside_dns {
            out.push(directive("block-outside-dns", Vec::new()));
        }
        out.extend(dns_directives(&self.dns_search_domains, &self.dns_servers)?);
        if let Some(gw) = self.route_gateway {
            out.push(directive("route-gateway", vec![word(gw)]));
        }
        if let Some(topology) = self.topology {
            out.push(topology_directive(topology));
        }
        let numbers = [
            ("ping", self.ping),
            ("ping-restart", self.ping_restart),
            ("explicit-exit-notify", self.explicit_exit_notify),
        ];
        for (name, value) in numbers {
            if let Some(v) = value {
                out.push(directive(name, vec![word(v)]));
            }
        }
        out.extend(self.ifconfig.as_ref().map(ifconfig_directive));
        if let Some(ifconfig) = &self.ifconfig_ipv6 {
            out.push(ifconfig_ipv6_directive(ifconfig)?);
        }
        if let Some(id) = self.peer_id {
            if id > MAX_PEER_ID {
                return Err(PushError::Unencodable {
                    name: "peer-id",
                    problem: "a value above 0xFFFFFE",
                });
            }
            out.push(directive("peer-id", vec![word(id)]));
        }
        if let Some(cipher) = self.cipher {
            out.push(directive("cipher", vec![word(cipher.name())]));
        }
        if let Some(flags) = &self.protocol_flags {
            let args = flags
                .words()
                .into_iter()
                .filter(|(on, _)| *on)
                .map(|(_, w)| word(w));
            out.push(directive("protocol-flags", args.collect()));
        }
        if self.key_derivation_tls_ekm {
            out.push(directive("key-derivation", vec![word("tls-ekm")]));
        }
        if let Some(mtu) = self.tun_mtu {
            out.push(directive("tun-mtu", vec![word(mtu)]));
        }
        if let Some(token) = &self.auth_token {
            out.push(directive("auth-token", vec![token.clone()]));
        }
        if let Some(user) = &self.auth_token_user {
            out.push(directive("auth-token-user", vec![user.clone()]));
        }
        for d in &self.other {
            let mut probe = PushConfig::default();
            let covered = match probe.apply(d.clone()) {
                Ok(()) => probe.other.is_empty(),
                Err(_) => true,
            };
            if covered {
                return Err(PushError::TypedOptionInOther {
                    name: d.name.clone(),
                });
            }
            out.push(d.clone());
        }
        Ok(out)
    }

    /// Applies options in order as a client does: later single-valued options replace
    /// earlier ones, lists grow, `redirect-gateway` flags merge, unknown options go to
    /// [`Self::other`]. A known option with bad arguments is an error.
    pub fn from_directives(
        directives: impl IntoIterator<Item = Directive>,
    ) -> Result<Self, PushError> {
        let mut config = PushConfig::default();
        for d in directives {
            config.apply(d)?;
        }
        Ok(config)
    }

    fn apply(&mut self, d: Directive) -> Result<(), PushError> {
        match d.name.as_str() {
            "redirect-gateway" => {
                let flags = self.redirect_gateway.unwrap_or_default();
                self.redirect_gateway = Some(merge_redirect_gateway(flags, &d)?);
            }
            "route" => self.routes.push(parse_route(&d)?),
            "route-ipv6" => self.routes_ipv6.push(parse_route_ipv6(&d)?),
            "dhcp-option" => self.dhcp_options.push(parse_dhcp_option(&d)?),
            "block-outside-dns" if d.args.is_empty() => self.block_outside_dns = true,
            "block-outside-dns" => return Err(invalid(&d, "no arguments")),
            "dns" => {
                let untyped = apply_dns(&mut self.dns_search_domains, &mut self.dns_servers, d)?;
                self.other.extend(untyped);
            }
            "route-gateway" => {
                const EXPECTED: &str = "an IPv4 address";
                self.route_gateway = Some(ipv4(&d, one_arg(&d, EXPECTED)?, EXPECTED)?);
            }
            "topology" => self.topology = Some(parse_topology(&d)?),
            "ping" => self.ping = Some(one_number(&d, "seconds")?),
            "ping-restart" => self.ping_restart = Some(one_number(&d, "seconds")?),
            "explicit-exit-notify" if d.args.is_empty() => self.explicit_exit_notify = Some(1),
            "explicit-exit-notify" => {
                self.explicit_exit_notify = Some(one_number(&d, "a count")?);
            }
            "ifconfig" => self.ifconfig = Some(parse_ifconfig(&d)?),
            "ifconfig-ipv6" => self.ifconfig_ipv6 = Some(parse_ifconfig_ipv6(&d)?),
            "peer-id" => {
                const EXPECTED: &str = "a decimal number up to 16777214";
                let id = one_number(&d, EXPECTED)?;
                if id > MAX_PEER_ID {
                    return Err(invalid(&d, EXPECTED));
                }
                self.peer_id = Some(id);
            }
            "cipher" => {
                const EXPECTED: &str = "AES-256-GCM, AES-128-GCM or CHACHA20-POLY1305";
                let name = one_arg(&d, EXPECTED)?;
                self.cipher = Some(name.parse().map_err(|_| invalid(&d, EXPECTED))?);
            }
            "protocol-flags" => {
                let mut flags = ProtocolFlags::default();
                for flag in &d.args {
                    let slot = match flag.as_str() {
                        "cc-exit" => &mut flags.cc_exit,
                        "tls-ekm" => &mut flags.tls_ekm,
                        "dyn-tls-crypt" => &mut flags.dyn_tls_crypt,
                        "aead-epoch" => &mut flags.aead_epoch,
                        _ => {
                            return Err(invalid(
                                &d,
                                "cc-exit, tls-ekm, dyn-tls-crypt or aead-epoch",
                            ));
                        }
                    };
                    *slot = true;
                }
                self.protocol_flags = Some(flags);
            }
            "key-derivation" => {
                if one_arg(&d, "tls-ekm")? != "tls-ekm" {
                    return Err(invalid(&d, "tls-ekm"));
                }
                self.key_derivation_tls_ekm = true;
            }
            "tun-mtu" => self.tun_mtu = Some(one_number(&d, "bytes")?),
            "auth-token" => self.auth_token = Some(one_arg(&d, "a token")?.to_owned()),
            "auth-token-user" => {
                self.auth_token_user = Some(one_arg(&d, "a base64 username")?.to_owned());
            }
            "push-continuation" => return Err(PushError::BadContinuation { found: d.args }),
            _ => self.other.push(d),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_method::{emit_option_list, parse_option_list};
    use crate::push::testing::push_config;
    use crate::push::{DnsAddress, RouteGateway};
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv6Addr};

    fn parse(text: &str) -> Result<PushConfig, PushError> {
        PushConfig::from_directives(parse_option_list(text)?)
    }

    fn emit(config: &PushConfig) -> String {
        emit_option_list(&config.to_directives().unwrap()).unwrap()
    }

    #[test]
    fn applies_a_stock_26_server_reply() {
        let config = parse(
            "route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 120,\
             ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,\
             protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500",
        )
        .unwrap();
        let expected = PushConfig {
            route_gateway: Some(Ipv4Addr::new(10, 8, 0, 1)),
            topology: Some(Topology::Subnet),
            ping: Some(10),
            ping_restart: Some(120),
            ifconfig: Some(Ifconfig {
                address: Ipv4Addr::new(10, 8, 0, 2),
                netmask_or_remote: Ipv4Addr::new(255, 255, 255, 0),
            }),
            peer_id: Some(0),
            cipher: Some(Cipher::Aes256Gcm),
            protocol_flags: Some(ProtocolFlags {
                cc_exit: true,
                tls_ekm: true,
                dyn_tls_crypt: true,
                aead_epoch: false,
            }),
            tun_mtu: Some(1500),
            ..PushConfig::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn doc_table_spellings_round_trip_verbatim() {
        let text = "redirect-gateway def1 bypass-dhcp,route 10.0.0.0 255.255.0.0,\
                    route 10.8.0.1,route 192.0.2.0 255.255.255.0 net_gateway,\
                    route 10.1.0.0 255.255.0.0 default 5,route-ipv6 fd01::/48,\
                    dhcp-option DNS 10.0.0.2,dhcp-option DOMAIN corp.example,\
                    dhcp-option DOMAIN-SEARCH x,dhcp-option WINS 10.0.0.3,block-outside-dns,\
                    dns search-domains corp.example,dns server 0 address 10.0.0.2,\
                    route-gateway 10.8.0.1,topology net30,ping 10,ping-restart 120,\
                    explicit-exit-notify 1,ifconfig 10.8.0.6 10.8.0.5,\
                    ifconfig-ipv6 fd00::1000/64 fd00::1,peer-id 7,cipher AES-256-GCM,\
                    key-derivation tls-ekm,tun-mtu 1500,auth-token SESS_abc,\
                    auth-token-user YWxpY2U=";
        let config = parse(text).unwrap();
        assert_eq!(config.routes.len(), 4);
        assert_eq!(
            config.routes[1],
            Route::via_tunnel(Ipv4Addr::new(10, 8, 0, 1), Ipv4Addr::BROADCAST)
        );
        assert_eq!(config.routes[2].gateway, RouteGateway::NetGateway);
        assert_eq!(config.routes[3].metric, Some(5));
        assert!(config.key_derivation_tls_ekm);
        assert!(config.other.is_empty());
        assert_eq!(emit(&config), text);
    }

    #[test]
    fn repeated_options_merge_or_replace_like_a_client() {
        let config = parse(
            "redirect-gateway def1,redirect-gateway ipv6,ping 5,ping 10,\
             dns server 1 address 10.0.0.1,dns server 1 address [fd00::53]:5353,\
             dns search-domains a,dns search-domains b c",
        )
        .unwrap();
        assert_eq!(
            config.redirect_gateway,
            Some(RedirectGateway {
                ipv6: true,
                ..RedirectGateway::def1()
            })
        );
        assert_eq!(config.ping, Some(10));
        assert_eq!(config.dns_search_domains, ["a", "b", "c"]);
        assert_eq!(
            config.dns_servers,
            [DnsServer {
                priority: 1,
                addresses: vec![
                    DnsAddress {
                        ip: "10.0.0.1".parse().unwrap(),
                        port: None
                    },
                    DnsAddress {
                        ip: "fd00::53".parse().unwrap(),
                        port: Some(5353)
                    },
                ],
            }]
        );
        assert_eq!(
            emit(&config),
            "redirect-gateway def1 ipv6,dns search-domains a b c,\
             dns server 1 address 10.0.0.1 [fd00::53]:5353,ping 10"
        );
    }

    #[test]
    fn unknown_options_are_kept_in_order() {
        let config = parse(
            "comp-lzo no,dns server 0 resolve-domains corp.example,topology subnet,\
             setenv-safe FOO bar",
        )
        .unwrap();
        let names: Vec<_> = config.other.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["comp-lzo", "dns", "setenv-safe"]);
        assert_eq!(config.topology, Some(Topology::Subnet));
        assert_eq!(
            emit(&config),
            "topology subnet,comp-lzo no,dns server 0 resolve-domains corp.example,\
             setenv-safe FOO bar"
        );
    }

    #[test]
    fn malformed_known_options_are_errors() {
        let bad = [
            "ifconfig 10.8.0.2",
            "ifconfig 10.8.0.2 255.255.255.0 extra",
            "ifconfig 10.8.0.300 255.255.255.0",
            "ifconfig-ipv6 fd00::1/129 fd00::2",
            "ifconfig-ipv6 fd00::1 fd00::2",
            "route-gateway",
            "route",
            "route 10.0.0.0 255.0.0.0 10.8.0.1 5 extra",
            "route 10.0.0.0 255.0.0.0 gw.example",
            "route 10.0.0.0 255.0.0.0 default -1",
            "route-ipv6 fd00::/48 fd00::1 1 2",
            "topology tap",
            "ping",
            "ping +10",
            "ping 99999999999",
            "ping-restart 1 2",
            "peer-id 16777215",
            "peer-id -1",
            "cipher BF-CBC",
            "protocol-flags cc-exit bogus",
            "key-derivation prf",
            "redirect-gateway def2",
            "dhcp-option",
            "dhcp-option DNS",
            "dhcp-option DNS dns.example",
            "dhcp-option DOMAIN a b",
            "dns search-domains",
            "dns server 128 address 10.0.0.1",
            "dns server 0 address",
            "dns server 0 address 10.0.0.1:99999",
            "block-outside-dns yes",
            "tun-mtu",
            "auth-token",
            "push-continuation 1",
        ];
        for text in bad {
            assert!(
                matches!(
                    parse(text),
                    Err(PushError::InvalidOption { .. } | PushError::BadContinuation { .. })
                ),
                "{text}: {:?}",
                parse(text)
            );
        }
        assert_eq!(
            parse("topology tap"),
            Err(PushError::InvalidOption {
                name: "topology".into(),
                expected: "subnet, net30 or p2p",
                found: vec!["tap".into()],
            })
        );
        assert!(matches!(
            parse("route \"10.0.0.0"),
            Err(PushError::Option(OptionError::UnterminatedQuote {
                offset: 6
            }))
        ));
    }

    #[test]
    fn limits_of_numeric_fields() {
        assert_eq!(
            parse("peer-id 16777214").unwrap().peer_id,
            Some(MAX_PEER_ID)
        );
        let config = parse("dns server -128 address ::1,dns server 127 address ::2").unwrap();
        let priorities: Vec<_> = config.dns_servers.iter().map(|s| s.priority).collect();
        assert_eq!(priorities, [-128, 127]);
        assert_eq!(
            parse("explicit-exit-notify").unwrap().explicit_exit_notify,
            Some(1)
        );
    }

    #[test]
    fn unencodable_configs_are_refused() {
        let typed_in_other = PushConfig {
            other: vec![Directive {
                name: "route".into(),
                args: vec!["10.0.0.0".into()],
            }],
            ..PushConfig::default()
        };
        assert_eq!(
            typed_in_other.to_directives(),
            Err(PushError::TypedOptionInOther {
                name: "route".into()
            })
        );
        let malformed_typed_in_other = PushConfig {
            other: vec![Directive {
                name: "ping".into(),
                args: vec![],
            }],
            ..PushConfig::default()
        };
        assert!(malformed_typed_in_other.to_directives().is_err());
        let cases = [
            PushConfig {
                peer_id: Some(0xFF_FFFF),
                ..PushConfig::default()
            },
            PushConfig {
                dhcp_options: vec![DhcpOption::Other {
                    kind: "DNS".into(),
                    args: vec!["10.0.0.1".into()],
                }],
                ..PushConfig::default()
            },
            PushConfig {
                dns_servers: vec![DnsServer {
                    priority: 0,
                    addresses: vec![],
                }],
                ..PushConfig::default()
            },
            PushConfig {
                dns_servers: vec![
                    DnsServer {
                        priority: 0,
                        addresses: vec![IpAddr::from([10, 0, 0, 1]).into()],
                    },
                    DnsServer {
                        priority: 0,
                        addresses: vec![IpAddr::from([10, 0, 0, 2]).into()],
                    },
                ],
                ..PushConfig::default()
            },
            PushConfig {
                routes_ipv6: vec![RouteIpv6 {
                    network: Ipv6Addr::UNSPECIFIED,
                    prefix_len: 0,
                    gateway: None,
                    metric: Some(1),
                }],
                ..PushConfig::default()
            },
            PushConfig {
                ifconfig_ipv6: Some(IfconfigIpv6 {
                    address: Ipv6Addr::LOCALHOST,
                    prefix_len: 129,
                    remote: None,
                }),
                ..PushConfig::default()
            },
        ];
        for config in cases {
            assert!(
                matches!(config.to_directives(), Err(PushError::Unencodable { .. })),
                "{config:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn directives_round_trip(config in push_config()) {
            let directives = config.to_directives().unwrap();
            prop_assert_eq!(PushConfig::from_directives(directives.clone()), Ok(config.clone()));
            let text = emit_option_list(&directives).unwrap();
            prop_assert_eq!(parse(&text), Ok(config));
        }

        #[test]
        fn parse_never_panics(text in "[ -~]{0,200}") {
            if let Ok(directives) = parse_option_list(&text) {
                let _ = PushConfig::from_directives(directives);
            }
        }
    }
}
