//! Loading the XDP programs built from `gateway-ebpf`, attaching them to interfaces, and
//! reading their counters.

use std::{fmt, marker::PhantomData, net::Ipv4Addr, os::fd::AsRawFd};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, XskMap, lpm_trie::Key},
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use gateway_ebpf_common::{
    DATAPLANE_DEVS_MAP, EDGE_CONFIG_MAP, EDGE_PEERS_MAP, EDGE_PROGRAM, EDGE_STATS_MAP,
    EDGE_XSKS_MAP, EdgeConfig, EdgePeer, EdgeStat, FlowKey, INNER_CONFIG_MAP, INNER_PROGRAM,
    INNER_STATS_MAP, InnerConfig, InnerStat, MAX_AUTHZ_RULES, MAX_LISTEN_PORTS, MAX_ROUTES,
    MAX_XSK_QUEUES, MAX_XSK_TARGETS, NAT_IN_MAP, NAT_OUT_MAP, NatIn, NatOut, POLICY_GENERATION_MAP,
    POLICY_MAPS, SESSIONS_MAP, SessionInfo, TARGET_DEVS_MAP, TARGET_PROGRAM, TARGET_STATS_MAP,
    TARGET_XSK_SLOTS_MAP, TARGET_XSKS_MAP, TargetStat,
};
use ipnet::Ipv4Net;

use crate::{
    nat::NatTimeouts,
    policy::{Compiled, CompiledRules},
};

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

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, XdpError> {
        self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))
    }

    fn stats<C: Counter>(&self) -> Result<Stats<C>, XdpError> {
        let map = self.ebpf.map(C::MAP).ok_or_else(|| missing_map(C::MAP))?;
        let array = PerCpuArray::<_, u64>::try_from(map).map_err(map_error(C::MAP))?;
        let mut values = Vec::with_capacity(C::ALL.len());
        for (index, _) in C::ALL.iter().enumerate() {
            let per_cpu = array.get(&(index as u32), 0).map_err(map_error(C::MAP))?;
            values.push(per_cpu.iter().sum());
        }
        Ok(Stats {
            values,
            _counter: PhantomData,
        })
    }
}

fn missing_map(name: &'static str) -> XdpError {
    XdpError::Map {
        name,
        source: Box::new(aya::maps::MapError::InvalidName { name: name.into() }),
    }
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
    move |source| XdpError::Map {
        name,
        source: Box::new(source),
    }
}

/// The `edge` program (public ENI) with its counters.
pub struct Edge(Loaded);

impl Edge {
    /// Loads the object and verifies the `edge` program.
    pub fn load() -> Result<Self, XdpError> {
        Loaded::load(&[EDGE_PROGRAM], &[]).map(Self)
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.0.program(EDGE_PROGRAM)
    }

    /// Attaches to `interface` (resolved in the calling thread's network namespace).
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<XdpLinkId, XdpError> {
        self.0.attach(EDGE_PROGRAM, interface, mode)
    }

    /// Counters summed over all CPUs.
    pub fn stats(&self) -> Result<EdgeStats, XdpError> {
        self.0.stats()
    }

