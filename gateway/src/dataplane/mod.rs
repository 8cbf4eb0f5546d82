//! The data plane: the pinned worker threads that carry established sessions' data
//! packets, their batched UDP I/O, their AF_XDP sockets (AF_XDP mode), and the TAP
//! device they use as the seam into the XDP policy programs.
//!
//! - `carry`: what a worker decides about each packet (pure: bytes in, verdict out);
//! - `worker`: spawning, pinning, stopping, the poll loop;
//! - `backend`, `socket`, `afxdp`: the packet sources behind one trait, and what they
//!   send through;
//! - `batch` (`recvmmsg`/`sendmmsg` with GRO/GSO), `tap`, `xsk`: the system interfaces;
//! - `counters`, `activity`, `frame`: the counters, a session's traffic record, and the
//!   header fields the workers read.

pub mod activity;
pub mod afxdp;
pub mod backend;
pub mod batch;
pub mod carry;
pub mod counters;
pub mod frame;
pub mod socket;
pub mod tap;
pub mod worker;
pub mod xsk;
