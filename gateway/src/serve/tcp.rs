//! The TCP transport: one reader task (deframing the OpenVPN length prefix into
//! packets) and one writer task (framing what the session and the workers send) per
//! connection. Everything they carry goes through the driver as [`StreamEvent`]s; the
//! control plane opens a TCP session's data packets itself (see `docs/architecture.md`).

use std::{net::SocketAddr, time::Duration};

use gateway_proto::framing::{MAX_FRAME_LEN, StreamDecoder, frame_header};
use tracing::warn;

/// What the TCP connection tasks tell the serving task.
pub(super) enum StreamEvent {
    /// A client connected; packets for it go to this writer.
    Opened(SocketAddr, tokio::sync::mpsc::UnboundedSender<Vec<u8>>),
    /// A packet deframed from a client's stream.
    Packet(SocketAddr, Vec<u8>),
    /// The connection ended (closed, reset, or broken framing).
    Closed(SocketAddr),
}

/// Accepts TCP clients; each gets a reader task (deframing into packets) and a writer
/// task (framing what the session sends).
pub(super) async fn accept_streams(
    listener: tokio::net::TcpListener,
    events: tokio::sync::mpsc::Sender<StreamEvent>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("accepting TCP: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        if events
            .send(StreamEvent::Opened(from, out_tx))
            .await
            .is_err()
        {
            return;
        }
        let events = events.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let Ok(mut decoder) = StreamDecoder::new(MAX_FRAME_LEN) else {
                return;
            };
            let mut buf = vec![0u8; 65536];
            'read: loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut input = &buf[..n];
                loop {
                    match decoder.decode(&mut input) {
                        Ok(Some(packet)) => {
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
                            warn!(%from, "TCP framing: {e}");
                            break 'read;
                        }
                    }
                }
            }
            let _ = events.send(StreamEvent::Closed(from)).await;
        });
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Some(packet) = out_rx.recv().await {
                let Ok(header) = frame_header(packet.len()) else {
                    continue;
                };
                if writer.write_all(&header).await.is_err()
                    || writer.write_all(&packet).await.is_err()
                {
                    break;
                }
            }
        });
    }
}