    /// Sets the UDP listen ports (at most [`MAX_LISTEN_PORTS`]) and the per-source
    /// hard-reset limit (`resets_per_second` 0 = none). Until this is called no port is
    /// treated as OpenVPN and everything passes.
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
        let mut config = EdgeConfig {
            resets_per_second,
            reset_burst,
            ..Default::default()
        };
        for (slot, port) in config.listen_ports.iter_mut().zip(listen_ports) {
            *slot = port.to_be_bytes();
        }
        let mut map = Array::<_, EdgeConfig>::try_from(self.0.map_mut(EDGE_CONFIG_MAP)?)
            .map_err(map_error(EDGE_CONFIG_MAP))?;
        map.set(0, config, 0).map_err(map_error(EDGE_CONFIG_MAP))
    }

    /// Lets data packets of `peer_id` through.
    pub fn insert_peer(&mut self, peer_id: u32, lease: Ipv4Addr) -> Result<(), XdpError> {
        let mut map = HashMap::<_, u32, EdgePeer>::try_from(self.0.map_mut(EDGE_PEERS_MAP)?)
            .map_err(map_error(EDGE_PEERS_MAP))?;
        let peer = EdgePeer {
            lease: lease.octets(),
        };
        map.insert(peer_id, peer, 0)
            .map_err(map_error(EDGE_PEERS_MAP))
    }

    /// Steers data packets arriving on rx queue `queue` to the AF_XDP socket `socket`
    /// (bound to that queue of the interface `edge` is attached to).
    pub fn insert_xsk(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        check_queue(queue)?;
        let mut map =
            XskMap::try_from(self.0.map_mut(EDGE_XSKS_MAP)?).map_err(map_error(EDGE_XSKS_MAP))?;
        map.set(queue, socket.as_raw_fd(), 0)
            .map_err(map_error(EDGE_XSKS_MAP))
    }

    /// Drops data packets of `peer_id` from now on (a terminated or closed session).
    pub fn remove_peer(&mut self, peer_id: u32) -> Result<(), XdpError> {
        let mut map = HashMap::<_, u32, EdgePeer>::try_from(self.0.map_mut(EDGE_PEERS_MAP)?)
            .map_err(map_error(EDGE_PEERS_MAP))?;
        map.remove(&peer_id).map_err(map_error(EDGE_PEERS_MAP))
    }
}

/// The policy programs, `inner` (decrypted client packets) and `target` (target ENIs),
/// loaded together so that they share the session, route, authorization and NAT maps.
pub struct Policy(Loaded, Option<std::time::Instant>);

/// How long a replaced rule set stays untouched after the switch away from it.
const RULES_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

impl Policy {
    /// Loads the object and verifies `inner` and `target`.
    pub fn load() -> Result<Self, XdpError> {
        Self::load_with_nat_capacity(gateway_ebpf_common::MAX_NAT_FLOWS)
    }

    /// As [`Policy::load`], with room for `flows` NAT mappings in each direction.
    pub fn load_with_nat_capacity(flows: u32) -> Result<Self, XdpError> {
        Loaded::load(
            &[INNER_PROGRAM, TARGET_PROGRAM],
            &[(NAT_OUT_MAP, flows), (NAT_IN_MAP, flows)],
        )
        .map(|loaded| Self(loaded, None))
    }

    pub fn inner(&self) -> &Xdp {
        self.0.program(INNER_PROGRAM)
    }

    pub fn target(&self) -> &Xdp {
        self.0.program(TARGET_PROGRAM)
    }

