//! Loading the XDP programs built from `gateway-ebpf`, attaching them to interfaces,
//! writing their maps (one typed handle per map, `maps`) and reading their counters
//! (`stats`). `nat` holds the NAT table's upkeep.

mod maps;
mod nat;
mod stats;
mod targets;

use std::{
    net::Ipv4Addr,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use gateway_ebpf_common::{
    DATAPLANE_DEVS_MAP, DEVMAP_XMIT_PROGRAM, EDGE_PEERS_MAP, EDGE_PROGRAM, EDGE_XSKS_MAP, EdgePeer,
    INNER_PROGRAM, InnerConfig, MAX_AUTHZ_RULES, MAX_GATEWAY_ADDRS, MAX_LISTEN_PORTS, MAX_ROUTES,
    MAX_WATCHED_MAPS, MAX_XSK_QUEUES, MAX_XSK_TARGETS, NAT_IN_MAP, NAT_OUT_MAP,
    REDIRECT_ERR_PROGRAM, SESSIONS_MAP, SessionInfo, TARGET_DEVS_MAP, TARGET_PROGRAM,
    TARGET_XSKS_MAP,
};
use ipnet::Ipv4Net;

use self::maps::{EdgeMaps, PolicyMaps};
pub use self::{
    nat::NatSweep,
    stats::{Counter, EdgeStats, InnerStats, RedirectStats, Stats, TargetStats},
    targets::{Forwarding, TargetSetup, forwarding_for},
};
use crate::policy::{Compiled, CompiledRules};

/// The BPF object holding every XDP program, built by `build.rs` for the BPF target.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-xdp"));

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the XDP object: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("XDP object has no program named {0}")]
    MissingProgram(&'static str),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("attaching {name} to interface {interface} in {mode:?} mode: {source}")]
    Attach {
        name: &'static str,
        interface: String,
        mode: XdpMode,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("XDP configuration: {0}")]
    Config(String),
    #[error("adding device {ifindex} to {name}: {reason}")]
    Device {
        name: &'static str,
        ifindex: u32,
        reason: String,
    },
    /// The caller's timing: the idle generation of the rules was switched away from
    /// too recently (`Policy::rules_ready_at` says when it may be refilled).
    #[error(
        "rules replaced again too soon: the previous set may still be read by XDP programs \
         for {wait:?} more; nothing was changed"
    )]
    RulesBusy { wait: Duration },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// How to attach: native (driver) mode where the driver supports it, generic (SKB) mode
/// anywhere, or let the kernel pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Native,
    Generic,
    Auto,
}

impl From<AttachMode> for XdpMode {
    fn from(m: AttachMode) -> Self {
        match m {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
            AttachMode::Auto => XdpMode::Default,
        }
    }
}

/// XDP programs of the object loaded into the kernel together, sharing its maps.
///
/// Dropping it detaches the programs from every interface they were attached to.
struct Loaded {
    ebpf: Ebpf,
}

impl Loaded {
    fn load(names: &[&'static str], max_entries: &[(&str, u32)]) -> Result<Self, XdpError> {
        let mut loader = aya::EbpfLoader::new();
        for (map, size) in max_entries {
            loader.map_max_entries(map, *size);
        }
        let mut ebpf = loader
            .load(XDP_OBJECT)
            .map_err(|e| XdpError::Object(Box::new(e)))?;
        for name in names {
            program_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| XdpError::Program {
                    name,
                    source: Box::new(source),
                })?;
        }
        Ok(Self { ebpf })
    }

    fn program(&self, name: &'static str) -> &Xdp {
        self.ebpf
            .program(name)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("loaded in Loaded::load")
    }

