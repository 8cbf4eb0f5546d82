//! The control plane: listeners, sessions, authentication, the address pool and the
//! policy compiler. Landed so far: the address pool, the rule compiler and the TLS
//! material loader.

pub mod pool;
pub mod rules;
pub mod tls;
