//! The admin API: `gateway serve` answers on a Unix socket (`admin.socket`, mode 0600)
//! and `gateway connections` / `gateway terminate` ask it. One JSON request per line,
//! one JSON response per line. What it offers follows AWS Client VPN's
//! DescribeClientVpnConnections and TerminateClientVpnConnections, plus the data
//! plane's mode and counters (`gateway dataplane`).

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;
/// How long a client waits for the gateway.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What an admin client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Active connections and those that ended in the last 60 minutes.
    Connections,
    /// Ends connections: one by id, or every connection of a user (at most 5, as AWS).
    Terminate(Selector),
    /// The data plane's mode, AF_XDP sockets and worker counters.
    Dataplane,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    ConnectionId(String),
    Username(String),
}

/// The gateway's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Connections { connections: Vec<Connection> },
    Terminated { statuses: Vec<TerminateStatus> },
    Dataplane(Box<DataplaneStatus>),
    Error { message: String },
}

/// How the data plane runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    /// "afxdp" when the workers have AF_XDP sockets, else "sockets".
    pub mode: String,
    pub workers: usize,
    pub af_xdp_sockets: Vec<XskSocket>,
    /// The workers' counters, summed.
    pub counters: crate::dataplane::counters::Totals,
    /// How translated packets leave through each target interface, and why.
    #[serde(default)]
    pub targets: Vec<crate::xdp::TargetSetup>,
    /// The XDP programs' counters (summed over CPUs), by program and name.
    #[serde(default)]
    pub xdp: XdpCounters,
}

/// The counters of `edge`, `inner` and `target`, and of redirects that failed in the
/// kernel after a program returned (`redirect`; empty where the kernel's BTF is
/// missing), every one by name (zeros included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpCounters {
    pub edge: std::collections::BTreeMap<String, u64>,
    pub inner: std::collections::BTreeMap<String, u64>,
    pub target: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub redirect: std::collections::BTreeMap<String, u64>,
}

/// One AF_XDP socket: which program steers into it, where, and which worker reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XskSocket {
    /// "edge" (public interface) or "target".
    pub role: String,
    pub ifindex: u32,
    pub queue: u32,
    pub worker: usize,
}

/// `gateway dataplane`'s text.
pub fn dataplane_text(status: &DataplaneStatus) -> String {
    let mut out = format!("mode {}\nworkers {}\n", status.mode, status.workers);
    for s in &status.af_xdp_sockets {
        out += &format!(
            "af_xdp {} ifindex {} queue {} worker {}\n",
            s.role, s.ifindex, s.queue, s.worker
        );
    }
    for t in &status.targets {
        let path = match t.forwarding {
            crate::xdp::Forwarding::XdpRedirect => "xdp-redirect",
            crate::xdp::Forwarding::Kernel => "kernel",
        };
        out += &format!(
            "target {} ifindex {} driver {} xdp {} forwarding {path} ({})\n",
            t.interface, t.ifindex, t.driver, t.xdp_mode, t.reason
        );
    }
    let value = serde_json::to_value(status.counters).unwrap_or_default();
    if let Some(counters) = value.as_object() {
        for (name, n) in counters {
            out += &format!("{name} {n}\n");
        }
    }
    for (program, counters) in [
        ("edge", &status.xdp.edge),
        ("inner", &status.xdp.inner),
        ("target", &status.xdp.target),
        ("redirect", &status.xdp.redirect),
    ] {
        let shown: Vec<String> = counters
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(name, n)| format!("{name}={n}"))
            .collect();
        if !shown.is_empty() {
            out += &format!("xdp {program} {}\n", shown.join(" "));
        }
    }
    out
}

/// One connection, with AWS's DescribeClientVpnConnections fields in snake case.
/// Ingress is from the client into the gateway, egress from the gateway to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: String,
    /// The certificate common name (mutual-certificate authentication has no other).
    pub username: String,
    pub common_name: String,
    /// The leased address in the client CIDR.
    pub client_ip: Option<Ipv4Addr>,
    /// Where the client connects from.
    pub remote: SocketAddr,
    pub transport: String,
    /// Unix seconds.
    pub connection_established_time: Option<u64>,
    pub connection_end_time: Option<u64>,
    pub ingress_bytes: u64,
    pub egress_bytes: u64,
    pub ingress_packets: u64,
    pub egress_packets: u64,
    /// `active`, `terminating` or `terminated`.
    pub status: String,
    pub status_message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateStatus {
    pub connection_id: String,
    pub previous_status: String,
    pub current_status: String,
}

