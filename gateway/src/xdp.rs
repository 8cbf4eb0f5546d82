//! Loading the XDP programs built from `gateway-ebpf`, attaching them to interfaces, and
//! reading their counters.

use std::{fmt, marker::PhantomData, net::Ipv4Addr};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use gateway_ebpf_common::{
    AUTHZ_MAP, AuthzValue, EDGE_PROGRAM, EDGE_STATS_MAP, EdgeStat, INNER_PROGRAM, INNER_STATS_MAP,
    InnerStat, ROUTES_MAP, RouteValue, SESSIONS_MAP, SessionInfo,
};
use ipnet::Ipv4Net;

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

/// One XDP program of the object, loaded into the kernel with its maps.
///
/// Dropping it detaches the program from every interface it was attached to.
struct Loaded {
    ebpf: Ebpf,
    name: &'static str,
}

impl Loaded {
    fn load(name: &'static str) -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| XdpError::Object(Box::new(e)))?;
        program_mut(&mut ebpf, name)?
            .load()
            .map_err(|source| XdpError::Program {
                name,
                source: Box::new(source),
            })?;
        Ok(Self { ebpf, name })
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(self.name)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("checked in Loaded::load")
    }

    fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<XdpLinkId, XdpError> {
        let name = self.name;
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
        Loaded::load(EDGE_PROGRAM).map(Self)
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.0.program()
    }

    /// Attaches to `interface` (resolved in the calling thread's network namespace).
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<XdpLinkId, XdpError> {
        self.0.attach(interface, mode)
    }

    /// Counters summed over all CPUs.
    pub fn stats(&self) -> Result<EdgeStats, XdpError> {
        self.0.stats()
    }
}

/// The `inner` program (decrypted client packets) with its policy maps.
pub struct Inner(Loaded);

impl Inner {
    /// Loads the object and verifies the `inner` program.
    pub fn load() -> Result<Self, XdpError> {
        Loaded::load(INNER_PROGRAM).map(Self)
    }

    pub fn program(&self) -> &Xdp {
        self.0.program()
    }

    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<XdpLinkId, XdpError> {
        self.0.attach(interface, mode)
    }

    pub fn stats(&self) -> Result<InnerStats, XdpError> {
        self.0.stats()
    }

    /// Admits packets from `lease` as coming from this session.
    pub fn insert_session(&mut self, lease: Ipv4Addr, info: SessionInfo) -> Result<(), XdpError> {
        let mut map = HashMap::<_, [u8; 4], SessionInfo>::try_from(self.0.map_mut(SESSIONS_MAP)?)
            .map_err(map_error(SESSIONS_MAP))?;
        map.insert(lease.octets(), info, 0)
            .map_err(map_error(SESSIONS_MAP))
    }

    /// Stops admitting packets from `lease`.
    pub fn remove_session(&mut self, lease: Ipv4Addr) -> Result<(), XdpError> {
        let mut map = HashMap::<_, [u8; 4], SessionInfo>::try_from(self.0.map_mut(SESSIONS_MAP)?)
            .map_err(map_error(SESSIONS_MAP))?;
        map.remove(&lease.octets()).map_err(map_error(SESSIONS_MAP))
    }

    /// Adds or replaces the route for `destination`.
    pub fn insert_route(
        &mut self,
        destination: Ipv4Net,
        route: RouteValue,
    ) -> Result<(), XdpError> {
        insert_lpm(self.0.map_mut(ROUTES_MAP)?, ROUTES_MAP, destination, route)
    }

    /// Adds or replaces the authorization entry for `destination` (one per network, as
    /// `policy::compile_authorization` produces them).
    pub fn insert_authorization(
        &mut self,
        destination: Ipv4Net,
        value: AuthzValue,
    ) -> Result<(), XdpError> {
        insert_lpm(self.0.map_mut(AUTHZ_MAP)?, AUTHZ_MAP, destination, value)
    }
}

fn insert_lpm<V: aya::Pod>(
    map: &mut aya::maps::Map,
    name: &'static str,
    destination: Ipv4Net,
    value: V,
) -> Result<(), XdpError> {
    let mut trie = LpmTrie::<&mut MapData, [u8; 4], V>::try_from(map).map_err(map_error(name))?;
    let net = destination.trunc();
    let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
    trie.insert(&key, value, 0).map_err(map_error(name))
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

/// A snapshot of a program's counters, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats<C: Counter> {
    values: Vec<u64>,
    _counter: PhantomData<C>,
}

pub type EdgeStats = Stats<EdgeStat>;
pub type InnerStats = Stats<InnerStat>;

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
