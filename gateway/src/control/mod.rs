//! The control plane: listeners, sessions, authentication and the address pool. Landed
//! so far: the address pool and the TLS material loader (the rule compiler is
//! `crate::policy`).

pub mod pool;
pub mod tls;