/// Binds the admin socket at `path`: the directory is created, a stale socket file is
/// replaced (a live one — another gateway answering — is an error, and so is anything
/// at the path that is not a socket: a configuration mistake must not delete a file),
/// and the socket is made readable and writable by its owner only.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for the admin socket", dir.display()))?;
    }
    if let Ok(existing) = std::fs::symlink_metadata(path) {
        if !existing.file_type().is_socket() {
            bail!(
                "admin.socket {}: something that is not a socket is there; not replacing it",
                path.display()
            );
        }
        if UnixStream::connect(path).is_ok() {
            bail!(
                "admin.socket {}: another gateway is answering there",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale admin socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding the admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

/// Which file the socket at `path` is, to recognise our own later: device, inode and
/// change time (an inode number is soon reused once a file is removed).
pub fn socket_identity(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

/// Removes the admin socket at `path` if it is still the one we bound (`ours`, from
/// [`socket_identity`] right after [`bind`]); a socket another gateway has bound there
/// since, or any other file, stays.
pub fn remove_if_ours(path: &Path, ours: Option<(u64, u64, i64, i64)>) {
    if ours.is_some() && socket_identity(path) == ours {
        let _ = std::fs::remove_file(path);
    }
}

/// Serves admin clients on `listener`: each request goes to `requests` with a channel
/// for the answer. Runs until the control plane stops taking requests.
pub async fn serve(
    listener: tokio::net::UnixListener,
    requests: tokio::sync::mpsc::Sender<(Request, tokio::sync::oneshot::Sender<Response>)>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
            let (reader, mut writer) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(reader.take(MAX_REQUEST as u64));
            let response =
                match tokio::time::timeout(CALL_TIMEOUT, reader.read_line(&mut line)).await {
                    Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
                        Ok(request) => {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            if requests.send((request, tx)).await.is_err() {
                                return;
                            }
                            rx.await.unwrap_or(Response::Error {
                                message: "the gateway is shutting down".into(),
                            })
                        }
                        Err(e) => Response::Error {
                            message: format!("bad request: {e}"),
                        },
                    },
                    _ => return,
                };
            if let Ok(mut text) = serde_json::to_string(&response) {
                text.push('\n');
                let _ = writer.write_all(text.as_bytes()).await;
            }
        });
    }
}

