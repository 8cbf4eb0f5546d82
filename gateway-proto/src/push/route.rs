//! Addressing and routing options of a push (protocol doc §10.2): `topology`, `ifconfig`,
//! `ifconfig-ipv6`, `route`, `route-ipv6` and `redirect-gateway`, typed with their words.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::config::{PushError, decimal, directive, invalid, ipv4, one_arg, word};
use crate::key_method::Directive;

/// `topology` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `subnet`: `ifconfig` carries address and netmask.
    Subnet,
    /// `net30` (deprecated): `ifconfig` carries address and its point-to-point peer.
    Net30,
    /// `p2p`: like net30 without the /30 allocation.
    P2p,
}

impl Topology {
    fn name(self) -> &'static str {
        match self {
            Topology::Subnet => "subnet",
            Topology::Net30 => "net30",
            Topology::P2p => "p2p",
        }
    }
}

/// `ifconfig <address> <second>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ifconfig {
    /// The client's tunnel address.
    pub address: Ipv4Addr,
    /// The netmask with `topology subnet`, the remote end with net30/p2p.
    pub netmask_or_remote: Ipv4Addr,
}

/// `ifconfig-ipv6 <address>/<prefix_len> [remote]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfconfigIpv6 {
    /// The client's tunnel address.
    pub address: Ipv6Addr,
    /// Prefix length, at most 128.
    pub prefix_len: u8,
    /// The server's tunnel address.
    pub remote: Option<Ipv6Addr>,
}

/// Gateway word of a `route` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteGateway {
    /// Omitted or `default`: the pushed `route-gateway`.
    Default,
    /// `vpn_gateway`: the tunnel's remote end.
    VpnGateway,
    /// `net_gateway`: the client's pre-existing default gateway (exclusion routes).
    NetGateway,
    /// `remote_host`: the VPN server's public address.
    RemoteHost,
    /// An explicit address.
    Address(Ipv4Addr),
}

/// `route <network> [netmask] [gateway] [metric]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Network address.
    pub network: Ipv4Addr,
    /// Netmask (`255.255.255.255` when omitted).
    pub netmask: Ipv4Addr,
    /// Gateway.
    pub gateway: RouteGateway,
    /// Metric.
    pub metric: Option<u32>,
}

impl Route {
    /// A route to `network`/`netmask` via the pushed `route-gateway`.
    pub fn via_tunnel(network: Ipv4Addr, netmask: Ipv4Addr) -> Self {
        Route {
            network,
            netmask,
            gateway: RouteGateway::Default,
            metric: None,
        }
    }
}

/// `route-ipv6 <network>/<prefix_len> [gateway [metric]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteIpv6 {
    /// Network address.
    pub network: Ipv6Addr,
    /// Prefix length, at most 128.
    pub prefix_len: u8,
    /// Gateway (the tunnel when absent).
    pub gateway: Option<Ipv6Addr>,
    /// Metric; needs a gateway (the option is positional).
    pub metric: Option<u32>,
}

/// Flags of `redirect-gateway`; several options merge into one set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedirectGateway {
    /// `def1`: two /1 routes instead of replacing the default route.
    pub def1: bool,
    /// `bypass-dhcp`.
    pub bypass_dhcp: bool,
    /// `bypass-dns`.
    pub bypass_dns: bool,
    /// `local`.
    pub local: bool,
    /// `autolocal`.
    pub autolocal: bool,
    /// `block-local`.
    pub block_local: bool,
    /// `ipv6`: redirect IPv6 too.
    pub ipv6: bool,
    /// `!ipv4`: do not redirect IPv4.
    pub not_ipv4: bool,
}

impl RedirectGateway {
    /// The usual full tunnel: `redirect-gateway def1`.
    pub fn def1() -> Self {
        RedirectGateway {
            def1: true,
            ..Self::default()
        }
    }

