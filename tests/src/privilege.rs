//! Deciding whether a test that needs root, BPF or namespaces can run here.
//!
//! Where the privileges are missing the test prints why and returns early; where they
//! are required (`GATEWAY_TESTS_REQUIRE_PRIVILEGE=1`, which `cargo xtask test` sets when
//! it runs as root and in CI) a missing privilege fails the test instead.

use std::path::Path;

/// Environment variable that turns a would-be skip into a failure.
pub const REQUIRE_ENV: &str = "GATEWAY_TESTS_REQUIRE_PRIVILEGE";

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Why privileged tests cannot run on this machine, or `None` when they can.
pub fn missing() -> Option<String> {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot read /proc/self/status: {e}")),
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let lacking: Vec<&str> = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_BPF, "CAP_BPF"),
    ]
    .into_iter()
    .filter(|(bit, _)| cap_eff & (1u64 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    if !lacking.is_empty() {
        return Some(format!("process lacks {}", lacking.join(", ")));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    if which("ip").is_none() {
        return Some("`ip` (iproute2) is not installed; run `cargo xtask setup`".into());
    }
    None
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// Call first in a privileged test: `if !gateway_tests::privilege::check("name") { return; }`.
///
/// Returns true when the test can run; otherwise prints a SKIPPED line naming the test
/// and the reason, or panics when privileges are required.
pub fn check(test: &str) -> bool {
    let Some(reason) = missing() else {
        return true;
    };
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{test}: privileges required ({REQUIRE_ENV}=1) but {reason}");
    }
    eprintln!("SKIPPED {test}: needs root with BPF and network namespaces: {reason}");
    false
}