/// Asks the gateway answering at `path`.
pub fn call(path: &Path, request: &Request) -> Result<Response> {
    let mut stream = UnixStream::connect(path).with_context(|| {
        format!(
            "connecting to the admin socket {} (is `gateway serve` running with this config?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("reading the gateway's answer")?;
    serde_json::from_str(line.trim()).with_context(|| format!("the gateway answered {line:?}"))
}

/// Connections as a table for people.
/// `text` with control characters (terminal escapes, newlines) escaped, for a
/// terminal: names come from certificates, which a CA may have filled with anything.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub fn connections_table(connections: &[Connection]) -> String {
    let mut out = format!(
        "{:<33} {:<16} {:<15} {:<22} {:<5} {:<11} {:>12} {:>12}\n",
        "CONNECTION", "USERNAME", "CLIENT IP", "REMOTE", "PROTO", "STATUS", "INGRESS B", "EGRESS B"
    );
    for c in connections {
        out.push_str(&format!(
            "{:<33} {:<16} {:<15} {:<22} {:<5} {:<11} {:>12} {:>12}\n",
            printable(&c.connection_id),
            printable(&c.username),
            c.client_ip.map_or_else(|| "-".into(), |ip| ip.to_string()),
            c.remote.to_string(),
            c.transport,
            c.status,
            c.ingress_bytes,
            c.egress_bytes,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_stale_socket_is_ever_removed() {
        let dir = std::env::temp_dir().join(format!("gw-admin-own-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A file that is not a socket (a mistyped admin.socket) is left alone.
        let config = dir.join("gateway.toml");
        std::fs::write(&config, "[endpoint]").unwrap();
        let refused = runtime.block_on(async { bind(&config) }).unwrap_err();
        assert!(refused.to_string().contains("not a socket"), "{refused}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "[endpoint]");
        // Our socket goes at shutdown; one bound in its place since stays.
        let path = dir.join("admin.sock");
        let first = runtime.block_on(async { bind(&path) }).unwrap();
        let ours = socket_identity(&path);
        drop(first);
        // Past a coarse clock tick, as another gateway starting later would be.
        std::thread::sleep(Duration::from_millis(20));
        let second = runtime.block_on(async { bind(&path) }).unwrap();
        remove_if_ours(&path, ours);
        assert!(path.exists(), "removed a socket that is not ours");
        remove_if_ours(&path, socket_identity(&path));
        assert!(!path.exists());
        drop(second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_from_certificates_reach_the_terminal_escaped() {
        assert_eq!(printable("alice"), "alice");
        assert_eq!(printable("é ünïcode"), "é ünïcode");
        assert_eq!(printable("\u{1b}[2Jroot\nok"), "\\u{1b}[2Jroot\\nok");
        let connection = Connection {
            connection_id: "cvpn-connection-0123456789abcdef0".into(),
            username: "mallory\u{1b}]0;owned\u{7}".into(),
            common_name: String::new(),
            client_ip: None,
            remote: "198.51.100.2:4000".parse().unwrap(),
            transport: "udp".into(),
            connection_established_time: None,
            connection_end_time: None,
            ingress_bytes: 0,
            egress_bytes: 0,
            ingress_packets: 0,
            egress_packets: 0,
            status: "active".into(),
            status_message: String::new(),
        };
        let table = connections_table(&[connection]);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert_eq!(table.lines().count(), 2);
        assert!(table.contains("mallory\\u{1b}]0;owned\\u{7}"), "{table}");
    }

    #[test]
    fn requests_and_responses_have_a_stable_json_form() {
        let terminate = Request::Terminate(Selector::Username("alice".into()));
        let text = serde_json::to_string(&terminate).unwrap();
        assert_eq!(text, r#"{"command":"terminate","username":"alice"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), terminate);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"connections"}"#).unwrap(),
            Request::Connections
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"dataplane"}"#).unwrap(),
            Request::Dataplane
        );
        let status = Response::Dataplane(Box::new(DataplaneStatus {
            mode: "afxdp".into(),
            workers: 2,
            af_xdp_sockets: vec![XskSocket {
                role: "edge".into(),
                ifindex: 7,
                queue: 0,
                worker: 0,
            }],
            counters: crate::dataplane::counters::Totals::from_pairs(&[(
                crate::dataplane::counters::Counter::XskEdgeFrames,
                42,
            )]),
            targets: vec![crate::xdp::TargetSetup {
                interface: "eth1".into(),
                ifindex: 3,
                driver: "veth".into(),
                xdp_mode: "native".into(),
                forwarding: crate::xdp::Forwarding::Kernel,
                reason: "because".into(),
            }],
            xdp: XdpCounters {
                target: [("partial_checksum".to_string(), 5), ("miss".to_string(), 0)].into(),
                ..Default::default()
            },
        }));
        let text = serde_json::to_string(&status).unwrap();
        assert!(
            text.starts_with(r#"{"result":"dataplane","mode":"afxdp","workers":2,"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), status);
        let Response::Dataplane(status) = status else {
            unreachable!()
        };
        let shown = dataplane_text(&status);
        assert!(
            shown.starts_with("mode afxdp\nworkers 2\naf_xdp edge ifindex 7 queue 0 worker 0\n"),
            "{shown}"
        );
        assert!(shown.contains("\nxsk_edge_frames 42\n"), "{shown}");
        assert!(
            shown.contains(
                "\ntarget eth1 ifindex 3 driver veth xdp native forwarding kernel (because)\n"
            ),
            "{shown}"
        );
        assert!(
            shown.ends_with("\nxdp target partial_checksum=5\n"),
            "{shown}"
        );
        let error = Response::Error {
            message: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"result":"error","message":"x"}"#
        );
    }

    #[test]
    fn a_request_round_trips_over_the_socket_and_a_live_socket_is_not_stolen() {
        let dir = std::env::temp_dir().join(format!("gw-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/admin.sock");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let listener = runtime.block_on(async { bind(&path) }).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        runtime.spawn(serve(listener, tx));
        runtime.spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let _ = reply.send(match request {
                    Request::Connections => Response::Connections {
                        connections: Vec::new(),
                    },
                    Request::Terminate(_) => Response::Error {
                        message: "no such connection".into(),
                    },
                    Request::Dataplane => Response::Error {
                        message: "not asked here".into(),
                    },
                });
            }
        });
        let client = {
            let path = path.clone();
            std::thread::spawn(move || {
                (
                    call(&path, &Request::Connections).unwrap(),
                    call(
                        &path,
                        &Request::Terminate(Selector::ConnectionId("cvpn-connection-x".into())),
                    )
                    .unwrap(),
                )
            })
        };
        let (listed, refused) = runtime.block_on(async {
            loop {
                if client.is_finished() {
                    break client.join().unwrap();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert_eq!(
            listed,
            Response::Connections {
                connections: Vec::new()
            }
        );
        assert!(matches!(refused, Response::Error { .. }));
        // A second gateway with the same socket path is refused while the first answers.
        let second = runtime.block_on(async { bind(&path) });
        assert!(second.is_err(), "a live admin socket was replaced");
        drop(runtime);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
