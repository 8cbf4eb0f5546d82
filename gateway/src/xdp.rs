//! Loading the XDP programs built from `gateway-ebpf`, attaching them to interfaces, and
//! reading their counters.

use std::fmt;

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use gateway_ebpf_common::{EDGE_PROGRAM, EDGE_STATS_MAP, EdgeStat};

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

/// The `edge` program (public ENI), loaded into the kernel, with its counters.
///
/// Dropping it detaches the program from every interface it was attached to.
pub struct Edge {
    ebpf: Ebpf,
}

impl Edge {
    /// Loads the object and verifies the `edge` program.
    pub fn load() -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| XdpError::Object(Box::new(e)))?;
        let program = program_mut(&mut ebpf, EDGE_PROGRAM)?;
        program.load().map_err(|source| XdpError::Program {
            name: EDGE_PROGRAM,
            source: Box::new(source),
        })?;
        Ok(Self { ebpf })
    }

    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(EDGE_PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("checked in Edge::load")
    }

    /// Attaches to `interface` (resolved in the calling thread's network namespace).
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<XdpLinkId, XdpError> {
        let program = program_mut(&mut self.ebpf, EDGE_PROGRAM)?;
        program
            .attach(interface, mode.into())
            .map_err(|source| XdpError::Attach {
                name: EDGE_PROGRAM,
                interface: interface.to_string(),
                mode: mode.into(),
                source: Box::new(source),
            })
    }

    /// Counters summed over all CPUs.
    pub fn stats(&self) -> Result<EdgeStats, XdpError> {
        let map_err = |source| XdpError::Map {
            name: EDGE_STATS_MAP,
            source: Box::new(source),
        };
        let map = self.ebpf.map(EDGE_STATS_MAP).ok_or(XdpError::Map {
            name: EDGE_STATS_MAP,
            source: Box::new(aya::maps::MapError::InvalidName {
                name: EDGE_STATS_MAP.into(),
            }),
        })?;
        let array = PerCpuArray::<_, u64>::try_from(map).map_err(map_err)?;
        let mut stats = EdgeStats::default();
        for stat in EdgeStat::ALL {
            let per_cpu = array.get(&(stat as u32), 0).map_err(map_err)?;
            stats.0[stat as usize] = per_cpu.iter().sum();
        }
        Ok(stats)
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

/// A snapshot of the `edge` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EdgeStats([u64; EdgeStat::COUNT as usize]);

impl EdgeStats {
    pub fn get(&self, stat: EdgeStat) -> u64 {
        self.0[stat as usize]
    }

    /// Counter by counter difference `self - earlier` (counters only grow).
    pub fn since(&self, earlier: &EdgeStats) -> EdgeStats {
        let mut d = EdgeStats::default();
        for (i, v) in d.0.iter_mut().enumerate() {
            *v = self.0[i].saturating_sub(earlier.0[i]);
        }
        d
    }
}

impl fmt::Display for EdgeStats {
    /// `name=value` pairs of the non-zero counters, in index order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for stat in EdgeStat::ALL {
            let v = self.get(stat);
            if v == 0 {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{}={v}", stat.name())?;
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
        a.0[EdgeStat::Pass as usize] = 5;
        a.0[EdgeStat::Udp as usize] = 3;
        let mut b = a;
        b.0[EdgeStat::Pass as usize] = 9;
        assert_eq!(b.to_string(), "pass=9 udp=3");
        assert_eq!(b.since(&a).to_string(), "pass=4");
    }
}
