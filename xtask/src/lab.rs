//! `cargo xtask lab up|down|status`: the three-namespace lab for people to poke at.

use anyhow::{Result, bail};
use gateway_tests::lab::{HUMAN_LAB_PREFIX, Lab, Topology, list_namespaces, remove_namespace};

const ROLES: [&str; 3] = ["client", "gw", "target"];

fn names() -> Vec<String> {
    ROLES
        .iter()
        .map(|r| format!("{HUMAN_LAB_PREFIX}-{r}"))
        .collect()
}

/// Names of the lab's namespaces that exist now.
pub fn present() -> Result<Vec<String>> {
    let all = list_namespaces()?;
    Ok(names().into_iter().filter(|n| all.contains(n)).collect())
}

/// Builds the lab in a `Lab` that the caller owns (dropped: removed unless kept).
pub fn build() -> Result<(Lab, Topology)> {
    down()?;
    let mut lab = Lab::with_prefix(HUMAN_LAB_PREFIX.to_string());
    let topo = Topology::build(&mut lab)?;
    Ok((lab, topo))
}

pub fn up() -> Result<()> {
    if !present()?.is_empty() {
        bail!(
            "the lab is already up ({}); `cargo xtask lab down` first",
            present()?.join(" ")
        );
    }
    let (mut lab, _topo) = build()?;
    lab.keep();
    println!("lab up:");
    print_topology();
    println!("enter a namespace with e.g. `ip netns exec {HUMAN_LAB_PREFIX}-client bash`");
    Ok(())
}

pub fn down() -> Result<()> {
    let present = present()?;
    for n in &present {
        remove_namespace(n)?;
    }
    if !present.is_empty() {
        println!("lab down: removed {}", present.join(" "));
    }
    Ok(())
}

pub fn status() -> Result<()> {
    let present = present()?;
    if present.is_empty() {
        println!("lab is down");
        return Ok(());
    }
    print_topology();
    for n in present {
        let out = std::process::Command::new("ip")
            .args(["-n", &n, "-br", "addr"])
            .output()?;
        println!(
            "--- {n}\n{}",
            String::from_utf8_lossy(&out.stdout).trim_end()
        );
    }
    Ok(())
}

fn print_topology() {
    println!(
        "  {p}-client eth0 {c}  <->  {p}-gw eth0 {gp} (public ENI)\n  \
         {p}-gw eth1 {gt} (target ENI)  <->  {p}-target eth0 {t}",
        p = HUMAN_LAB_PREFIX,
        c = Topology::CLIENT_ADDR,
        gp = Topology::GATEWAY_PUBLIC_ADDR,
        gt = Topology::GATEWAY_TARGET_ADDR,
        t = Topology::TARGET_ADDR,
    );
}
