//! The gateway: configuration, control plane, data plane, XDP loader and admin.
//! Landed so far: the XDP loader, the authorization-rule compiler and the NAT expiry policy.

pub mod nat;
pub mod policy;
pub mod xdp;
