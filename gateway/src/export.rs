//! The `.ovpn` client profile: what stock OpenVPN 2.6, OpenVPN Connect and the AWS VPN
//! Client import unchanged to reach this gateway.

use std::fmt::Write as _;

use crate::config::{Config, Transport};

/// Everything a profile carries besides the configuration.
pub struct ProfileInputs<'a> {
    /// Host names or addresses clients connect to (one `remote` line per host and
    /// listen entry).
    pub remote_hosts: &'a [String],
    /// The CA that signed the server certificate (PEM).
    pub ca_pem: &'a str,
    /// The server certificate's common name, checked with `verify-x509-name`.
    pub server_name: &'a str,
    /// The tls-crypt key file's text, when the endpoint uses one.
    pub tls_crypt_key: Option<&'a str>,
    /// The tls-auth key file's text and its digest, when the endpoint uses tls-auth.
    pub tls_auth: Option<(&'a str, crate::config::AuthDigest)>,
    /// The client's certificate and key (PEM), for a ready-to-use profile.
    pub client: Option<(&'a str, &'a str)>,
}

/// Why a profile could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error(
        "no host for the remote lines: set endpoint.remote_hosts in the configuration or pass --remote"
    )]
    NoRemote,
    #[error("{what} is not PEM (no -----BEGIN line)")]
    NotPem { what: &'static str },
}

/// The data-channel ciphers offered, in the gateway's order of preference.
pub const DATA_CIPHERS: &str = "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305";

/// Builds the profile text.
pub fn client_profile(config: &Config, inputs: &ProfileInputs<'_>) -> Result<String, ExportError> {
    if inputs.remote_hosts.is_empty() {
        return Err(ExportError::NoRemote);
    }
    pem("the CA certificate", inputs.ca_pem)?;
    if let Some((cert, key)) = inputs.client {
        pem("the client certificate", cert)?;
        pem("the client key", key)?;
    }
    let mut p = String::new();
    let mut line = |s: &str| {
        p.push_str(s);
        p.push('\n');
    };
    line(&format!("# {} — client profile", config.endpoint.name));
    line("client");
    line("dev tun");
    for host in inputs.remote_hosts {
        for listen in &config.endpoint.listen {
            let proto = match listen.transport {
                Transport::Udp => "udp",
                Transport::Tcp => "tcp-client",
            };
            line(&format!("remote {host} {} {proto}", listen.port));
        }
    }
    if inputs.remote_hosts.len() > 1 {
        line("remote-random");
    }
    line("resolv-retry infinite");
    line("nobind");
    line("persist-key");
    line("persist-tun");
    line("remote-cert-tls server");
    line(&format!("verify-x509-name {} name", inputs.server_name));
    line(&format!("data-ciphers {DATA_CIPHERS}"));
    // The gateway decides when to rekey (as AWS Client VPN profiles do).
    line("reneg-sec 0");
    // Tell the gateway when the client leaves, so the lease and NAT state are freed at
    // once rather than at ping-restart (UDP only: OpenVPN refuses it with TCP).
    if config
        .endpoint
        .listen
        .iter()
        .all(|l| l.transport == Transport::Udp)
    {
        line("explicit-exit-notify 1");
    }
    line("verb 3");
    if let Some((_, digest)) = inputs.tls_auth {
        // The client side of the gateway's `key-direction 0`.
        line("key-direction 1");
        line(&format!("auth {}", digest.name()));
    }
    let mut block = |tag: &str, body: &str| {
        let _ = write!(p, "<{tag}>\n{}\n</{tag}>\n", body.trim_end());
    };
    block("ca", inputs.ca_pem);
    if let Some(key) = inputs.tls_crypt_key {
        block("tls-crypt", key);
    }
    if let Some((key, _)) = inputs.tls_auth {
        block("tls-auth", key);
    }
    if let Some((cert, key)) = inputs.client {
        block("cert", cert);
        block("key", key);
    }
    Ok(p)
}

fn pem(what: &'static str, text: &str) -> Result<(), ExportError> {
    if text.contains("-----BEGIN ") {
        Ok(())
    } else {
        Err(ExportError::NotPem { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str) -> Config {
        Config::parse(
            &format!(
                r#"
[endpoint]
name = "corp-vpn"
listen = {listen}
[tls]
server_cert = "s.pem"
server_key = "s.key"
client_ca = "ca.pem"
[[target]]
interface = "eth1"
"#
            ),
            "test",
        )
        .unwrap()
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_profile_has_a_remote_per_host_and_listen_entry_and_inline_pki() {
        let hosts = [
            "vpn1.example.test".to_string(),
            "vpn2.example.test".to_string(),
        ];
        let text = client_profile(
            &config(r#"["udp/443", "tcp/1194"]"#),
            &ProfileInputs {
                remote_hosts: &hosts,
                ca_pem: CA,
                server_name: "vpn.example.test",
                tls_crypt_key: Some("-----BEGIN OpenVPN Static key V1-----\nab\n-----END OpenVPN Static key V1-----"),
                tls_auth: None,
                client: Some((CA, "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----")),
            },
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let remotes: Vec<&&str> = lines.iter().filter(|l| l.starts_with("remote ")).collect();
        assert_eq!(
            remotes,
            [
                &"remote vpn1.example.test 443 udp",
                &"remote vpn1.example.test 1194 tcp-client",
                &"remote vpn2.example.test 443 udp",
                &"remote vpn2.example.test 1194 tcp-client",
            ]
        );
        assert!(
            !lines.contains(&"explicit-exit-notify 1"),
            "a TCP remote is listed"
        );
        for expected in [
            "client",
            "remote-random",
            "remote-cert-tls server",
            "verify-x509-name vpn.example.test name",
            "data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
            "reneg-sec 0",
            "<ca>",
            "<tls-crypt>",
            "<cert>",
            "<key>",
            "</key>",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn a_profile_without_remote_or_with_bad_pem_is_refused() {
        let c = config(r#"["udp/443"]"#);
        let hosts = ["h".to_string()];
        let mut inputs = ProfileInputs {
            remote_hosts: &[],
            ca_pem: CA,
            server_name: "s",
            tls_crypt_key: None,
            tls_auth: None,
            client: None,
        };
        assert_eq!(client_profile(&c, &inputs), Err(ExportError::NoRemote));
        inputs.remote_hosts = &hosts;
        let text = client_profile(&c, &inputs).unwrap();
        assert!(
            !text.contains("<tls-crypt>") && !text.contains("<cert>"),
            "{text}"
        );
        assert!(!text.contains("remote-random"), "{text}");
        inputs.tls_auth = Some((
            "-----BEGIN OpenVPN Static key V1-----\nab\n-----END OpenVPN Static key V1-----",
            crate::config::AuthDigest::Sha512,
        ));
        let text = client_profile(&c, &inputs).unwrap();
        for expected in ["key-direction 1", "auth SHA512", "<tls-auth>"] {
            assert!(text.lines().any(|l| l == expected), "{expected} in {text}");
        }
        inputs.tls_auth = None;
        inputs.ca_pem = "not pem";
        assert_eq!(
            client_profile(&c, &inputs),
            Err(ExportError::NotPem {
                what: "the CA certificate"
            })
        );
    }
}