    fn attach(
        &mut self,
        name: &'static str,
        interface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, XdpError> {
        program_mut(&mut self.ebpf, name)?
            .attach(interface, mode.into())
            .map_err(|source| XdpError::Attach {
                name,
                interface: interface.to_string(),
                mode: mode.into(),
                source: Box::new(source),
            })
    }
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, XdpError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(XdpError::MissingProgram(name))?;
    program.try_into().map_err(|source| XdpError::Program {
        name,
        source: Box::new(source),
    })
}

/// The redirect tracepoint programs (`xdp_redirect_err`, `xdp_devmap_xmit`) with their
/// counters: redirects that failed in the kernel after a program returned, which no
/// XDP counter can see. Loaded from their own copy of the object (its other maps kept
/// small); dropping it detaches them.
pub struct RedirectWatch {
    _ebpf: Ebpf,
    maps: maps::RedirectMaps,
}

impl RedirectWatch {
    /// Loads and attaches both programs (they need the kernel's BTF) and counts the
    /// failed redirects of the maps `map_ids` (at most [`MAX_WATCHED_MAPS`]).
    pub fn start(map_ids: &[u32]) -> Result<Self, XdpError> {
        if map_ids.len() > MAX_WATCHED_MAPS as usize {
            return Err(XdpError::Config(format!(
                "{} redirect maps to watch, at most {MAX_WATCHED_MAPS}",
                map_ids.len()
            )));
        }
        let mut loader = aya::EbpfLoader::new();
        for (map, size) in [
            (NAT_OUT_MAP, 1),
            (NAT_IN_MAP, 1),
            (SESSIONS_MAP, 1),
            (EDGE_PEERS_MAP, 1),
            ("RESET_BUCKETS", 1),
        ] {
            loader.map_max_entries(map, size);
        }
        let mut ebpf = loader
            .load(XDP_OBJECT)
            .map_err(|e| XdpError::Object(Box::new(e)))?;
        let btf = aya::Btf::from_sys_fs().map_err(|e| {
            XdpError::Config(format!(
                "reading the kernel's BTF (/sys/kernel/btf/vmlinux): {e}"
            ))
        })?;
        for name in [REDIRECT_ERR_PROGRAM, DEVMAP_XMIT_PROGRAM] {
            let program: &mut aya::programs::BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or(XdpError::MissingProgram(name))?
                .try_into()
                .map_err(|source| XdpError::Program {
                    name,
                    source: Box::new(source),
                })?;
            let failed = |source| XdpError::Program {
                name,
                source: Box::new(source),
            };
            program.load(name, &btf).map_err(failed)?;
            program.attach().map_err(failed)?;
        }
        let mut maps = maps::RedirectMaps::take(&mut ebpf)?;
        for id in map_ids {
            maps.watched.insert(*id, 1)?;
        }
        Ok(Self { _ebpf: ebpf, maps })
    }

    /// Counters summed over all CPUs.
    pub fn stats(&self) -> Result<RedirectStats, XdpError> {
        self.maps.stats.read()
    }
}

/// The `edge` program (public ENI) with its counters.
pub struct Edge {
    loaded: Loaded,
    maps: EdgeMaps,
    xsks_id: u32,
}

impl Edge {
    /// Loads the object and verifies the `edge` program.
    pub fn load() -> Result<Self, XdpError> {
        let mut loaded = Loaded::load(&[EDGE_PROGRAM], &[])?;
        let xsks_id = maps::redirect_map_id(&loaded.ebpf, EDGE_XSKS_MAP)?;
        let maps = EdgeMaps::take(&mut loaded.ebpf)?;
        Ok(Self {
            loaded,
            maps,
            xsks_id,
        })
    }

    /// The kernel id of `edge`'s redirect map (its XSKMAP), for [`RedirectWatch`].
    pub fn redirect_map_ids(&self) -> Vec<u32> {
        vec![self.xsks_id]
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.loaded.program(EDGE_PROGRAM)
    }

    /// Attaches to `interface` (resolved in the calling thread's network namespace).
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<XdpLinkId, XdpError> {
        self.loaded.attach(EDGE_PROGRAM, interface, mode)
    }

    /// Counters summed over all CPUs.
    pub fn stats(&self) -> Result<EdgeStats, XdpError> {
        self.maps.stats.read()
    }

    /// Sets the UDP listen ports (at most [`MAX_LISTEN_PORTS`]) and the per-source
    /// hard-reset limit (`resets_per_second` 0 = none). Until this is called no port is
    /// treated as OpenVPN and everything passes (but what
    /// [`Edge::set_client_network`] refuses). The client network stays as set.
    pub fn configure(
        &mut self,
        listen_ports: &[u16],
        resets_per_second: u32,
        reset_burst: u32,
    ) -> Result<(), XdpError> {
        if listen_ports.len() > MAX_LISTEN_PORTS {
            return Err(XdpError::Config(format!(
                "{} UDP listen ports given, edge supports at most {MAX_LISTEN_PORTS}",
                listen_ports.len()
            )));
        }
        let mut config = self.maps.config.get()?;
        config.resets_per_second = resets_per_second;
        config.reset_burst = reset_burst;
        config.listen_ports = Default::default();
        for (slot, port) in config.listen_ports.iter_mut().zip(listen_ports) {
            *slot = port.to_be_bytes();
        }
        self.maps.config.set(config)
    }