    /// Attaches `inner` where decrypted client packets enter.
    pub fn attach_inner(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, XdpError> {
        self.0.attach(INNER_PROGRAM, interface, mode)
    }

    /// Attaches `target` to a target ENI.
    pub fn attach_target(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, XdpError> {
        self.0.attach(TARGET_PROGRAM, interface, mode)
    }

    pub fn inner_stats(&self) -> Result<InnerStats, XdpError> {
        self.0.stats()
    }

    pub fn target_stats(&self) -> Result<TargetStats, XdpError> {
        self.0.stats()
    }

    /// Tells `inner` the client CIDR and whether clients may reach each other.
    pub fn set_client_network(
        &mut self,
        client_cidr: Ipv4Net,
        client_to_client: bool,
    ) -> Result<(), XdpError> {
        let config = InnerConfig {
            client_network: client_cidr.network().octets(),
            client_netmask: client_cidr.netmask().octets(),
            client_to_client: u32::from(client_to_client),
        };
        let mut map = Array::<_, InnerConfig>::try_from(self.0.map_mut(INNER_CONFIG_MAP)?)
            .map_err(map_error(INNER_CONFIG_MAP))?;
        map.set(0, config, 0).map_err(map_error(INNER_CONFIG_MAP))
    }

    /// Admits packets from `lease` as coming from this session.
    pub fn insert_session(&mut self, lease: Ipv4Addr, info: SessionInfo) -> Result<(), XdpError> {
        let mut map = HashMap::<_, [u8; 4], SessionInfo>::try_from(self.0.map_mut(SESSIONS_MAP)?)
            .map_err(map_error(SESSIONS_MAP))?;
        map.insert(lease.octets(), info, 0)
            .map_err(map_error(SESSIONS_MAP))
    }

    /// Ends a session in the data path at once: packets from `lease` are dropped as
    /// spoofed from now on, and every NAT mapping of the client is removed in both
    /// directions, so replies to it miss. Returns how many flows were removed.
    pub fn end_session(&mut self, lease: Ipv4Addr) -> Result<usize, XdpError> {
        let mut sessions =
            HashMap::<_, [u8; 4], SessionInfo>::try_from(self.0.map_mut(SESSIONS_MAP)?)
                .map_err(map_error(SESSIONS_MAP))?;
        match sessions.remove(&lease.octets()) {
            Err(e) if !is_not_found(&e) => return Err(map_error(SESSIONS_MAP)(e)),
            _ => {}
        }
        let client = lease.octets();
        let flows: Vec<(FlowKey, NatIn)> = self
            .nat_reverse()?
            .into_iter()
            .filter(|(_, back)| back.client_addr == client)
            .collect();
        for (reply, back) in &flows {
            remove_if_present::<FlowKey, NatIn>(self.0.map_mut(NAT_IN_MAP)?, NAT_IN_MAP, reply)?;
            let out = FlowKey {
                src_addr: back.client_addr,
                dst_addr: reply.src_addr,
                src_port: back.client_port,
                dst_port: reply.src_port,
                protocol: reply.protocol,
                _pad: [0; 3],
            };
            remove_if_present::<FlowKey, NatOut>(self.0.map_mut(NAT_OUT_MAP)?, NAT_OUT_MAP, &out)?;
        }
        Ok(flows.len())
    }

    /// Writes what the policy compiler made of the configuration: the client network,
    /// the routes and rules, and every target interface as a redirect device.
    pub fn apply(&mut self, compiled: &Compiled) -> Result<(), XdpError> {
        let client = compiled.client_network;
        self.set_client_network(client.cidr, client.client_to_client)?;
        self.replace_rules(&compiled.rules)?;
        for target in &compiled.targets {
            self.insert_target_device(target.interface.ifindex)?;
        }
        Ok(())
    }

    /// Puts a whole new set of routes and authorization entries in force at once: fills
    /// the idle generation of the maps, then switches `inner` to it. No packet ever sees
    /// a mix of the old and new sets. On error (e.g. more entries than the maps hold)
    /// the rules in force stay as they were.
    pub fn replace_rules(&mut self, rules: &CompiledRules) -> Result<(), XdpError> {
        let (routes, authorization) = (&rules.routes, &rules.authorization);
        if routes.len() > MAX_ROUTES as usize || authorization.len() > MAX_AUTHZ_RULES as usize {
            return Err(XdpError::Config(format!(
                "{} routes and {} rule networks; at most {MAX_ROUTES} and {MAX_AUTHZ_RULES}",
                routes.len(),
                authorization.len()
            )));
        }
        let active = self.generation()?;
        let idle = 1 - active;
        // A packet that read the previous generation just before the last switch may
        // still be using the idle maps; XDP runs take microseconds, so wait a margin.
        if let Some(switched) = self.1 {
            let since = switched.elapsed();
            if since < RULES_GRACE {
                std::thread::sleep(RULES_GRACE - since);
            }
        }
        refill_lpm(
            self.0.map_mut(POLICY_MAPS[idle])?,
            POLICY_MAPS[idle],
            &rules.policy_entries(),
        )?;
        let mut generation = Array::<_, u32>::try_from(self.0.map_mut(POLICY_GENERATION_MAP)?)
            .map_err(map_error(POLICY_GENERATION_MAP))?;
        generation
            .set(0, idle as u32, 0)
            .map_err(map_error(POLICY_GENERATION_MAP))?;
        self.1 = Some(std::time::Instant::now());
        Ok(())
    }

    /// Which generation of routes and rules is in force (0 or 1).
    fn generation(&mut self) -> Result<usize, XdpError> {
        let generation = Array::<_, u32>::try_from(self.0.map_mut(POLICY_GENERATION_MAP)?)
            .map_err(map_error(POLICY_GENERATION_MAP))?;
        let g = generation
            .get(&0, 0)
            .map_err(map_error(POLICY_GENERATION_MAP))?;
        Ok(usize::from(g == 1))
    }

    /// Lets `inner` redirect translated packets out of this target ENI. The kernel
    /// resolves `ifindex` in the calling thread's network namespace.
    pub fn insert_target_device(&mut self, ifindex: u32) -> Result<(), XdpError> {
        insert_device(self.0.map_mut(TARGET_DEVS_MAP)?, TARGET_DEVS_MAP, ifindex)
    }

    /// Lets `target` redirect translated replies into this device towards the data
    /// plane (the TAP in socket mode). The kernel resolves `ifindex` in the calling
    /// thread's network namespace.
    pub fn insert_dataplane_device(&mut self, ifindex: u32) -> Result<(), XdpError> {
        insert_device(
            self.0.map_mut(DATAPLANE_DEVS_MAP)?,
            DATAPLANE_DEVS_MAP,
            ifindex,
        )
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
        let mut slots = HashMap::<_, u32, u32>::try_from(self.0.map_mut(TARGET_XSK_SLOTS_MAP)?)
            .map_err(map_error(TARGET_XSK_SLOTS_MAP))?;
        let first = match slots.get(&ifindex, 0) {
            Ok(first) => first,
            Err(aya::maps::MapError::KeyNotFound) => {
                let taken = slots.keys().filter(Result::is_ok).count() as u32;
                if taken >= MAX_XSK_TARGETS {
                    return Err(XdpError::Config(format!(
                        "AF_XDP sockets on more than {MAX_XSK_TARGETS} target interfaces"
                    )));
                }
                let first = taken * MAX_XSK_QUEUES;
                slots
                    .insert(ifindex, first, 0)
                    .map_err(map_error(TARGET_XSK_SLOTS_MAP))?;
                first
            }
            Err(e) => return Err(map_error(TARGET_XSK_SLOTS_MAP)(e)),
        };
        let mut map = XskMap::try_from(self.0.map_mut(TARGET_XSKS_MAP)?)
            .map_err(map_error(TARGET_XSKS_MAP))?;
        map.set(first + queue, socket.as_raw_fd(), 0)
            .map_err(map_error(TARGET_XSKS_MAP))
    }

    /// Every NAT mapping, as (client flow, translation).
    pub fn nat_mappings(&mut self) -> Result<Vec<(FlowKey, NatOut)>, XdpError> {
        let map = HashMap::<_, FlowKey, NatOut>::try_from(self.0.map_mut(NAT_OUT_MAP)?)
            .map_err(map_error(NAT_OUT_MAP))?;
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_error(NAT_OUT_MAP))
    }

    /// Every reverse NAT entry, as (reply flow at the target ENI, client end).
    pub fn nat_reverse(&mut self) -> Result<Vec<(FlowKey, NatIn)>, XdpError> {
        let map = HashMap::<_, FlowKey, NatIn>::try_from(self.0.map_mut(NAT_IN_MAP)?)
            .map_err(map_error(NAT_IN_MAP))?;
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_error(NAT_IN_MAP))
    }

