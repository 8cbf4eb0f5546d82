//! The gateway: configuration, control plane, data plane, XDP loader and admin.
//! Landed so far: configuration, the XDP loader, the policy compiler and the
//! NAT expiry policy.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod admin;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod export;
pub mod nat;
pub mod net;
pub mod pki;
pub mod policy;
pub mod serve;
pub mod xdp;
