//! The programs' counters: each program's per-CPU counter array, summed over CPUs.

use std::{fmt, marker::PhantomData};

use gateway_ebpf_common::{
    EDGE_STATS_MAP, EdgeStat, INNER_STATS_MAP, InnerStat, REDIRECT_STATS_MAP, RedirectStat,
    TARGET_STATS_MAP, TargetStat,
};

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

impl Counter for RedirectStat {
    const MAP: &'static str = REDIRECT_STATS_MAP;
    const ALL: &'static [Self] = &RedirectStat::ALL;
    fn name(self) -> &'static str {
        RedirectStat::name(self)
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
pub type RedirectStats = Stats<RedirectStat>;

impl<C: Counter> Default for Stats<C> {
    fn default() -> Self {
        Self {
            values: vec![0; C::ALL.len()],
            _counter: PhantomData,
        }
    }
}

impl<C: Counter> Stats<C> {
    /// Counter values in index order (as many as `C::ALL`).
    pub(super) fn from_values(values: Vec<u64>) -> Self {
        Self {
            values,
            _counter: PhantomData,
        }
    }

    pub fn get(&self, counter: C) -> u64 {
        C::ALL
            .iter()
            .position(|c| *c == counter)
            .map_or(0, |i| self.values[i])
    }

    /// Every counter by name, zeros included.
    pub fn by_name(&self) -> std::collections::BTreeMap<String, u64> {
        C::ALL
            .iter()
            .zip(&self.values)
            .map(|(c, v)| (c.name().to_string(), *v))
            .collect()
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