    /// Removes NAT mappings idle for longer than their timeout at `now_ns` (on the
    /// `nat::monotonic_now_ns` clock), both directions together, and forward entries
    /// whose reverse is gone (replies could not return through them; the next packet
    /// makes a fresh pair). A flow refreshed between the read and the removal may be cut;
    /// its next packet maps it again.
    pub fn sweep_nat(&mut self, now_ns: u64, timeouts: &NatTimeouts) -> Result<NatSweep, XdpError> {
        let reverse = self.nat_reverse()?;
        let forward: std::collections::HashMap<FlowKey, NatOut> =
            self.nat_mappings()?.into_iter().collect();
        let mut sweep = NatSweep::default();
        let mut paired = std::collections::HashSet::new();
        for (reply, back) in &reverse {
            let out_key = FlowKey {
                src_addr: back.client_addr,
                dst_addr: reply.src_addr,
                src_port: back.client_port,
                dst_port: reply.src_port,
                protocol: reply.protocol,
                _pad: [0; 3],
            };
            let out = forward
                .get(&out_key)
                .filter(|out| out.nat_addr == reply.dst_addr && out.nat_port == reply.dst_port);
            if out.is_some() {
                paired.insert(out_key);
            }
            let last = out.map_or(back.last_seen_ns, |o| o.last_seen_ns.max(back.last_seen_ns));
            let timeout = timeouts.idle_timeout(
                reply.protocol,
                out.map_or(0, |o| o.tcp_flags),
                back.tcp_flags,
            );
            if now_ns.saturating_sub(last) <= timeout.as_nanos() as u64 {
                sweep.kept += 1;
                continue;
            }
            remove_if_present::<FlowKey, NatIn>(self.0.map_mut(NAT_IN_MAP)?, NAT_IN_MAP, reply)?;
            if out.is_some() {
                remove_if_present::<FlowKey, NatOut>(
                    self.0.map_mut(NAT_OUT_MAP)?,
                    NAT_OUT_MAP,
                    &out_key,
                )?;
            }
            sweep.expired += 1;
        }
        for key in forward.keys().filter(|k| !paired.contains(*k)) {
            remove_if_present::<FlowKey, NatOut>(self.0.map_mut(NAT_OUT_MAP)?, NAT_OUT_MAP, key)?;
            sweep.orphans += 1;
        }
        Ok(sweep)
    }

