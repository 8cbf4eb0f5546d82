//! The whole configuration compiled into what the XDP maps hold: the client network for
//! `INNER_CONFIG`, the target interfaces for `TARGET_DEVS`, and the routes and
//! authorization rules for the `POLICY` trie. A route's target interface becomes its
//! ifindex and the SNAT address (the interface's primary IPv4 address, as AWS
//! translates to the ENI's address).

use gateway_ebpf_common::{AuthzValue, PolicyValue, RouteValue};
use ipnet::Ipv4Net;

use super::compile_authorization;
use crate::{
    config::Config,
    net::{InterfaceError, TargetInterface},
};

/// A configuration the XDP maps cannot express as it stands (its fault, or the host's
/// interfaces'; `source` says which).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("route[{index}].target: {source}")]
    RouteTarget {
        index: usize,
        #[source]
        source: InterfaceError,
    },
    #[error("target[{index}].interface: {source}")]
    Target {
        index: usize,
        #[source]
        source: InterfaceError,
    },
}

/// The entries of the route and authorization tables, for `Policy::replace_rules`
/// (which writes them merged, [`CompiledRules::policy_entries`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledRules {
    pub routes: Vec<(Ipv4Net, RouteValue)>,
    pub authorization: Vec<(Ipv4Net, AuthzValue)>,
}

impl CompiledRules {
    pub fn new(
        routes: Vec<(Ipv4Net, RouteValue)>,
        authorization: Vec<(Ipv4Net, AuthzValue)>,
    ) -> Self {
        Self {
            routes,
            authorization,
        }
    }

    /// The entries of one generation of the `POLICY` trie ([`merge_policy`]).
    pub fn policy_entries(&self) -> Vec<(Ipv4Net, PolicyValue)> {
        merge_policy(&self.routes, &self.authorization)
    }
}

/// Which destinations are clients, and whether clients may reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientNetwork {
    pub cidr: Ipv4Net,
    pub client_to_client: bool,
}

/// A target interface: `inner` redirects translated packets out of it, `target` runs on
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub interface: TargetInterface,
}

/// Everything the policy maps hold at startup, for `Policy::apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    pub client_network: ClientNetwork,
    pub rules: CompiledRules,
    /// In the order of the configuration.
    pub targets: Vec<Target>,
}

/// Compiles the configuration for the policy maps; `lookup` resolves an interface (in
/// the gateway's network namespace). Routes are resolved first, then targets.
pub fn compile(
    config: &Config,
    lookup: &dyn Fn(&str) -> Result<TargetInterface, InterfaceError>,
) -> Result<Compiled, CompileError> {
    let rules = compile_rules(config, lookup)?;
    let mut targets = Vec::with_capacity(config.targets.len());
    for (index, target) in config.targets.iter().enumerate() {
        let interface =
            lookup(&target.interface).map_err(|source| CompileError::Target { index, source })?;
        targets.push(Target {
            name: target.interface.clone(),
            interface,
        });
    }
    Ok(Compiled {
        client_network: ClientNetwork {
            cidr: config.endpoint.client_cidr,
            client_to_client: config.endpoint.client_to_client,
        },
        rules,
        targets,
    })
}

/// Compiles only the configuration's routes and authorization rules (what a reload
/// replaces).
pub fn compile_rules(
    config: &Config,
    lookup: &dyn Fn(&str) -> Result<TargetInterface, InterfaceError>,
) -> Result<CompiledRules, CompileError> {
    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, route) in config.routes.iter().enumerate() {
        let target =
            lookup(&route.target).map_err(|source| CompileError::RouteTarget { index, source })?;
        routes.push((
            route.destination,
            RouteValue {
                target_ifindex: target.ifindex,
                snat_addr: target.addr.octets(),
            },
        ));
    }
    Ok(CompiledRules {
        routes,
        authorization: compile_authorization(&config.authorization),
    })
}

