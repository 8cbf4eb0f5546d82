//! `gateway check`: exit status and messages a person sees.

use std::process::Command;

fn gateway(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running the gateway binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &std::path::Path, extra_route: &str) -> std::path::PathBuf {
    for f in ["server.pem", "server.key", "ca.pem"] {
        std::fs::write(dir.join(f), "test").unwrap();
    }
    let d = dir.display();
    let text = format!(
        r#"
[endpoint]
name = "corp-vpn"
public_interface = "lo"
listen = ["udp/443", "tcp/443"]
split_tunnel = true
[tls]
server_cert = "{d}/server.pem"
server_key = "{d}/server.key"
client_ca = "{d}/ca.pem"
[[target]]
interface = "lo-target"
[[route]]
destination = "{extra_route}"
target = "lo-target"
[[authorize]]
destination = "10.0.0.0/16"
all_users = true
"#
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_valid_file_is_summarised_and_problems_are_listed_with_their_keys() {
    let dir = std::env::temp_dir().join(format!("gw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let good = write_config(&dir, "10.0.0.0/16");
    let (ok, stdout, stderr) =
        gateway(&["check", "--config", good.to_str().unwrap(), "--file-only"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(stdout.contains("udp/443, tcp/443"), "{stdout}");
    assert!(
        stdout.contains("1 route(s), 1 authorization rule(s)"),
        "{stdout}"
    );

    // The system check finds that the target interface does not exist here.
    let (ok, _, stderr) = gateway(&["check", "--config", good.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("target[0].interface: no network interface named \"lo-target\""),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");

    let bad = write_config(&dir, "10.200.1.0/24");
    let (ok, _, stderr) = gateway(&["check", "--config", bad.to_str().unwrap(), "--file-only"]);
    assert!(!ok);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("route[0].destination: 10.200.1.0/24 overlaps endpoint.client_cidr"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_exported_profile_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("gw-cli-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = gateway::pki::Pki::init(&dir.join("pki"), "Export CA", "vpn.example.test").unwrap();
    pki.issue_client("alice", None).unwrap();
    let config = dir.join("gateway.toml");
    gateway_tests::config::LabConfig::new("export", &dir.join("pki"))
        .write(&config)
        .unwrap();
    let profile = dir.join("alice.ovpn");
    let (ok, _, stderr) = gateway(&[
        "export-client",
        "--config",
        config.to_str().unwrap(),
        "--cert",
        pki.client_cert("alice").to_str().unwrap(),
        "--key",
        pki.client_key("alice").to_str().unwrap(),
        "-o",
        profile.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&profile).unwrap();
    assert!(text.contains("PRIVATE KEY"), "the key is inlined");
    let mode = std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a profile with keys in it is {mode:o}");
    let _ = std::fs::remove_dir_all(&dir);
}
