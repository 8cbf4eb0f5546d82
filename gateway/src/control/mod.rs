//! Control-plane support: the address pool, the TLS material loader and the CRL checks
//! (the sessions are `crate::serve::server`, the rule compiler `crate::policy`).

pub mod crl;
pub mod pool;
pub mod tls;
