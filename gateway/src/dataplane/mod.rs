//! The data plane (socket mode): the pinned worker threads that carry established
//! sessions' data packets, their batched UDP I/O, and the TAP device they use as the
//! seam into the XDP policy programs.

pub mod batch;
pub mod tap;
pub mod worker;
