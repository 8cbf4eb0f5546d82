//! What a worker's I/O backends share: the [`Source`] trait each kind of packet source
//! implements (`socket`: the UDP socket and the TAP queue; `afxdp`: AF_XDP sockets), and
//! the [`Io`] every source sends through — the worker's UDP socket with its send batch,
//! its TAP queue, and the report channel to the control plane.

use std::{io, os::fd::RawFd, sync::Arc, time::Instant};

use tracing::warn;

use super::{
    batch::Batch,
    carry::{Carrier, Inbound, Outbound, Report},
    counters::Counter,
    tap::Tap,
};

/// Datagrams or frames handled per batch.
pub const BATCH: usize = 32;

/// A packet source a worker polls.
pub trait Source: Send {
    /// The descriptor that becomes readable when there is something to read.
    fn fd(&self) -> RawFd;

    /// Reads and handles one batch; true if there may be more to read.
    fn batch(&mut self, carrier: &mut Carrier, io: &mut Io, now: Instant) -> bool;

    /// What the kernel dropped on the way in, for a source it counts for.
    fn kernel_drops(&self) -> Option<u64> {
        None
    }
}

/// The worker's outputs.
pub struct Io {
    /// The worker's index, which is also its TAP queue.
    pub queue: usize,
    pub tap: Arc<Tap>,
    /// The worker's UDP socket on the listen port (none: TCP only).
    pub udp: Option<mio::net::UdpSocket>,
    /// Sealed datagrams waiting for [`Io::flush`].
    pub tx: Batch,
    /// UDP GSO for runs of datagrams to one client (off once the kernel refuses it).
    pub gso: bool,
    pub reports: tokio::sync::mpsc::Sender<Report>,
}

impl Io {
    /// Carries out what the carrier decided about a datagram in `packet`.
    pub fn inbound(&self, carrier: &Carrier, packet: &[u8], verdict: Inbound) {
        if let Inbound::ToSeam(frame) = verdict
            && self.tap.write_frame(self.queue, &packet[frame]).is_err()
        {
            carrier.count(Counter::SendErrors, 1);
        }
    }

    /// Carries out what the carrier decided about the packet it sealed in the next free
    /// send slot: queued for the UDP socket, or handed to the TCP connection's writer.
    pub fn outbound(&mut self, carrier: &Carrier, verdict: Outbound) {
        match verdict {
            Outbound::Udp { to, len } => {
                self.tx.push(to, 0, len);
            }
            Outbound::Stream { writer, len } => {
                let sent = self
                    .tx
                    .next_free()
                    .is_some_and(|slot| writer.try_send(slot[..len].to_vec()).is_ok());
                if !sent {
                    carrier.count(Counter::SendErrors, 1);
                }
            }
            Outbound::Discarded(_) => {}
        }
    }

    /// Sends what the send batch holds and empties it.
    pub fn flush(&mut self, carrier: &Carrier) {
        if !self.tx.is_empty()
            && let Some(udp) = &self.udp
        {
            let queued = self.tx.len();
            let sent = self
                .tx
                .send(std::os::fd::AsRawFd::as_raw_fd(udp), &mut self.gso);
            carrier.count(Counter::SendErrors, (queued - sent.datagrams) as u64);
            carrier.count(Counter::GsoSends, sent.gso_runs as u64);
        }
        self.tx.clear();
    }

    /// Passes the carrier's reports to the control plane; never waits: a full channel
    /// drops the report and counts it.
    pub fn report(&self, carrier: &mut Carrier) {
        let mut dropped = 0;
        for report in carrier.drain_reports() {
            if self.reports.try_send(report).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            carrier.count(Counter::ReportOverflow, dropped);
        }
    }
}

/// Whether a source may have more to read after a read failed with `e` (only after an
/// interruption); anything but an empty source is logged.
pub fn read_error(e: &io::Error, worker: usize, what: &str) -> bool {
    match e.kind() {
        io::ErrorKind::WouldBlock => false,
        io::ErrorKind::Interrupted => true,
        _ => {
            warn!(worker, "{what}: {e}");
            false
        }
    }
}
