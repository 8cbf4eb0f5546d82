//! The gateway: configuration, control plane, data plane, XDP loader and admin.
//! This first stage holds the XDP loader; the other parts land with their issues.

pub mod xdp;
