//! Test support shared by the end-to-end tests, the benchmarks and `xtask`: the
//! network-namespace lab, the XDP fixture harness, and the privilege check.

pub mod lab;
pub mod privilege;
pub mod xdp;
