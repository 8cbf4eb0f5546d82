//! Compiles the configuration's routes and authorization rules into the entries of the
//! XDP maps: a route's target interface becomes its ifindex and the SNAT address (the
//! interface's primary IPv4 address, as AWS translates to the ENI's address).

use std::net::Ipv4Addr;

use gateway_ebpf_common::{AuthzValue, RouteValue};
use ipnet::Ipv4Net;

use crate::{config::Config, policy::compile_authorization};

/// What the XDP programs need to know about a target interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetInterface {
    pub ifindex: u32,
    /// Its primary IPv4 address, which client sources are translated to.
    pub addr: Ipv4Addr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error("route[{index}].target: interface {interface:?}: {reason}")]
    Target {
        index: usize,
        interface: String,
        reason: String,
    },
}

/// The entries of the route and authorization maps, for `Policy::replace_rules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledRules {
    pub routes: Vec<(Ipv4Net, RouteValue)>,
    pub authorization: Vec<(Ipv4Net, AuthzValue)>,
}

/// Compiles the configuration's rules; `lookup` resolves a target interface (in the
/// gateway's network namespace).
pub fn compile(
    config: &Config,
    lookup: &dyn Fn(&str) -> Result<TargetInterface, String>,
) -> Result<CompiledRules, RulesError> {
    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, route) in config.routes.iter().enumerate() {
        let target = lookup(&route.target).map_err(|reason| RulesError::Target {
            index,
            interface: route.target.clone(),
            reason,
        })?;
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

/// Resolves an interface of this network namespace: its index and first IPv4 address.
pub fn lookup_interface(name: &str) -> Result<TargetInterface, String> {
    let ifindex =
        nix::net::if_::if_nametoindex(name).map_err(|e| format!("no such interface ({e})"))?;
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("listing addresses: {e}"))?;
    let addr = addrs
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address?.as_sockaddr_in().map(|sin| sin.ip()))
        .ok_or("it has no IPv4 address to translate client sources to")?;
    Ok(TargetInterface { ifindex, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            _ => Err("missing".to_string()),
        };
        let CompiledRules {
            routes,
            authorization: authz,
        } = compile(&config, &lookup).unwrap();
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
                Err("gone".to_string())
            } else {
                lookup(name)
            }
        };
        let err = compile(&config, &failing).unwrap_err();
        assert_eq!(err.to_string(), "route[1].target: interface \"eth2\": gone");
    }

    #[test]
    fn loopback_resolves_and_unknown_interfaces_do_not() {
        let lo = lookup_interface("lo").unwrap();
        assert_eq!(lo.addr, Ipv4Addr::LOCALHOST);
        assert!(lo.ifindex >= 1);
        assert!(
            lookup_interface("gw-no-such-if")
                .unwrap_err()
                .contains("no such interface")
        );
    }
}
