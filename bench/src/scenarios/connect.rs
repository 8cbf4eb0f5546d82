//! The connect scenarios: `handshakes` (connect storms: sessions per second, handshake
//! times, failures) and `sessions` (resident memory per idle session, and the BPF maps).

use std::{path::Path, time::Duration};

use anyhow::{Result, bail};

use super::{Size, client_config, storm};
use crate::{
    bed::{Bed, Server, rss_kib},
    report::Report,
};

/// `handshakes`: connect storms; sessions per second, p50/p99 handshake time, failures.
pub fn handshakes(
    bed: &mut Bed,
    gateway_bin: &Path,
    size: Size,
    report: &mut Report,
) -> Result<()> {
    let config = client_config(bed)?;
    for &count in size.storm_sizes() {
        let mut results = Vec::new();
        for server in Server::BOTH {
            let pid = bed.start(server, gateway_bin)?;
            let storm = storm(bed, &config, count)?;
            let established = storm.conns.len();
            results.push((
                established as f64 / storm.elapsed.as_secs_f64(),
                storm.handshakes.value_at_quantile(0.5) as f64 / 1e3,
                storm.handshakes.value_at_quantile(0.99) as f64 / 1e3,
                storm.failures as f64,
            ));
            drop(storm);
            bed.lab.stop(pid)?;
        }
        let (o, s) = (results[0], results[1]);
        for (server, r) in [("ours", o), ("stock", s)] {
            report.point(
                "handshakes.png",
                "Connect storm",
                "sessions started at once",
                "sessions established per second",
                server.to_string(),
                (count as f64, r.0),
            );
        }
        let label = format!("storm of {count}");
        report.row(
            "handshakes",
            format!("{label}: sessions/s"),
            "1/s",
            o.0,
            Some(s.0),
        );
        report.row(
            "handshakes",
            format!("{label}: p50 handshake (ms)"),
            "ms",
            o.1,
            Some(s.1),
        );
        report.row(
            "handshakes",
            format!("{label}: p99 handshake (ms)"),
            "ms",
            o.2,
            Some(s.2),
        );
        report.row(
            "handshakes",
            format!("{label}: failures"),
            "count",
            o.3,
            Some(s.3),
        );
    }
    Ok(())
}

/// `sessions`: the server's memory with many idle sessions (keepalive running): resident
/// memory growth per established session, and the BPF maps (preallocated, so the same
/// at any count).
pub fn sessions(
    bed: &mut Bed,
    gateway_bin: &Path,
    size: Size,
    open_files: u64,
    report: &mut Report,
) -> Result<()> {
    let config = client_config(bed)?;
    let counts = size.idle_counts();
    for (i, &count) in counts.iter().enumerate() {
        let mut per_session = [f64::NAN; 2];
        let mut maps = 0.0;
        for (s, server) in Server::BOTH.into_iter().enumerate() {
            if server == Server::Stock && i > 0 {
                continue;
            }
            let pid = bed.start(server, gateway_bin)?;
            let before = rss_kib(pid.0)?;
            // In chunks that fit the open-file limit: a chunk's sockets close once its
            // sessions are up, and the server keeps those sessions (silent clients)
            // until ping-restart, two minutes, far beyond this measurement.
            let chunk = (open_files as usize).saturating_sub(512).max(1);
            let mut established = 0;
            // One chunk's sessions stay open through the measurement; more are dropped.
            let mut kept = Vec::new();
            let mut left = count;
            while left > 0 {
                let storm = storm(bed, &config, left.min(chunk))?;
                left -= left.min(chunk);
                established += storm.conns.len();
                if count <= chunk {
                    kept.push(storm);
                }
            }
            // Idle for a moment: keepalive timers run, nothing else.
            std::thread::sleep(Duration::from_secs(2));
            let after = rss_kib(pid.0)?;
            if established == 0 {
                bail!("no session connected to {}", server.name());
            }
            per_session[s] = after.saturating_sub(before) as f64 * 1024.0 / established as f64;
            if server == Server::Ours {
                maps = bpf_map_bytes(pid.0)? as f64;
            }
            drop(kept);
            bed.lab.stop(pid)?;
        }
        let stock = (i == 0).then_some(per_session[1]);
        report.row(
            "sessions",
            format!("{count} idle sessions: server memory per session (bytes)"),
            "bytes",
            per_session[0],
            stock,
        );
        if i == 0 {
            report.row(
                "sessions",
                "BPF maps, preallocated for 65,536 sessions (MiB)".into(),
                "MiB",
                maps / (1024.0 * 1024.0),
                None,
            );
        }
    }
    Ok(())
}

/// Bytes of the BPF maps a process holds (`memlock` of its map descriptors).
fn bpf_map_bytes(pid: u32) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}
