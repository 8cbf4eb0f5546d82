//! The forwarding guard: an nftables table of the gateway's own (`inet gateway`, in its
//! network namespace) that refuses every forwarded packet the gateway did not produce.
//!
//! The gateway hands the kernel translated packets from the TAP to the target
//! interfaces (`inner`'s kernel path) and translated replies from the target
//! interfaces to the TAP (`target`'s). Anything else the kernel would forward through
//! the public interface or the TAP is someone using the instance as a router: a packet
//! for a VPC host sent to the public interface, a packet for a lease arriving from the
//! Internet, a decrypted client packet towards an interface that is not a target. The
//! table drops and counts those; other forwarding on the host is left alone.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use tracing::{info, warn};

/// The table's name, in the `inet` family.
pub const TABLE: &str = "gateway";

/// The installed table; removed when dropped.
#[derive(Debug)]
pub struct ForwardGuard {
    _private: (),
}

impl ForwardGuard {
    /// Replaces any table of this name (one a crashed gateway left) with the guard for
    /// these interfaces, atomically (one `nft -f` transaction).
    pub fn install(public: &str, tap: &str, targets: &[String]) -> Result<Self> {
        nft(&script(public, tap, targets)).context(
            "installing the forwarding guard (nftables table inet gateway); install \
             nftables, or set dataplane.forward_guard = false to run without it",
        )?;
        info!(table = TABLE, "forwarding guard installed");
        Ok(Self { _private: () })
    }
}

impl Drop for ForwardGuard {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table inet {TABLE}\n")) {
            warn!("removing the forwarding guard: {e:#}");
        }
    }
}

/// The nftables script: create-or-keep the table, delete it, then define it, so the
/// whole replacement is one transaction. Interface names come from a validated
/// configuration (no quotes or spaces).
pub fn script(public: &str, tap: &str, targets: &[String]) -> String {
    let targets = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\tiifname \"{public}\" counter drop comment \"nothing is forwarded from the public interface\"\n\
         \t\toifname \"{public}\" counter drop comment \"nothing is forwarded to the public interface\"\n\
         \t\tiifname \"{tap}\" oifname != {{ {targets} }} counter drop comment \"client packets go to target interfaces only\"\n\
         \t\toifname \"{tap}\" iifname != {{ {targets} }} counter drop comment \"only target interfaces reach the clients\"\n\
         \t}}\n\
         }}\n"
    )
}

fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_every_interface_and_replaces_the_table_whole() {
        let s = script("eth0", "gw-tap0", &["eth1".into(), "eth2".into()]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "table inet gateway");
        assert_eq!(lines[1], "delete table inet gateway");
        assert!(s.contains("iifname \"eth0\" counter drop"), "{s}");
        assert!(s.contains("oifname \"eth0\" counter drop"), "{s}");
        assert!(
            s.contains("iifname \"gw-tap0\" oifname != { \"eth1\", \"eth2\" } counter drop"),
            "{s}"
        );
        assert!(
            s.contains("oifname \"gw-tap0\" iifname != { \"eth1\", \"eth2\" } counter drop"),
            "{s}"
        );
        assert!(s.contains("policy accept"), "{s}");
    }
}
