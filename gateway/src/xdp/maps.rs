//! One typed handle per BPF map: each map's name and its key and value types are stated
//! once, in [`EdgeMaps`] and [`PolicyMaps`], and taken out of the loaded object once.

use std::{marker::PhantomData, os::fd::AsRawFd};

use aya::{
    Ebpf, Pod,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, XskMap,
        lpm_trie::Key,
    },
};
use gateway_ebpf_common::{
    DATAPLANE_DEVS_MAP, EDGE_CONFIG_MAP, EDGE_PEERS_MAP, EDGE_XSKS_MAP, EdgeConfig, EdgePeer,
    EdgeStat, FlowKey, GATEWAY_ADDRS_MAP, INNER_CONFIG_MAP, InnerConfig, InnerStat, NAT_IN_MAP,
    NAT_OUT_MAP, NatIn, NatOut, POLICY_GENERATION_MAP, POLICY_MAPS, PolicyValue, REDIRECT_MAPS_MAP,
    RedirectStat, SESSIONS_MAP, SessionInfo, TARGET_DEVS_MAP, TARGET_XSK_SLOTS_MAP,
    TARGET_XSKS_MAP, TargetStat,
};
use ipnet::Ipv4Net;

use super::{
    XdpError,
    stats::{Counter, Stats},
};

/// The kernel's id of map `name` of the loaded object (before it is taken), for the
/// redirect tracepoint's filter.
pub(super) fn redirect_map_id(ebpf: &Ebpf, name: &'static str) -> Result<u32, XdpError> {
    let data = match ebpf.map(name).ok_or_else(|| missing_map(name))? {
        Map::DevMapHash(data) | Map::DevMap(data) | Map::XskMap(data) => data,
        _ => {
            return Err(XdpError::Config(format!(
                "map {name} is not a redirect map"
            )));
        }
    };
    Ok(data.info().map_err(map_error(name))?.id())
}

/// The maps of the redirect tracepoint programs.
pub(super) struct RedirectMaps {
    /// Map id → 1 for each map whose failed redirects count.
    pub watched: Hash<u32, u8>,
    pub stats: Counters<RedirectStat>,
}

impl RedirectMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, XdpError> {
        Ok(Self {
            watched: Hash::take(ebpf, REDIRECT_MAPS_MAP)?,
            stats: Counters::take(ebpf)?,
        })
    }
}

/// The maps `edge` uses.
pub(super) struct EdgeMaps {
    pub config: Cell<EdgeConfig>,
    /// peer-id → the session's lease.
    pub peers: Hash<u32, EdgePeer>,
    /// rx queue → AF_XDP socket.
    pub xsks: Xsks,
    pub stats: Counters<EdgeStat>,
}

impl EdgeMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, XdpError> {
        Ok(Self {
            config: Cell::take(ebpf, EDGE_CONFIG_MAP)?,
            peers: Hash::take(ebpf, EDGE_PEERS_MAP)?,
            xsks: Xsks::take(ebpf, EDGE_XSKS_MAP)?,
            stats: Counters::take(ebpf)?,
        })
    }
}

/// The maps `inner` and `target` share.
pub(super) struct PolicyMaps {
    pub config: Cell<InnerConfig>,
    /// lease → groups and peer-id.
    pub sessions: Hash<[u8; 4], SessionInfo>,
    /// The gateway's own addresses (→ 1), refused as destinations.
    pub gateway_addrs: Hash<[u8; 4], u8>,
    /// Which of `policy` is in force (0 or 1).
    pub generation: Cell<u32>,
    /// The two generations of the merged route and authorization trie.
    pub policy: [Trie<PolicyValue>; 2],
    pub target_devs: Devices,
    pub dataplane_devs: Devices,
    /// target ifindex → its first slot in `target_xsks`.
    pub target_xsk_slots: Hash<u32, u32>,
    pub target_xsks: Xsks,
    /// client flow → translation.
    pub nat_out: Hash<FlowKey, NatOut>,
    /// reply flow at the target ENI → client end.
    pub nat_in: Hash<FlowKey, NatIn>,
    pub inner_stats: Counters<InnerStat>,
    pub target_stats: Counters<TargetStat>,
}

impl PolicyMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, XdpError> {
        Ok(Self {
            config: Cell::take(ebpf, INNER_CONFIG_MAP)?,
            sessions: Hash::take(ebpf, SESSIONS_MAP)?,
            gateway_addrs: Hash::take(ebpf, GATEWAY_ADDRS_MAP)?,
            generation: Cell::take(ebpf, POLICY_GENERATION_MAP)?,
            policy: [
                Trie::take(ebpf, POLICY_MAPS[0])?,
                Trie::take(ebpf, POLICY_MAPS[1])?,
            ],
            target_devs: Devices::take(ebpf, TARGET_DEVS_MAP)?,
            dataplane_devs: Devices::take(ebpf, DATAPLANE_DEVS_MAP)?,
            target_xsk_slots: Hash::take(ebpf, TARGET_XSK_SLOTS_MAP)?,
            target_xsks: Xsks::take(ebpf, TARGET_XSKS_MAP)?,
            nat_out: Hash::take(ebpf, NAT_OUT_MAP)?,
            nat_in: Hash::take(ebpf, NAT_IN_MAP)?,
            inner_stats: Counters::take(ebpf)?,
            target_stats: Counters::take(ebpf)?,
        })
    }
}

