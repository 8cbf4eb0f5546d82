//! Scenario `iperf`: the stock OpenVPN 2.6 client and iperf3 TCP through our gateway (in
//! AF_XDP mode, then socket mode) and through the stock OpenVPN server, one after the other in the same lab, in both
//! directions (upload: client → target; download: target → client), with the server
//! process's CPU time per byte and the machine's load; the ratio is the headline.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use gateway_tests::lab::{Lab, Netns, ProcessId, Topology, read_log, wait_until};

use crate::bed::{Bed, Server, machine_ticks, process_ticks};

/// One side's result.
#[derive(Debug, Clone, Copy)]
pub struct Side {
    pub mbit_per_s: f64,
    pub cpu_s_per_gb: f64,
    pub machine_busy: f64,
}

/// Which way the bulk data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → target host (the client sends).
    Upload,
    /// Target host → client (`iperf3 -R`).
    Download,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Upload, Direction::Download];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// Per direction (in [`Direction::BOTH`] order): ours in AF_XDP mode, ours in socket
/// mode, and stock OpenVPN's result.
pub type Results = Vec<(Direction, Side, Side, Side)>;

/// Runs both sides for `seconds` per direction; `gateway_bin` is the release `gateway`
/// binary.
pub fn run(gateway_bin: &Path, seconds: u64, dir: &Path) -> Result<Results> {
    let mut bed = Bed::new(dir)?;
    let profile = dir.join("alice.ovpn");
    std::fs::write(&profile, bed.profile()?)?;
    let mut sides = Vec::new();
    for server in Server::EVERY_MODE {
        let pid = bed.start(server, gateway_bin)?;
        let name = server.name().replace([' ', '(', ')'], "");
        sides.push(measure(
            &mut bed.lab,
            &bed.topo,
            pid,
            &profile,
            dir,
            &name,
            seconds,
        )?);
        bed.lab.stop(pid)?;
    }
    let theirs = sides.pop().context("stock side")?;
    let sockets = sides.pop().context("our socket-mode side")?;
    let ours = sides.pop().context("our side")?;
    Ok(Direction::BOTH
        .iter()
        .zip(ours.into_iter().zip(sockets).zip(theirs))
        .map(|(d, ((o, k), s))| (*d, o, k, s))
        .collect())
}

fn measure(
    lab: &mut Lab,
    topo: &Topology,
    server: ProcessId,
    profile: &Path,
    dir: &Path,
    name: &str,
    seconds: u64,
) -> Result<Vec<Side>> {
    let client_log = dir.join(format!("client-{name}.log"));
    let client = lab.spawn(
        &topo.client,
        &["openvpn", "--config", &profile.to_string_lossy()],
        Some(&client_log),
    )?;
    wait_until("the client", Duration::from_secs(30), || {
        read_log(&client_log).contains("Initialization Sequence Completed")
    })
    .with_context(|| read_log(&client_log))?;
    let mut sides = Vec::new();
    for direction in Direction::BOTH {
        let iperf_log = dir.join(format!("iperf3-{name}-{}.log", direction.name()));
        let iperf = lab.spawn(
            &topo.target,
            &["iperf3", "-s", "-1", "-B", "10.10.0.10", "--forceflush"],
            Some(&iperf_log),
        )?;
        wait_until("iperf3", Duration::from_secs(5), || {
            read_log(&iperf_log).contains("listening")
        })?;
        let (busy0, total0, _) = machine_ticks()?;
        let cpu0 = process_ticks(server.0)?;
        let out = iperf_client(&topo.client, seconds, direction)?;
        let (busy1, total1, _) = machine_ticks()?;
        let cpu1 = process_ticks(server.0)?;
        let _ = lab.stop(iperf);
        let (bits_per_s, bytes) = iperf_summary(&out)?;
        // USER_HZ is 100 on Linux.
        let cpu_s = (cpu1 - cpu0) as f64 / 100.0;
        sides.push(Side {
            mbit_per_s: bits_per_s / 1e6,
            cpu_s_per_gb: cpu_s / (bytes / 1e9),
            machine_busy: (busy1 - busy0) as f64 / ((total1 - total0).max(1)) as f64,
        });
    }
    lab.stop(client)?;
    Ok(sides)
}

fn iperf_client(client: &Netns, seconds: u64, direction: Direction) -> Result<String> {
    let seconds = seconds.to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        "10.10.0.10",
        "-t",
        &seconds,
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if direction == Direction::Download {
        args.push("-R");
    }
    client.exec(&args)
}

/// Receiver bits per second and bytes from iperf3's JSON (its `end.sum_received`).
fn iperf_summary(json: &str) -> Result<(f64, f64)> {
    let at = json
        .find("\"sum_received\"")
        .context("iperf3 printed no sum_received")?;
    let section = &json[at..];
    let number = |key: &str| -> Result<f64> {
        let k = section
            .find(key)
            .with_context(|| format!("no {key} in sum_received"))?
            + key.len();
        let rest = section[k..].trim_start_matches([':', ' ', '\t']);
        let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
        rest[..end]
            .trim()
            .parse()
            .with_context(|| format!("{key} is not a number"))
    };
    Ok((number("\"bits_per_second\"")?, number("\"bytes\"")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iperf3_json_and_proc_stat() {
        let json = "{\"end\":{\"sum_sent\":{\"bytes\":\t5},\"sum_received\":{\n\"start\":\t0,\n\"bytes\":\t1250000000,\n\"bits_per_second\":\t1000000000.5\n}}}";
        assert_eq!(
            iperf_summary(json).unwrap(),
            (1_000_000_000.5, 1_250_000_000.0)
        );
        assert!(iperf_summary("{}").is_err());
        let (busy, total, _) = machine_ticks().unwrap();
        assert!(total >= busy && total > 0);
        assert!(process_ticks(std::process::id()).is_ok());
    }
}