    /// Claims a reverse NAT entry directly (tests and the NAT sweeper's repairs).
    pub fn insert_nat_reverse(&mut self, reply: FlowKey, client: NatIn) -> Result<(), XdpError> {
        let mut map = HashMap::<_, FlowKey, NatIn>::try_from(self.0.map_mut(NAT_IN_MAP)?)
            .map_err(map_error(NAT_IN_MAP))?;
        map.insert(reply, client, 0).map_err(map_error(NAT_IN_MAP))
    }
}

/// Removes `key` from a hash map; a key already gone is not an error.
fn remove_if_present<K: aya::Pod, V: aya::Pod>(
    map: &mut aya::maps::Map,
    name: &'static str,
    key: &K,
) -> Result<(), XdpError> {
    let mut hash = HashMap::<&mut MapData, K, V>::try_from(map).map_err(map_error(name))?;
    match hash.remove(key) {
        Err(e) if !is_not_found(&e) => Err(map_error(name)(e)),
        _ => Ok(()),
    }
}

/// Whether a map operation failed only because the key was not there.
fn is_not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// What one NAT sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatSweep {
    /// Flows still within their timeout.
    pub kept: usize,
    /// Flows removed for idling too long.
    pub expired: usize,
    /// Forward entries removed because their reverse entry was gone.
    pub orphans: usize,
}

fn check_queue(queue: u32) -> Result<(), XdpError> {
    if queue >= MAX_XSK_QUEUES {
        return Err(XdpError::Config(format!(
            "rx queue {queue}: AF_XDP sockets are supported on queues below {MAX_XSK_QUEUES}"
        )));
    }
    Ok(())
}

