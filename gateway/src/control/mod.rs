//! The control plane: listeners, sessions, authentication, the address pool and the
//! policy compiler. Landed so far: the address pool.

pub mod pool;
