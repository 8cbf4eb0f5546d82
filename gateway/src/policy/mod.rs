//! The policy compiler: the configuration's groups, routes, authorization rules and
//! client network, compiled into what the XDP maps hold (`compile`), which
//! `xdp::Policy::apply` and `xdp::Policy::replace_rules` write.
//!
//! - `authorization`: rules to one LPM entry per network, with AWS Client VPN's
//!   semantics.
//! - `compile`: the whole configuration to typed map contents; routes and rules merged
//!   into the entries of the one `POLICY` trie `inner` looks up.

mod authorization;
mod compile;

use gateway_ebpf_common::{GroupSet, MAX_GROUPS};
use ipnet::Ipv4Net;

pub use self::{
    authorization::{compile_authorization, lookup},
    compile::{
        ClientNetwork, CompileError, Compiled, CompiledRules, Target, compile, compile_rules,
        merge_policy,
    },
};

/// A group number assigned by the control plane (`0..MAX_GROUPS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(u16);

impl GroupId {
    /// `None` when `n` is at or above [`MAX_GROUPS`].
    pub fn new(n: u16) -> Option<Self> {
        (usize::from(n) < MAX_GROUPS).then_some(Self(n))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

/// Who an authorization rule admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    AllUsers,
    Group(GroupId),
}

/// An authorization rule: destination network and who may reach it. Rules only grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthorizationRule {
    pub destination: Ipv4Net,
    pub access: Access,
}

/// The groups of a session as the bitmap the XDP programs test.
pub fn group_set(groups: &[GroupId]) -> GroupSet {
    let mut set = GroupSet::default();
    for g in groups {
        set.insert(g.get());
    }
    set
}