/// Takes map `name` out of the loaded object as the typed map `M`.
fn take<M: TryFrom<Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<M, XdpError> {
    let map = ebpf.take_map(name).ok_or_else(|| missing_map(name))?;
    M::try_from(map).map_err(map_error(name))
}

fn missing_map(name: &'static str) -> XdpError {
    XdpError::Map {
        name,
        source: Box::new(MapError::InvalidName { name: name.into() }),
    }
}

fn map_error(name: &'static str) -> impl Fn(MapError) -> XdpError {
    move |source| XdpError::Map {
        name,
        source: Box::new(source),
    }
}

/// Whether a map operation failed only because the key was not there.
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// A BPF hash map from `K` to `V`.
pub(super) struct Hash<K, V> {
    name: &'static str,
    map: HashMap<MapData, K, V>,
}

impl<K: Pod, V: Pod> Hash<K, V> {
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, XdpError> {
        Ok(Self {
            name,
            map: take(ebpf, name)?,
        })
    }

    pub fn insert(&mut self, key: K, value: V) -> Result<(), XdpError> {
        self.map.insert(key, value, 0).map_err(map_error(self.name))
    }

    /// `None` when `key` is not there.
    pub fn get(&self, key: &K) -> Result<Option<V>, XdpError> {
        match self.map.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(self.name)(e)),
        }
    }

    /// Removes `key`; a key that is not there is an error.
    pub fn remove(&mut self, key: &K) -> Result<(), XdpError> {
        self.map.remove(key).map_err(map_error(self.name))
    }

    /// Removes `key`; a key already gone is not an error.
    pub fn remove_if_present(&mut self, key: &K) -> Result<(), XdpError> {
        match self.map.remove(key) {
            Err(e) if !is_not_found(&e) => Err(map_error(self.name)(e)),
            _ => Ok(()),
        }
    }

    /// Every entry.
    pub fn entries(&self) -> Result<Vec<(K, V)>, XdpError> {
        self.map
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_error(self.name))
    }

    /// How many keys can be read.
    pub fn count(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }
}

/// Entry 0 of a one-entry BPF array.
pub(super) struct Cell<V: Pod> {
    name: &'static str,
    map: Array<MapData, V>,
}

impl<V: Pod> Cell<V> {
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, XdpError> {
        Ok(Self {
            name,
            map: take(ebpf, name)?,
        })
    }

    pub fn get(&self) -> Result<V, XdpError> {
        self.map.get(&0, 0).map_err(map_error(self.name))
    }

    pub fn set(&mut self, value: V) -> Result<(), XdpError> {
        self.map.set(0, value, 0).map_err(map_error(self.name))
    }
}

/// A BPF LPM trie keyed by IPv4 network.
pub(super) struct Trie<V> {
    name: &'static str,
    map: LpmTrie<MapData, [u8; 4], V>,
}

impl<V: Pod> Trie<V> {
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, XdpError> {
        Ok(Self {
            name,
            map: take(ebpf, name)?,
        })
    }

    /// Empties the trie and fills it with `entries` (host bits of each network cleared).
    pub fn refill(&mut self, entries: &[(Ipv4Net, V)]) -> Result<(), XdpError> {
        let old: Vec<Key<[u8; 4]>> = self
            .map
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_error(self.name))?;
        for key in &old {
            self.map.remove(key).map_err(map_error(self.name))?;
        }
        for (destination, value) in entries {
            let net = destination.trunc();
            let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
            self.map
                .insert(&key, *value, 0)
                .map_err(map_error(self.name))?;
        }
        Ok(())
    }
}

/// A BPF XSKMAP: index → AF_XDP socket.
pub(super) struct Xsks {
    name: &'static str,
    map: XskMap<MapData>,
}

impl Xsks {
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, XdpError> {
        Ok(Self {
            name,
            map: take(ebpf, name)?,
        })
    }

    pub fn set(&mut self, index: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        self.map
            .set(index, socket.as_raw_fd(), 0)
            .map_err(map_error(self.name))
    }
}

/// A BPF DEVMAP_HASH of the devices a program may redirect to, keyed by ifindex.
pub(super) struct Devices {
    name: &'static str,
    map: DevMapHash<MapData>,
}

impl Devices {
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, XdpError> {
        Ok(Self {
            name,
            map: take(ebpf, name)?,
        })
    }

    /// Adds device `ifindex` (resolved in the calling thread's network namespace).
    pub fn insert(&mut self, ifindex: u32) -> Result<(), XdpError> {
        let name = self.name;
        self.map
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| match e {
                aya::maps::xdp::XdpMapError::MapError(source) => map_error(name)(source),
                other => XdpError::Device {
                    name,
                    ifindex,
                    reason: other.to_string(),
                },
            })
    }
}

/// A program's per-CPU counter array (its name is `C::MAP`).
pub(super) struct Counters<C> {
    map: PerCpuArray<MapData, u64>,
    _counter: PhantomData<C>,
}

impl<C: Counter> Counters<C> {
    fn take(ebpf: &mut Ebpf) -> Result<Self, XdpError> {
        Ok(Self {
            map: take(ebpf, C::MAP)?,
            _counter: PhantomData,
        })
    }

    /// Every counter, summed over CPUs.
    pub fn read(&self) -> Result<Stats<C>, XdpError> {
        let mut values = Vec::with_capacity(C::ALL.len());
        for index in 0..C::ALL.len() {
            let per_cpu = self
                .map
                .get(&(index as u32), 0)
                .map_err(map_error(C::MAP))?;
            values.push(per_cpu.iter().sum());
        }
        Ok(Stats::from_values(values))
    }
}