fn insert_device(
    map: &mut aya::maps::Map,
    name: &'static str,
    ifindex: u32,
) -> Result<(), XdpError> {
    let mut devs = aya::maps::DevMapHash::<&mut MapData>::try_from(map).map_err(map_error(name))?;
    devs.insert(ifindex, ifindex, None, 0).map_err(|e| match e {
        aya::maps::xdp::XdpMapError::MapError(source) => map_error(name)(source),
        other => XdpError::Device {
            name,
            ifindex,
            reason: other.to_string(),
        },
    })
}

/// Empties an LPM trie and fills it with `entries` (host bits of each network cleared).
fn refill_lpm<V: aya::Pod>(
    map: &mut aya::maps::Map,
    name: &'static str,
    entries: &[(Ipv4Net, V)],
) -> Result<(), XdpError> {
    let mut trie = LpmTrie::<&mut MapData, [u8; 4], V>::try_from(map).map_err(map_error(name))?;
    let old: Vec<Key<[u8; 4]>> = trie
        .keys()
        .collect::<Result<_, _>>()
        .map_err(map_error(name))?;
    for key in &old {
        trie.remove(key).map_err(map_error(name))?;
    }
    for (destination, value) in entries {
        let net = destination.trunc();
        let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
        trie.insert(&key, *value, 0).map_err(map_error(name))?;
    }
    Ok(())
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

/// A program's per-CPU counter array: its map name and counters in index order.
pub trait Counter: Copy + PartialEq + 'static {
    const MAP: &'static str;
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

impl Counter for EdgeStat {
    const MAP: &'static str = EDGE_STATS_MAP;
    const ALL: &'static [Self] = &EdgeStat::ALL;
    fn name(self) -> &'static str {
        EdgeStat::name(self)
    }
}

impl Counter for InnerStat {
    const MAP: &'static str = INNER_STATS_MAP;
    const ALL: &'static [Self] = &InnerStat::ALL;
    fn name(self) -> &'static str {
        InnerStat::name(self)
    }
}

impl Counter for TargetStat {
    const MAP: &'static str = TARGET_STATS_MAP;
    const ALL: &'static [Self] = &TargetStat::ALL;
    fn name(self) -> &'static str {
        TargetStat::name(self)
    }
}

/// A snapshot of a program's counters, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats<C: Counter> {
    values: Vec<u64>,
    _counter: PhantomData<C>,
}

pub type EdgeStats = Stats<EdgeStat>;
pub type InnerStats = Stats<InnerStat>;
pub type TargetStats = Stats<TargetStat>;

impl<C: Counter> Default for Stats<C> {
    fn default() -> Self {
        Self {
            values: vec![0; C::ALL.len()],
            _counter: PhantomData,
        }
    }
}

impl<C: Counter> Stats<C> {
    pub fn get(&self, counter: C) -> u64 {
        C::ALL
            .iter()
            .position(|c| *c == counter)
            .map_or(0, |i| self.values[i])
    }

    /// Counter by counter difference `self - earlier` (counters only grow).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            values: self
                .values
                .iter()
                .zip(&earlier.values)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            _counter: PhantomData,
        }
    }
}

impl<C: Counter> fmt::Display for Stats<C> {
    /// `name=value` pairs of the non-zero counters, in index order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (c, v) in C::ALL.iter().zip(&self.values) {
            if *v == 0 {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{}={v}", c.name())?;
            first = false;
        }
        if first {
            f.write_str("(no packets)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_display_and_difference() {
        let mut a = EdgeStats::default();
        assert_eq!(a.to_string(), "(no packets)");
        a.values[EdgeStat::Pass as usize] = 5;
        a.values[EdgeStat::Udp as usize] = 3;
        let mut b = a.clone();
        b.values[EdgeStat::Pass as usize] = 9;
        assert_eq!(b.to_string(), "pass=9 udp=3");
        assert_eq!(b.since(&a).to_string(), "pass=4");
    }
}
