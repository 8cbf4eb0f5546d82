//! The gateway: configuration, control plane, data plane, XDP loader and admin.
//! Landed so far: the XDP loader and the authorization-rule compiler.

pub mod policy;
pub mod xdp;
