//! Test support shared by the end-to-end tests, the benchmarks and `xtask`: the
//! network-namespace lab, the gateway's lab configuration, the XDP fixture harness, the
//! privilege check, and the stock OpenVPN server as a peer.

pub mod config;
pub mod lab;
pub mod openvpn;
pub mod privilege;
pub mod xdp;
