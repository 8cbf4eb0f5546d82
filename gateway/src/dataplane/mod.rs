//! The data plane: worker threads, crypto, and the I/O backends. Landed so far: the TAP
//! device of socket mode.

pub mod tap;
