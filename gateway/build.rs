//! Builds the XDP programs (`gateway-ebpf`'s `gateway-xdp` binary) for the BPF target
//! into OUT_DIR, where `gateway::xdp` embeds them.

use std::path::Path;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gateway-ebpf")
        .canonicalize()
        .context("locating the gateway-ebpf crate")?;
    let root = root
        .to_str()
        .context("gateway-ebpf path is not UTF-8")?
        .to_string();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "gateway-ebpf",
            root_dir: &root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the XDP programs: run `cargo xtask setup` for bpf-linker and rust-src")
}
