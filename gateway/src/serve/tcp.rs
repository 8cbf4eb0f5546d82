//! The TCP transport: one reader task (deframing the OpenVPN length prefix into
//! packets) and one writer task (framing what the session and the workers send) per
//! connection. Everything they carry goes through the driver as [`StreamEvent`]s; the
//! control plane opens a TCP session's data packets itself (see `docs/architecture.md`).
//!
//! Every connection is bounded: at most `endpoint.max_tcp_connections` in all and
//! `endpoint.max_tcp_connections_per_source` from one address (more are closed at
//! once), a complete first packet within [`FIRST_PACKET_WITHIN`], packets of at most
//! [`MAX_PACKET`] bytes, a writer queue of [`WRITER_QUEUE`] packets (a client that stops
//! reading loses packets rather than growing memory), and the driver closes the
//! connection when its session ends or its first packet starts none.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use gateway_proto::framing::{StreamDecoder, frame_header};
use tracing::warn;

/// Longest packet a TCP client may send: an OpenVPN packet on the default 1,500-byte
/// tunnel MTU is well under this, and UDP datagrams are bounded the same way.
pub const MAX_PACKET: usize = 4096;
/// A connection must deliver one whole packet this soon after it is accepted.
pub const FIRST_PACKET_WITHIN: Duration = Duration::from_secs(10);
/// Packets queued toward one client.
pub const WRITER_QUEUE: usize = 1024;
/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 4096;

/// Where the driver sends a connection's packets, and how it ends the connection.
#[derive(Debug)]
pub(super) struct Connection {
    pub writer: tokio::sync::mpsc::Sender<Vec<u8>>,
    /// Dropped (or sent) to close the connection: the reader stops at once, the writer
    /// once the packets already queued are written.
    close: tokio::sync::oneshot::Sender<()>,
}

impl Connection {
    /// Closes the connection (see [`Connection::close`]'s field).
    pub fn close(self) {
        let _ = self.close.send(());
    }
}

/// What the TCP connection tasks tell the serving task.
pub(super) enum StreamEvent {
    /// A client connected.
    Opened(SocketAddr, Connection),
    /// A packet deframed from a client's stream.
    Packet(SocketAddr, Vec<u8>),
    /// The connection ended (closed, reset, broken framing, or no packet in time).
    Closed(SocketAddr),
}

/// The connection limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub total: usize,
    pub per_source: usize,
}

/// Open connections, in all and by source address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Holds one connection's place in [`Open`] until dropped.
struct Place {
    open: Arc<Mutex<Open>>,
    source: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

/// Takes a place for a connection from `source`, or says which limit it hit.
fn take_place(
    open: &Arc<Mutex<Open>>,
    source: IpAddr,
    limits: Limits,
) -> Result<Place, &'static str> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    if o.total >= limits.total {
        return Err("endpoint.max_tcp_connections");
    }
    let from_source = o.by_source.entry(source).or_default();
    if *from_source >= limits.per_source {
        return Err("endpoint.max_tcp_connections_per_source");
    }
    *from_source += 1;
    o.total += 1;
    Ok(Place {
        open: open.clone(),
        source,
    })
}

/// At most one warning a second, saying how many were held back.
#[derive(Debug, Default)]
pub(super) struct Quiet {
    last: AtomicU64,
    held: AtomicU64,
}

impl Quiet {
    /// Calls `log` with the number held back since the last call that logged, unless
    /// one logged within the last second.
    pub fn warn(&self, log: impl FnOnce(u64)) {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last.swap(second, Ordering::Relaxed) == second {
            self.held.fetch_add(1, Ordering::Relaxed);
            return;
        }
        log(self.held.swap(0, Ordering::Relaxed));
    }
}

/// Accepts TCP clients within `limits`; each gets a reader task (deframing into
/// packets) and a writer task (framing what the session sends).
pub(super) async fn accept_streams(
    listener: tokio::net::TcpListener,
    events: tokio::sync::mpsc::Sender<StreamEvent>,
    limits: Limits,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let quiet = Arc::new(Quiet::default());
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                quiet.warn(|held| warn!(held, "accepting TCP: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let place = match take_place(&open, from.ip(), limits) {
            Ok(place) => place,
            Err(limit) => {
                // Dropping the stream closes it.
                quiet.warn(|held| warn!(%from, held, "TCP connection refused: {limit} reached"));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(WRITER_QUEUE);
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let connection = Connection {
            writer: out_tx,
            close: close_tx,
        };
        if events
            .send(StreamEvent::Opened(from, connection))
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(read(
            reader,
            from,
            events.clone(),
            close_rx,
            place,
            quiet.clone(),
        ));
        tokio::spawn(write(writer, out_rx));
    }
}

/// Reads packets from one connection until it ends, its framing breaks, its first
/// packet is late, or the driver closes it.
async fn read(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    from: SocketAddr,
    events: tokio::sync::mpsc::Sender<StreamEvent>,
    mut close: tokio::sync::oneshot::Receiver<()>,
    _place: Place,
    quiet: Arc<Quiet>,
) {
    use tokio::io::AsyncReadExt;
    let Ok(mut decoder) = StreamDecoder::new(MAX_PACKET) else {
        return;
    };
    let first_due = tokio::time::Instant::now() + FIRST_PACKET_WITHIN;
    let mut seen_packet = false;
    let mut buf = vec![0u8; READ_CHUNK];
    'read: loop {
        let n = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = tokio::time::sleep_until(first_due), if !seen_packet => {
                quiet.warn(|held| warn!(%from, held, "TCP connection closed: no packet within {FIRST_PACKET_WITHIN:?}"));
                break;
            }
            _ = &mut close => return,
        };
        let mut input = &buf[..n];
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(packet)) => {
                    seen_packet = true;
                    if events
                        .send(StreamEvent::Packet(from, packet.to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    quiet.warn(|held| warn!(%from, held, "TCP framing: {e}"));
                    break 'read;
                }
            }
        }
    }
    let _ = events.send(StreamEvent::Closed(from)).await;
}

/// Frames and writes what is queued for one connection, until every sender is gone.
async fn write(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut queue: tokio::sync::mpsc::Receiver<Vec<u8>>,
) {
    use tokio::io::AsyncWriteExt;
    while let Some(packet) = queue.recv().await {
        let Ok(header) = frame_header(packet.len()) else {
            continue;
        };
        if writer.write_all(&header).await.is_err() || writer.write_all(&packet).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_in_all_and_per_source_and_given_back() {
        let open = Arc::new(Mutex::new(Open::default()));
        let limits = Limits {
            total: 3,
            per_source: 2,
        };
        let a: IpAddr = "198.51.100.2".parse().unwrap();
        let b: IpAddr = "198.51.100.3".parse().unwrap();
        let first = take_place(&open, a, limits).unwrap();
        let _second = take_place(&open, a, limits).unwrap();
        assert_eq!(
            take_place(&open, a, limits).err(),
            Some("endpoint.max_tcp_connections_per_source")
        );
        let _third = take_place(&open, b, limits).unwrap();
        assert_eq!(
            take_place(&open, b, limits).err(),
            Some("endpoint.max_tcp_connections")
        );
        drop(first);
        assert!(take_place(&open, a, limits).is_ok(), "a place came back");
    }

    #[test]
    fn warnings_are_held_back_within_a_second() {
        let quiet = Quiet::default();
        let mut logged = Vec::new();
        for _ in 0..100 {
            quiet.warn(|held| logged.push(held));
        }
        assert!(logged.len() <= 2, "{logged:?}");
        assert_eq!(logged.first(), Some(&0));
    }
}