    /// Tells `edge` the client CIDR: frames to it that are not OpenVPN are dropped
    /// (`to_client_network`), since only the data plane may deliver to a client. Until
    /// this is called no frame is refused for its destination.
    pub fn set_client_network(&mut self, client_cidr: Ipv4Net) -> Result<(), XdpError> {
        let mut config = self.maps.config.get()?;
        config.client_network = client_cidr.network().octets();
        config.client_netmask = client_cidr.netmask().octets();
        self.maps.config.set(config)
    }

    /// Lets data packets of `peer_id` through.
    pub fn insert_peer(&mut self, peer_id: u32, lease: Ipv4Addr) -> Result<(), XdpError> {
        let peer = EdgePeer {
            lease: lease.octets(),
        };
        self.maps.peers.insert(peer_id, peer)
    }

    /// Steers data packets arriving on rx queue `queue` to the AF_XDP socket `socket`
    /// (bound to that queue of the interface `edge` is attached to).
    pub fn insert_xsk(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        check_queue(queue)?;
        self.maps.xsks.set(queue, socket)
    }

    /// Drops data packets of `peer_id` from now on (a terminated or closed session).
    pub fn remove_peer(&mut self, peer_id: u32) -> Result<(), XdpError> {
        self.maps.peers.remove(&peer_id)
    }
}

/// The policy programs, `inner` (decrypted client packets) and `target` (target ENIs),
/// loaded together so that they share the session, route, authorization and NAT maps.
pub struct Policy {
    loaded: Loaded,
    maps: PolicyMaps,
    grace: RulesGrace,
    /// Kernel ids of the devmaps and the XSKMAP `inner` and `target` redirect through.
    redirect_map_ids: Vec<u32>,
}

/// How long a replaced rule set stays untouched after the switch away from it.
const RULES_GRACE: Duration = Duration::from_millis(50);

/// When the idle generation of the rules may be refilled: a packet that read the
/// generation number just before a switch may still be using the maps it named, so they
/// stay untouched for [`RULES_GRACE`] after it (XDP runs take microseconds).
#[derive(Clone, Copy, Debug, Default)]
struct RulesGrace {
    switched: Option<Instant>,
}

impl RulesGrace {
    /// The first instant at which the idle generation may be refilled, if later than
    /// `now`.
    fn ready_at(&self, now: Instant) -> Option<Instant> {
        self.switched
            .map(|at| at + RULES_GRACE)
            .filter(|ready| *ready > now)
    }

    /// Refuses a refill before [`RulesGrace::ready_at`].
    fn check(&self, now: Instant) -> Result<(), XdpError> {
        match self.ready_at(now) {
            Some(ready) => Err(XdpError::RulesBusy { wait: ready - now }),
            None => Ok(()),
        }
    }
}

impl Policy {
    /// Loads the object and verifies `inner` and `target`.
    pub fn load() -> Result<Self, XdpError> {
        Self::load_with_nat_capacity(gateway_ebpf_common::MAX_NAT_FLOWS)
    }

    /// As [`Policy::load`], with room for `flows` NAT mappings in each direction.
    pub fn load_with_nat_capacity(flows: u32) -> Result<Self, XdpError> {
        let mut loaded = Loaded::load(
            &[INNER_PROGRAM, TARGET_PROGRAM],
            &[(NAT_OUT_MAP, flows), (NAT_IN_MAP, flows)],
        )?;
        let redirect_map_ids = [TARGET_DEVS_MAP, DATAPLANE_DEVS_MAP, TARGET_XSKS_MAP]
            .into_iter()
            .map(|name| maps::redirect_map_id(&loaded.ebpf, name))
            .collect::<Result<_, _>>()?;
        let maps = PolicyMaps::take(&mut loaded.ebpf)?;
        Ok(Self {
            loaded,
            maps,
            grace: RulesGrace::default(),
            redirect_map_ids,
        })
    }

    /// The kernel ids of the maps `inner` and `target` redirect through, for
    /// [`RedirectWatch`].
    pub fn redirect_map_ids(&self) -> Vec<u32> {
        self.redirect_map_ids.clone()
    }

    pub fn inner(&self) -> &Xdp {
        self.loaded.program(INNER_PROGRAM)
    }

    pub fn target(&self) -> &Xdp {
        self.loaded.program(TARGET_PROGRAM)
    }

