//! The data plane: the pinned worker threads that carry established sessions' data
//! packets, their batched UDP I/O, their AF_XDP sockets (AF_XDP mode), and the TAP
//! device they use as the seam into the XDP policy programs.

pub mod batch;
pub mod tap;
pub mod worker;
pub mod xsk;