/// Routes and authorization rules as one LPM trie's entries (see [`PolicyValue`]): every
/// route network and every rule network, each with the most specific route and the most
/// specific rule that contain it. A destination's longest match in this trie carries
/// the route and the rule that its own longest matches among routes and among rules
/// would give, because prefixes that contain the same address nest.
pub fn merge_policy(
    routes: &[(Ipv4Net, RouteValue)],
    authorization: &[(Ipv4Net, AuthzValue)],
) -> Vec<(Ipv4Net, PolicyValue)> {
    use std::collections::{BTreeSet, HashMap};
    let by_prefix = |net: &Ipv4Net| (net.prefix_len(), u32::from(net.trunc().network()));
    let routes: HashMap<(u8, u32), RouteValue> =
        routes.iter().map(|(n, v)| (by_prefix(n), *v)).collect();
    let rules: HashMap<(u8, u32), AuthzValue> = authorization
        .iter()
        .map(|(n, v)| (by_prefix(n), *v))
        .collect();
    // The most specific entry of `table` containing `net`: its own prefix, then every
    // shorter one.
    fn covering<V: Copy>(table: &HashMap<(u8, u32), V>, net: Ipv4Net) -> Option<V> {
        let address = u32::from(net.network());
        (0..=net.prefix_len()).rev().find_map(|len| {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            table.get(&(len, address & mask)).copied()
        })
    }
    let prefixes: BTreeSet<(u8, u32)> = routes.keys().chain(rules.keys()).copied().collect();
    prefixes
        .into_iter()
        .filter_map(|(len, address)| {
            let net = Ipv4Net::new(std::net::Ipv4Addr::from(address), len).ok()?;
            let route = covering(&routes, net);
            let rule = covering(&rules, net);
            Some((
                net,
                PolicyValue {
                    route: route.unwrap_or_default(),
                    rule: rule.unwrap_or_default(),
                    has_route: u32::from(route.is_some()),
                    has_rule: u32::from(rule.is_some()),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::net::TargetInterface;

    const CONFIG: &str = r#"
[endpoint]
name = "t"
[tls]
server_cert = "s"
server_key = "k"
client_ca = "c"
[[target]]
interface = "eth1"
[[target]]
interface = "eth2"
[[route]]
destination = "10.0.0.0/16"
target = "eth1"
[[route]]
destination = "172.16.0.0/12"
target = "eth2"
[[authorize]]
destination = "10.0.0.0/16"
all_users = true
"#;

    #[test]
    fn routes_take_the_ifindex_and_address_of_their_target() {
        let config = Config::parse(CONFIG, "t").unwrap();
        let lookup = |name: &str| match name {
            "eth1" => Ok(TargetInterface {
                ifindex: 3,
                addr: Ipv4Addr::new(10, 0, 0, 9),
            }),
            "eth2" => Ok(TargetInterface {
                ifindex: 4,
                addr: Ipv4Addr::new(172, 16, 0, 9),
            }),
            _ => Err(InterfaceError::NoIpv4 {
                name: name.to_string(),
            }),
        };
        let CompiledRules {
            routes,
            authorization: authz,
        } = compile_rules(&config, &lookup).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(
            routes[0].1,
            RouteValue {
                target_ifindex: 3,
                snat_addr: [10, 0, 0, 9]
            }
        );
        assert_eq!(
            routes[1].1,
            RouteValue {
                target_ifindex: 4,
                snat_addr: [172, 16, 0, 9]
            }
        );
        assert_eq!(authz.len(), 1);
        assert_eq!(authz[0].1.all_users, 1);

        let failing = |name: &str| {
            if name == "eth2" {
                Err(InterfaceError::NoIpv4 {
                    name: name.to_string(),
                })
            } else {
                lookup(name)
            }
        };
        let err = compile_rules(&config, &failing).unwrap_err();
        assert_eq!(
            err.to_string(),
            "route[1].target: interface \"eth2\" has no IPv4 address to translate client sources to"
        );
    }
}

#[cfg(test)]
mod merge_tests {
    use std::net::Ipv4Addr;

    use gateway_ebpf_common::GroupSet;
    use proptest::prelude::*;

    use super::*;

    /// The longest match for `d` among `entries`, by brute force.
    fn longest<V: Copy>(entries: &[(Ipv4Net, V)], d: Ipv4Addr) -> Option<V> {
        entries
            .iter()
            .filter(|(net, _)| net.contains(&d))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, v)| *v)
    }

    /// Networks inside 10.0.0.0/22 so that they overlap often.
    fn arb_net() -> impl Strategy<Value = Ipv4Net> {
        (0u32..1024, 22u8..=32).prop_map(|(host, len)| {
            Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | host), len)
                .unwrap()
                .trunc()
        })
    }

    fn dedup<V>(mut v: Vec<(Ipv4Net, V)>) -> Vec<(Ipv4Net, V)> {
        v.sort_by_key(|(n, _)| (n.prefix_len(), u32::from(n.network())));
        v.dedup_by_key(|(n, _)| *n);
        v
    }

    proptest! {
        #[test]
        fn one_lookup_in_the_merged_trie_finds_the_route_and_the_rule(
            routes in prop::collection::vec((arb_net(), 1u32..100), 0..10),
            rules in prop::collection::vec((arb_net(), 0u32..2), 0..10),
            host in 0u32..1024,
        ) {
            let routes = dedup(routes.into_iter().map(|(n, i)| (n, RouteValue { target_ifindex: i, snat_addr: [10, 0, 0, 9] })).collect());
            let rules = dedup(rules.into_iter().map(|(n, all)| (n, AuthzValue { groups: GroupSet::default(), all_users: all, _pad: 0 })).collect());
            let merged = merge_policy(&routes, &rules);
            let d = Ipv4Addr::from(0x0a00_0000 | host);
            let found = longest(&merged, d);
            let route = longest(&routes, d);
            let rule = longest(&rules, d);
            prop_assert_eq!(found.filter(|e| e.has_route != 0).map(|e| e.route), route);
            prop_assert_eq!(found.filter(|e| e.has_rule != 0).map(|e| e.rule), rule);
        }
    }
}
