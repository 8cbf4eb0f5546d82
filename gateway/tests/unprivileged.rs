//! `gateway serve` with `process.user`: once set up it runs as that user, with
//! CAP_NET_ADMIN and CAP_BPF on its control thread only, no capability on its
//! data-plane workers, and no_new_privs; a stock client still connects and passes
//! traffic, a reload still applies, and SIGTERM still removes what it set up.

use std::{path::Path, process::Command, time::Duration};

use gateway::pki::Pki;
use gateway_tests::{
    config::LabConfig,
    lab::{Lab, Topology, read_log, wait_until},
    privilege,
};

const NOBODY: u32 = 65534;
/// CAP_NET_ADMIN (12) and CAP_BPF (39).
const KEPT: u64 = (1 << 12) | (1 << 39);

/// The value of `field` in a /proc status file.
fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in\n{status}"))
}

fn hex(value: &str) -> u64 {
    u64::from_str_radix(value, 16).unwrap()
}

#[test]
fn serve_continues_as_the_configured_user_with_two_capabilities() {
    if !privilege::check("serve_continues_as_the_configured_user_with_two_capabilities") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_gateway");
    let dir = std::env::temp_dir().join(format!("gw-unprivileged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::init(&dir.join("pki"), "Unprivileged CA", "vpn.example.test").unwrap();
    pki.issue_client("alice", None).unwrap();
    let mut lab = Lab::new();
    let topo = Topology::build(&mut lab).unwrap();
    topo.gateway
        .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let config = dir.join("gateway.toml");
    let lab_config = LabConfig::new("unprivileged", &dir.join("pki"))
        .authorize_all_users("10.10.0.10/32")
        .admin_socket(dir.join("admin.sock"))
        .process_user("nobody");
    lab_config.write(&config).unwrap();
    let p = |path: &Path| path.to_string_lossy().into_owned();
    let log = dir.join("gateway.log");
    let server = lab
        .spawn(
            &topo.gateway,
            &[bin, "serve", "--config", &p(&config)],
            Some(&log),
        )
        .unwrap();
    wait_until(
        "the gateway to serve unprivileged",
        Duration::from_secs(20),
        || read_log(&log).contains("serving") || !lab.is_running(server),
    )
    .unwrap();
    assert!(lab.is_running(server), "{}", read_log(&log));
    assert!(
        read_log(&log).contains("running unprivileged from now on"),
        "{}",
        read_log(&log)
    );

    // Every thread runs as nobody; the control thread keeps two capabilities, the
    // workers none; nothing can gain more.
    let proc_dir = format!("/proc/{}", server.0);
    let status = std::fs::read_to_string(format!("{proc_dir}/status")).unwrap();
    let uid = format!("{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}");
    assert_eq!(status_field(&status, "Uid:"), uid, "{status}");
    assert_eq!(hex(status_field(&status, "CapEff:")), KEPT, "{status}");
    assert_eq!(hex(status_field(&status, "CapPrm:")), KEPT, "{status}");
    assert_eq!(hex(status_field(&status, "CapBnd:")), KEPT, "{status}");
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "{status}");
    let mut workers_without = 0;
    for task in std::fs::read_dir(format!("{proc_dir}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert_eq!(status_field(&status, "Uid:"), uid, "{status}");
        let effective = hex(status_field(&status, "CapEff:"));
        assert!(effective == KEPT || effective == 0, "{status}");
        if status_field(&status, "Name:").starts_with("gw-worker") {
            assert_eq!(effective, 0, "a worker kept capabilities:\n{status}");
            assert_eq!(hex(status_field(&status, "CapPrm:")), 0, "{status}");
            workers_without += 1;
        }
    }
    assert!(workers_without >= 1, "no worker thread found");

    // A stock client connects and reaches the host.
    let profile = dir.join("alice.ovpn");
    let export = Command::new(bin)
        .args(["export-client", "--config", &p(&config), "--cert"])
        .arg(pki.client_cert("alice"))
        .arg("--key")
        .arg(pki.client_key("alice"))
        .arg("-o")
        .arg(&profile)
        .output()
        .unwrap();
    assert!(export.status.success(), "{export:?}");
    let client_log = dir.join("client.log");
    lab.spawn(
        &topo.client,
        &["openvpn", "--config", &p(&profile)],
        Some(&client_log),
    )
    .unwrap();
    wait_until("the client's tunnel", Duration::from_secs(30), || {
        read_log(&client_log).contains("Initialization Sequence Completed")
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\ngateway:\n{}",
            read_log(&client_log),
            read_log(&log)
        )
    });
    topo.client
        .exec(&[
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "3",
            Topology::TARGET_ADDR,
        ])
        .unwrap_or_else(|e| panic!("{e:#}\ngateway:\n{}", read_log(&log)));
    let listed = Command::new(bin)
        .args(["connections", "--config", &p(&config)])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("alice"),
        "{listed:?}"
    );

    // A reload reads the file as nobody and applies.
    lab_config
        .authorize_all_users("10.10.0.20/32")
        .write(&config)
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0 as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_until("the reload", Duration::from_secs(10), || {
        read_log(&log).contains("reloaded routes, authorization rules and groups")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", read_log(&log)));

    // SIGTERM: a clean exit that removes the forwarding guard (CAP_NET_ADMIN, passed on
    // to `nft`).
    let exit = lab.stop(server).unwrap();
    assert!(exit.success(), "{exit:?}\n{}", read_log(&log));
    let table = topo
        .gateway
        .exec(&["nft", "list", "table", "inet", "gateway"]);
    assert!(
        table.is_err(),
        "the table outlived the gateway: {table:?}\n{}",
        read_log(&log)
    );
    drop(lab);
    std::fs::remove_dir_all(&dir).unwrap();
}