    /// Attaches `inner` where decrypted client packets enter.
    pub fn attach_inner(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, XdpError> {
        self.loaded.attach(INNER_PROGRAM, interface, mode)
    }

    /// Sets up target interface `interface` (index `ifindex`, in the calling thread's
    /// network namespace): attaches `target` natively, or in generic mode where the
    /// driver has no native XDP, and lets `inner` redirect into it only where its driver
    /// delivers redirected frames ([`forwarding_for`]); elsewhere translated packets go
    /// through the kernel.
    pub fn set_up_target(
        &mut self,
        interface: &str,
        ifindex: u32,
    ) -> Result<TargetSetup, XdpError> {
        let xdp_mode = match self.attach_target(interface, AttachMode::Native) {
            Ok(_) => "native",
            Err(native) => match self.attach_target(interface, AttachMode::Generic) {
                Ok(_) => "generic",
                Err(_) => return Err(native),
            },
        };
        let driver = crate::net::interface_driver(interface).unwrap_or_else(|_| "unknown".into());
        let (forwarding, reason) = forwarding_for(&driver);
        if forwarding == Forwarding::XdpRedirect {
            self.insert_target_device(ifindex)?;
        }
        Ok(TargetSetup {
            interface: interface.to_string(),
            ifindex,
            driver,
            xdp_mode: xdp_mode.to_string(),
            forwarding,
            reason,
        })
    }

    /// Attaches `target` to a target ENI.
    pub fn attach_target(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, XdpError> {
        self.loaded.attach(TARGET_PROGRAM, interface, mode)
    }

    pub fn inner_stats(&self) -> Result<InnerStats, XdpError> {
        self.maps.inner_stats.read()
    }

    pub fn target_stats(&self) -> Result<TargetStats, XdpError> {
        self.maps.target_stats.read()
    }

    /// Tells `inner` the client CIDR and whether clients may reach each other; `target`
    /// drops what arrives for the client CIDR unless it is a reply to a translated flow.
    pub fn set_client_network(
        &mut self,
        client_cidr: Ipv4Net,
        client_to_client: bool,
    ) -> Result<(), XdpError> {
        self.maps.config.set(InnerConfig {
            client_network: client_cidr.network().octets(),
            client_netmask: client_cidr.netmask().octets(),
            client_to_client: u32::from(client_to_client),
        })
    }

    /// Tells `inner` the gateway's own addresses (replacing those set before): packets
    /// to them are dropped (`gateway_address`), whatever the routes and rules. At most
    /// [`MAX_GATEWAY_ADDRS`]; [`crate::net::gateway_addresses`] lists the namespace's.
    pub fn set_gateway_addresses(&mut self, addresses: &[Ipv4Addr]) -> Result<(), XdpError> {
        if addresses.len() > MAX_GATEWAY_ADDRS as usize {
            return Err(XdpError::Config(format!(
                "{} gateway addresses, at most {MAX_GATEWAY_ADDRS}",
                addresses.len()
            )));
        }
        let wanted: Vec<[u8; 4]> = addresses.iter().map(Ipv4Addr::octets).collect();
        let map = &mut self.maps.gateway_addrs;
        for (old, _) in map.entries()? {
            if !wanted.contains(&old) {
                map.remove_if_present(&old)?;
            }
        }
        for addr in wanted {
            map.insert(addr, 1)?;
        }
        Ok(())
    }

    /// The addresses [`Policy::set_gateway_addresses`] put in force, sorted.
    pub fn gateway_addresses(&self) -> Result<Vec<Ipv4Addr>, XdpError> {
        let mut addresses: Vec<Ipv4Addr> = self
            .maps
            .gateway_addrs
            .entries()?
            .into_iter()
            .map(|(addr, _)| addr.into())
            .collect();
        addresses.sort();
        Ok(addresses)
    }

    /// Admits packets from `lease` as coming from this session.
    pub fn insert_session(&mut self, lease: Ipv4Addr, info: SessionInfo) -> Result<(), XdpError> {
        self.maps.sessions.insert(lease.octets(), info)
    }

    /// Ends a session in the data path at once: packets from `lease` are dropped as
    /// spoofed from now on, and every NAT mapping of the client is removed in both
    /// directions, so replies to it miss. Returns how many flows were removed.
    pub fn end_session(&mut self, lease: Ipv4Addr) -> Result<usize, XdpError> {
        self.maps.sessions.remove_if_present(&lease.octets())?;
        self.remove_flows_of(lease)
    }

    /// Writes what the policy compiler made of the configuration: the client network
    /// and the routes and rules (the target interfaces are set up by
    /// [`Policy::set_up_target`]).
    pub fn apply(&mut self, compiled: &Compiled) -> Result<(), XdpError> {
        let client = compiled.client_network;
        self.set_client_network(client.cidr, client.client_to_client)?;
        self.replace_rules(&compiled.rules)
    }

    /// Puts a whole new set of routes and authorization entries in force at once: fills
    /// the idle generation of the maps, then switches `inner` to it. No packet ever sees
    /// a mix of the old and new sets. On error (e.g. more entries than the maps hold, or
    /// [`XdpError::RulesBusy`] before [`Policy::rules_ready_at`]) the rules in force stay
    /// as they were. Never blocks: a caller that swaps twice in a row waits for
    /// `rules_ready_at` itself (`serve` with tokio).
    pub fn replace_rules(&mut self, rules: &CompiledRules) -> Result<(), XdpError> {
        let (routes, authorization) = (&rules.routes, &rules.authorization);
        if routes.len() > MAX_ROUTES as usize || authorization.len() > MAX_AUTHZ_RULES as usize {
            return Err(XdpError::Config(format!(
                "{} routes and {} rule networks; at most {MAX_ROUTES} and {MAX_AUTHZ_RULES}",
                routes.len(),
                authorization.len()
            )));
        }
        self.grace.check(Instant::now())?;
        let idle = 1 - self.generation()?;
        self.maps.policy[idle].refill(&rules.policy_entries())?;
        self.maps.generation.set(idle as u32)?;
        self.grace.switched = Some(Instant::now());
        Ok(())
    }

    /// When [`Policy::replace_rules`] may be called again, if not yet: until then the
    /// generation it would refill may still be read by packets in flight.
    pub fn rules_ready_at(&self) -> Option<Instant> {
        self.grace.ready_at(Instant::now())
    }

    /// Which generation of routes and rules is in force (0 or 1).
    fn generation(&self) -> Result<usize, XdpError> {
        Ok(usize::from(self.maps.generation.get()? == 1))
    }

    /// Lets `inner` redirect translated packets out of this target ENI. The kernel
    /// resolves `ifindex` in the calling thread's network namespace.
    pub fn insert_target_device(&mut self, ifindex: u32) -> Result<(), XdpError> {
        self.maps.target_devs.insert(ifindex)
    }

    /// Lets `target` redirect translated replies into this device towards the data
    /// plane (the TAP in socket mode). The kernel resolves `ifindex` in the calling
    /// thread's network namespace.
    pub fn insert_dataplane_device(&mut self, ifindex: u32) -> Result<(), XdpError> {
        self.maps.dataplane_devs.insert(ifindex)
    }

    /// Steers translated replies arriving on rx queue `queue` of target interface
    /// `ifindex` to the AF_XDP socket `socket` (bound to that queue), with the
    /// session's peer-id in the XDP metadata. At most [`MAX_XSK_TARGETS`] interfaces.
    pub fn insert_target_xsk(
        &mut self,
        ifindex: u32,
        queue: u32,
        socket: &impl AsRawFd,
    ) -> Result<(), XdpError> {
        check_queue(queue)?;
        let slots = &mut self.maps.target_xsk_slots;
        let first = match slots.get(&ifindex)? {
            Some(first) => first,
            None => {
                let taken = slots.count() as u32;
                if taken >= MAX_XSK_TARGETS {
                    return Err(XdpError::Config(format!(
                        "AF_XDP sockets on more than {MAX_XSK_TARGETS} target interfaces"
                    )));
                }
                let first = taken * MAX_XSK_QUEUES;
                slots.insert(ifindex, first)?;
                first
            }
        };
        self.maps.target_xsks.set(first + queue, socket)
    }
}

fn check_queue(queue: u32) -> Result<(), XdpError> {
    if queue >= MAX_XSK_QUEUES {
        return Err(XdpError::Config(format!(
            "rx queue {queue}: AF_XDP sockets are supported on queues below {MAX_XSK_QUEUES}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_refilled_only_after_the_grace() {
        let t0 = Instant::now();
        let mut grace = RulesGrace::default();
        assert_eq!(grace.ready_at(t0), None);
        assert!(grace.check(t0).is_ok());
        grace.switched = Some(t0);
        // A second swap in quick succession is refused, saying how long to wait.
        let soon = t0 + Duration::from_millis(10);
        assert_eq!(grace.ready_at(soon), Some(t0 + RULES_GRACE));
        match grace.check(soon) {
            Err(XdpError::RulesBusy { wait }) => assert_eq!(wait, Duration::from_millis(40)),
            other => panic!("{other:?}"),
        }
        let almost = t0 + RULES_GRACE - Duration::from_nanos(1);
        assert!(grace.check(almost).is_err());
        assert_eq!(grace.ready_at(t0 + RULES_GRACE), None);
        assert!(grace.check(t0 + RULES_GRACE).is_ok());
    }
}