    fn flags(&self) -> [(bool, &'static str); 8] {
        [
            (self.def1, "def1"),
            (self.bypass_dhcp, "bypass-dhcp"),
            (self.bypass_dns, "bypass-dns"),
            (self.local, "local"),
            (self.autolocal, "autolocal"),
            (self.block_local, "block-local"),
            (self.ipv6, "ipv6"),
            (self.not_ipv4, "!ipv4"),
        ]
    }

    fn set(&mut self, word: &str) -> bool {
        let slot = match word {
            "def1" => &mut self.def1,
            "bypass-dhcp" => &mut self.bypass_dhcp,
            "bypass-dns" => &mut self.bypass_dns,
            "local" => &mut self.local,
            "autolocal" => &mut self.autolocal,
            "block-local" => &mut self.block_local,
            "ipv6" => &mut self.ipv6,
            "!ipv4" => &mut self.not_ipv4,
            _ => return false,
        };
        *slot = true;
        true
    }
}

fn prefix_v6(text: &str) -> Option<(Ipv6Addr, u8)> {
    let (addr, bits) = text.split_once('/')?;
    let bits: u8 = decimal(bits)?;
    (bits <= 128).then_some(())?;
    Some((addr.parse().ok()?, bits))
}

pub(super) fn route_directive(route: &Route) -> Directive {
    let host_mask = Ipv4Addr::BROADCAST;
    let mut args = vec![word(route.network)];
    let gateway = match route.gateway {
        RouteGateway::Default if route.metric.is_none() => None,
        RouteGateway::Default => Some(word("default")),
        RouteGateway::VpnGateway => Some(word("vpn_gateway")),
        RouteGateway::NetGateway => Some(word("net_gateway")),
        RouteGateway::RemoteHost => Some(word("remote_host")),
        RouteGateway::Address(a) => Some(word(a)),
    };
    if route.netmask != host_mask || gateway.is_some() {
        args.push(word(route.netmask));
    }
    args.extend(gateway);
    args.extend(route.metric.map(word));
    directive("route", args)
}

pub(super) fn route_ipv6_directive(route: &RouteIpv6) -> Result<Directive, PushError> {
    if route.prefix_len > 128 {
        return Err(PushError::Unencodable {
            name: "route-ipv6",
            problem: "a prefix length over 128",
        });
    }
    let mut args = vec![format!("{}/{}", route.network, route.prefix_len)];
    match (route.gateway, route.metric) {
        (Some(gw), metric) => {
            args.push(word(gw));
            args.extend(metric.map(word));
        }
        (None, None) => {}
        (None, Some(_)) => {
            return Err(PushError::Unencodable {
                name: "route-ipv6",
                problem: "a metric without a gateway",
            });
        }
    }
    Ok(directive("route-ipv6", args))
}

pub(super) fn parse_route(d: &Directive) -> Result<Route, PushError> {
    const EXPECTED: &str =
        "<network> [netmask] [gateway|default|vpn_gateway|net_gateway|remote_host] [metric]";
    let (network, rest) = d.args.split_first().ok_or_else(|| invalid(d, EXPECTED))?;
    if rest.len() > 3 {
        return Err(invalid(d, EXPECTED));
    }
    let network = ipv4(d, network, EXPECTED)?;
    let netmask = match rest.first().map(String::as_str) {
        None | Some("default") => Ipv4Addr::BROADCAST,
        Some(mask) => ipv4(d, mask, EXPECTED)?,
    };
    let gateway = match rest.get(1).map(String::as_str) {
        None | Some("default") => RouteGateway::Default,
        Some("vpn_gateway") => RouteGateway::VpnGateway,
        Some("net_gateway") => RouteGateway::NetGateway,
        Some("remote_host") => RouteGateway::RemoteHost,
        Some(addr) => RouteGateway::Address(ipv4(d, addr, EXPECTED)?),
    };
    let metric = match rest.get(2).map(String::as_str) {
        None | Some("default") => None,
        Some(m) => Some(decimal(m).ok_or_else(|| invalid(d, EXPECTED))?),
    };
    Ok(Route {
        network,
        netmask,
        gateway,
        metric,
    })
}

pub(super) fn parse_route_ipv6(d: &Directive) -> Result<RouteIpv6, PushError> {
    const EXPECTED: &str = "<network>/<bits> [gateway [metric]]";
    let (prefix, rest) = d.args.split_first().ok_or_else(|| invalid(d, EXPECTED))?;
    if rest.len() > 2 {
        return Err(invalid(d, EXPECTED));
    }
    let (network, prefix_len) = prefix_v6(prefix).ok_or_else(|| invalid(d, EXPECTED))?;
    let gateway = match rest.first() {
        Some(gw) => Some(gw.parse().map_err(|_| invalid(d, EXPECTED))?),
        None => None,
    };
    let metric = match rest.get(1) {
        Some(m) => Some(decimal(m).ok_or_else(|| invalid(d, EXPECTED))?),
        None => None,
    };
    Ok(RouteIpv6 {
        network,
        prefix_len,
        gateway,
        metric,
    })
}

pub(super) fn topology_directive(topology: Topology) -> Directive {
    directive("topology", vec![word(topology.name())])
}

pub(super) fn parse_topology(d: &Directive) -> Result<Topology, PushError> {
    const EXPECTED: &str = "subnet, net30 or p2p";
    match one_arg(d, EXPECTED)? {
        "subnet" => Ok(Topology::Subnet),
        "net30" => Ok(Topology::Net30),
        "p2p" => Ok(Topology::P2p),
        _ => Err(invalid(d, EXPECTED)),
    }
}

pub(super) fn ifconfig_directive(ifconfig: &Ifconfig) -> Directive {
    let args = vec![word(ifconfig.address), word(ifconfig.netmask_or_remote)];
    directive("ifconfig", args)
}

pub(super) fn parse_ifconfig(d: &Directive) -> Result<Ifconfig, PushError> {
    const EXPECTED: &str = "two IPv4 addresses";
    let [address, second] = d.args.as_slice() else {
        return Err(invalid(d, EXPECTED));
    };
    Ok(Ifconfig {
        address: ipv4(d, address, EXPECTED)?,
        netmask_or_remote: ipv4(d, second, EXPECTED)?,
    })
}

pub(super) fn ifconfig_ipv6_directive(ifconfig: &IfconfigIpv6) -> Result<Directive, PushError> {
    if ifconfig.prefix_len > 128 {
        return Err(PushError::Unencodable {
            name: "ifconfig-ipv6",
            problem: "a prefix length over 128",
        });
    }
    let mut args = vec![format!("{}/{}", ifconfig.address, ifconfig.prefix_len)];
    args.extend(ifconfig.remote.map(word));
    Ok(directive("ifconfig-ipv6", args))
}

pub(super) fn parse_ifconfig_ipv6(d: &Directive) -> Result<IfconfigIpv6, PushError> {
    const EXPECTED: &str = "<ipv6>/<bits> [remote ipv6]";
    let (prefix, remote) = match d.args.as_slice() {
        [prefix] => (prefix, None),
        [prefix, remote] => (prefix, Some(remote)),
        _ => return Err(invalid(d, EXPECTED)),
    };
    let (address, prefix_len) = prefix_v6(prefix).ok_or_else(|| invalid(d, EXPECTED))?;
    let remote = match remote {
        Some(r) => Some(r.parse().map_err(|_| invalid(d, EXPECTED))?),
        None => None,
    };
    Ok(IfconfigIpv6 {
        address,
        prefix_len,
        remote,
    })
}

pub(super) fn redirect_gateway_directive(flags: &RedirectGateway) -> Directive {
    let args = flags
        .flags()
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| word(w));
    directive("redirect-gateway", args.collect())
}

/// Adds the flags of one `redirect-gateway` option to `flags` (several options merge).
pub(super) fn merge_redirect_gateway(
    mut flags: RedirectGateway,
    d: &Directive,
) -> Result<RedirectGateway, PushError> {
    for flag in &d.args {
        if !flags.set(flag) {
            return Err(invalid(d, "redirect-gateway flags (def1, bypass-dhcp, …)"));
        }
    }
    Ok(flags)
}
