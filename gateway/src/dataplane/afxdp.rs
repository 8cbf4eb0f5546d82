//! AF_XDP mode's sources: a worker's AF_XDP sockets ([`Xsk`]) on rx queues of the public
//! interface, into which `edge` steers data packets (no UDP socket, no kernel UDP stack),
//! and of the target interfaces, into which `target` steers translated replies with the
//! session's peer-id in the XDP metadata (no TAP read). Replies still leave through the
//! worker's UDP socket; packets on queues without a socket take the socket path.

use std::{io, os::fd::AsRawFd, os::fd::RawFd, time::Instant};

use gateway_ebpf_common::XSK_META_MAGIC;

use super::{
    backend::{BATCH, Io, Source},
    carry::Carrier,
    counters::Counter,
    frame,
    xsk::Xsk,
};

/// The interfaces of AF_XDP mode, by ifindex (in the calling thread's namespace).
#[derive(Debug, Clone, Default)]
pub struct AfXdp {
    /// Where `edge` runs (the public interface), if UDP is served.
    pub edge: Option<u32>,
    /// Where `target` runs.
    pub targets: Vec<u32>,
}

/// Which program steers into an AF_XDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XskRole {
    Edge,
    Target,
}

impl XskRole {
    /// As `gateway dataplane` shows it.
    pub fn name(self) -> &'static str {
        match self {
            XskRole::Edge => "edge",
            XskRole::Target => "target",
        }
    }
}

/// An AF_XDP socket a worker owns, for the XSKMAP entries that steer into it.
#[derive(Debug)]
pub struct XskBinding {
    pub role: XskRole,
    pub ifindex: u32,
    pub queue: u32,
    pub worker: usize,
    /// A duplicate of the socket's descriptor, to put into the map.
    pub fd: std::os::fd::OwnedFd,
}

/// One AF_XDP socket as a worker's source.
pub struct XskSource {
    role: XskRole,
    xsk: Xsk,
}

/// Binds the AF_XDP sockets of AF_XDP mode: worker i takes rx queues i, i + count,
/// i + 2·count… of each interface, for as many queues as the interface has (a bind
/// beyond the last fails with `EINVAL`). Returns each worker's sources, and records
/// each socket in `bindings`. Every interface must take at least its queue 0.
pub fn bind(
    afxdp: Option<&AfXdp>,
    count: usize,
    bindings: &mut Vec<XskBinding>,
) -> io::Result<Vec<Vec<XskSource>>> {
    let mut owned: Vec<Vec<XskSource>> = (0..count).map(|_| Vec::new()).collect();
    let Some(afxdp) = afxdp else {
        return Ok(owned);
    };
    let interfaces = afxdp
        .edge
        .iter()
        .map(|&i| (XskRole::Edge, i))
        .chain(afxdp.targets.iter().map(|&i| (XskRole::Target, i)));
    for (role, ifindex) in interfaces {
        for queue in 0..gateway_ebpf_common::MAX_XSK_QUEUES {
            let xsk = match Xsk::bind(ifindex, queue) {
                Ok(xsk) => xsk,
                Err(e) if queue > 0 && e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("AF_XDP socket on interface {ifindex} queue {queue}: {e}"),
                    ));
                }
            };
            let worker = queue as usize % count.max(1);
            bindings.push(XskBinding {
                role,
                ifindex,
                queue,
                worker,
                fd: std::os::fd::AsFd::as_fd(&xsk).try_clone_to_owned()?,
            });
            owned[worker].push(XskSource { role, xsk });
        }
    }
    Ok(owned)
}

impl Source for XskSource {
    fn fd(&self) -> RawFd {
        self.xsk.as_raw_fd()
    }

    fn batch(&mut self, carrier: &mut Carrier, io: &mut Io, now: Instant) -> bool {
        let n = match self.role {
            XskRole::Edge => self.xsk.receive(BATCH, |chunk, start, len| {
                let frame = &mut chunk[start..start + len];
                let verdict = carrier.edge_frame(frame, now);
                io.inbound(carrier, frame, verdict);
            }),
            XskRole::Target => self.xsk.receive(BATCH, |chunk, start, len| {
                let peer_id = frame::xsk_meta(chunk, start)
                    .filter(|meta| meta.magic == XSK_META_MAGIC)
                    .map(|meta| meta.peer_id);
                let Some(slot) = io.tx.next_free() else {
                    return;
                };
                let verdict = carrier.steered_frame(slot, &chunk[start..start + len], peer_id, now);
                io.outbound(carrier, verdict);
            }),
        };
        match self.role {
            XskRole::Edge => carrier.count(Counter::XskEdgeFrames, n as u64),
            XskRole::Target => {
                carrier.count(Counter::XskTargetFrames, n as u64);
                io.flush(carrier);
            }
        }
        n == BATCH
    }

    fn kernel_drops(&self) -> Option<u64> {
        let stats = self.xsk.stats().ok()?;
        Some(stats.rx_dropped + stats.rx_ring_full)
    }
}
