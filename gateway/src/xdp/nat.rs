//! The NAT table's upkeep from user space: listing it, ending a client's flows, and
//! sweeping mappings that idled past their timeout.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use gateway_ebpf_common::{FlowKey, NatIn, NatOut};

use super::{Policy, XdpError};
use crate::nat::NatTimeouts;

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

/// The client flow (`NAT_OUT` key) whose replies arrive as `reply` and go back to `back`.
fn forward_key(reply: &FlowKey, back: &NatIn) -> FlowKey {
    FlowKey {
        src_addr: back.client_addr,
        dst_addr: reply.src_addr,
        src_port: back.client_port,
        dst_port: reply.src_port,
        protocol: reply.protocol,
        _pad: [0; 3],
    }
}

impl Policy {
    /// Every NAT mapping, as (client flow, translation).
    pub fn nat_mappings(&self) -> Result<Vec<(FlowKey, NatOut)>, XdpError> {
        self.maps.nat_out.entries()
    }

    /// Every reverse NAT entry, as (reply flow at the target ENI, client end).
    pub fn nat_reverse(&self) -> Result<Vec<(FlowKey, NatIn)>, XdpError> {
        self.maps.nat_in.entries()
    }

    /// Claims a reverse NAT entry directly (tests and the NAT sweeper's repairs).
    pub fn insert_nat_reverse(&mut self, reply: FlowKey, client: NatIn) -> Result<(), XdpError> {
        self.maps.nat_in.insert(reply, client)
    }

    /// Removes every NAT mapping of the client `lease` in both directions; returns how
    /// many flows were removed.
    pub(super) fn remove_flows_of(&mut self, lease: Ipv4Addr) -> Result<usize, XdpError> {
        let client = lease.octets();
        let flows: Vec<(FlowKey, NatIn)> = self
            .nat_reverse()?
            .into_iter()
            .filter(|(_, back)| back.client_addr == client)
            .collect();
        for (reply, back) in &flows {
            self.maps.nat_in.remove_if_present(reply)?;
            self.maps
                .nat_out
                .remove_if_present(&forward_key(reply, back))?;
        }
        Ok(flows.len())
    }

    /// Removes NAT mappings idle for longer than their timeout at `now_ns` (on the
    /// `nat::monotonic_now_ns` clock), both directions together, and forward entries
    /// whose reverse is gone (replies could not return through them; the next packet
    /// makes a fresh pair). A flow refreshed between the read and the removal may be cut;
    /// its next packet maps it again.
    pub fn sweep_nat(&mut self, now_ns: u64, timeouts: &NatTimeouts) -> Result<NatSweep, XdpError> {
        let reverse = self.nat_reverse()?;
        let forward: HashMap<FlowKey, NatOut> = self.nat_mappings()?.into_iter().collect();
        let mut sweep = NatSweep::default();
        let mut paired = HashSet::new();
        for (reply, back) in &reverse {
            let out_key = forward_key(reply, back);
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
            self.maps.nat_in.remove_if_present(reply)?;
            if out.is_some() {
                self.maps.nat_out.remove_if_present(&out_key)?;
            }
            sweep.expired += 1;
        }
        for key in forward.keys().filter(|k| !paired.contains(*k)) {
            self.maps.nat_out.remove_if_present(key)?;
            sweep.orphans += 1;
        }
        Ok(sweep)
    }
}
