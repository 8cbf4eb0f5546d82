//! Proptest strategies shared by the push tests.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use super::{
    DhcpOption, DnsAddress, DnsServer, Ifconfig, IfconfigIpv6, MAX_PEER_ID, ProtocolFlags,
    PushConfig, RedirectGateway, Route, RouteGateway, RouteIpv6, Topology,
};
use crate::data::Cipher;
use crate::key_method::Directive;

/// Printable text without `,` (options cannot carry it), quotes and backslashes included
/// so that the option quoting is exercised.
pub fn word() -> impl Strategy<Value = String> {
    "[ -+\\--~]{0,20}"
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![ipv4().prop_map(IpAddr::V4), ipv6().prop_map(IpAddr::V6)]
}

fn route() -> impl Strategy<Value = Route> {
    let gateway = prop_oneof![
        Just(RouteGateway::Default),
        Just(RouteGateway::VpnGateway),
        Just(RouteGateway::NetGateway),
        Just(RouteGateway::RemoteHost),
        ipv4().prop_map(RouteGateway::Address),
    ];
    let netmask = prop_oneof![Just(Ipv4Addr::BROADCAST), ipv4()];
    (ipv4(), netmask, gateway, of(any::<u32>())).prop_map(|(network, netmask, gateway, metric)| {
        Route {
            network,
            netmask,
            gateway,
            metric,
        }
    })
}

fn route_ipv6() -> impl Strategy<Value = RouteIpv6> {
    (ipv6(), 0u8..=128, of(ipv6()), of(any::<u32>())).prop_map(
        |(network, prefix_len, gateway, metric)| RouteIpv6 {
            network,
            prefix_len,
            gateway,
            metric: gateway.and(metric),
        },
    )
}

fn dhcp_option() -> impl Strategy<Value = DhcpOption> {
    prop_oneof![
        ip().prop_map(DhcpOption::Dns),
        word().prop_map(DhcpOption::Domain),
        word().prop_map(DhcpOption::DomainSearch),
        ("X[A-Z0-9-]{0,7}", vec(word(), 0..3))
            .prop_map(|(kind, args)| DhcpOption::Other { kind, args }),
    ]
}

fn dns_servers() -> impl Strategy<Value = Vec<DnsServer>> {
    let address = (ip(), of(any::<u16>())).prop_map(|(ip, port)| DnsAddress { ip, port });
    proptest::collection::btree_map(any::<i8>(), vec(address, 1..4), 0..3).prop_map(
        |servers: BTreeMap<i8, Vec<DnsAddress>>| {
            servers
                .into_iter()
                .map(|(priority, addresses)| DnsServer {
                    priority,
                    addresses,
                })
                .collect()
        },
    )
}

/// An option name no typed field covers.
pub fn other_directive() -> impl Strategy<Value = Directive> {
    ("x-[a-z0-9-]{0,10}", vec(word(), 0..3)).prop_map(|(name, args)| Directive { name, args })
}

fn redirect_gateway() -> impl Strategy<Value = RedirectGateway> {
    any::<[bool; 8]>().prop_map(|f| RedirectGateway {
        def1: f[0],
        bypass_dhcp: f[1],
        bypass_dns: f[2],
        local: f[3],
        autolocal: f[4],
        block_local: f[5],
        ipv6: f[6],
        not_ipv4: f[7],
    })
}

fn protocol_flags() -> impl Strategy<Value = ProtocolFlags> {
    any::<[bool; 4]>().prop_map(|f| ProtocolFlags {
        cc_exit: f[0],
        tls_ekm: f[1],
        dyn_tls_crypt: f[2],
        aead_epoch: f[3],
    })
}

/// Any encodable [`PushConfig`]; every option stays under 256 bytes.
pub fn push_config() -> impl Strategy<Value = PushConfig> {
    let routing = (
        of(redirect_gateway()),
        vec(route(), 0..12),
        vec(route_ipv6(), 0..6),
        vec(dhcp_option(), 0..8),
        any::<bool>(),
        vec(word(), 0..3),
        dns_servers(),
    );
    let tunnel = (
        of(ipv4()),
        of(prop_oneof![
            Just(Topology::Subnet),
            Just(Topology::Net30),
            Just(Topology::P2p)
        ]),
        of(any::<u32>()),
        of(any::<u32>()),
        of(any::<u32>()),
        of((ipv4(), ipv4())),
        of((ipv6(), 0u8..=128, of(ipv6()))),
    );
    let session = (
        of(0..=MAX_PEER_ID),
        of(proptest::sample::select(Cipher::ALL.to_vec())),
        of(protocol_flags()),
        any::<bool>(),
        of(any::<u32>()),
        of(word()),
        of(word()),
        vec(other_directive(), 0..4),
    );
    (routing, tunnel, session).prop_map(|(routing, tunnel, session)| {
        let (redirect_gateway, routes, routes_ipv6, dhcp_options, block, domains, servers) =
            routing;
        let (route_gateway, topology, ping, ping_restart, exit_notify, ifconfig, ifconfig6) =
            tunnel;
        let (peer_id, cipher, protocol_flags, key_derivation, tun_mtu, token, token_user, other) =
            session;
        PushConfig {
            redirect_gateway,
            routes,
            routes_ipv6,
            dhcp_options,
            block_outside_dns: block,
            dns_search_domains: domains,
            dns_servers: servers,
            route_gateway,
            topology,
            ping,
            ping_restart,
            explicit_exit_notify: exit_notify,
            ifconfig: ifconfig.map(|(address, netmask_or_remote)| Ifconfig {
                address,
                netmask_or_remote,
            }),
            ifconfig_ipv6: ifconfig6.map(|(address, prefix_len, remote)| IfconfigIpv6 {
                address,
                prefix_len,
                remote,
            }),
            peer_id,
            cipher,
            protocol_flags,
            key_derivation_tls_ekm: key_derivation,
            tun_mtu,
            auth_token: token,
            auth_token_user: token_user,
            other,
        }
    })
}
