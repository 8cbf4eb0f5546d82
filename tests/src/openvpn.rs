//! The stock OpenVPN 2.6 server as a peer: the interop tests and the `iperf` benchmark
//! start it the same way, differing only in a few options.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};

use crate::lab::{Lab, Netns, ProcessId, read_log, wait_until};

/// The files a stock server needs, as `gateway pki init` writes them.
pub struct ServerFiles<'a> {
    pub ca_cert: &'a Path,
    pub server_cert: &'a Path,
    pub server_key: &'a Path,
    pub tls_crypt_key: &'a Path,
}

/// The tunnel network of [`spawn_stock_server`]: 10.8.0.0/24.
pub const TUNNEL_NETMASK: &str = "255.255.255.0";

/// Starts `openvpn` as a UDP server in `ns` on `local`:1194 with the tunnel network
/// 10.8.0.0/24 (topology subnet, the server at 10.8.0.1), tls-crypt and no DH, plus
/// `extra` options, logging to `log`. Returns once the server reports
/// "Initialization Sequence Completed"; the error carries the log otherwise.
pub fn spawn_stock_server(
    lab: &mut Lab,
    ns: &Netns,
    files: &ServerFiles,
    local: &str,
    extra: &[&str],
    log: &Path,
) -> Result<ProcessId> {
    spawn_stock_server_with_netmask(lab, ns, files, local, TUNNEL_NETMASK, extra, log)
}

/// As [`spawn_stock_server`], with the tunnel network 10.8.0.0 under `netmask` (a
/// bigger address pool for many clients, e.g. 255.255.0.0).
pub fn spawn_stock_server_with_netmask(
    lab: &mut Lab,
    ns: &Netns,
    files: &ServerFiles,
    local: &str,
    netmask: &str,
    extra: &[&str],
    log: &Path,
) -> Result<ProcessId> {
    let mut args = vec![
        "openvpn",
        "--dev",
        "tun",
        "--server",
        "10.8.0.0",
        netmask,
        "--topology",
        "subnet",
        "--proto",
        "udp",
        "--local",
        local,
        "--port",
        "1194",
        "--ca",
        path(files.ca_cert)?,
        "--cert",
        path(files.server_cert)?,
        "--key",
        path(files.server_key)?,
        "--dh",
        "none",
        "--tls-crypt",
        path(files.tls_crypt_key)?,
        "--verb",
        "3",
    ];
    args.extend_from_slice(extra);
    let pid = lab.spawn(ns, &args, Some(log))?;
    wait_until("the stock server to start", Duration::from_secs(10), || {
        read_log(log).contains("Initialization Sequence Completed")
    })
    .with_context(|| format!("stock server log:\n{}", read_log(log)))?;
    Ok(pid)
}

fn path(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}
