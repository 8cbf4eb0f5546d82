//! Server side: what to push to one client, from the endpoint's settings, the client's
//! peer-info and the negotiated cipher, following the §14 "must not" list.

use std::net::{IpAddr, Ipv4Addr};

use super::ncp::NegotiatedCipher;
use super::{
    DhcpOption, DnsServer, Ifconfig, IfconfigIpv6, ProtocolFlags, PushConfig, RedirectGateway,
    Route, RouteIpv6, Topology,
};
use crate::key_method::Directive;
use crate::key_method::{PeerInfo, ProtoFlags};

/// Split or full tunnel (AWS `SplitTunnel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelMode {
    /// Push only these routes.
    Split {
        /// IPv4 routes.
        routes: Vec<Route>,
        /// IPv6 routes.
        routes_ipv6: Vec<RouteIpv6>,
    },
    /// `redirect-gateway def1 [bypass-dhcp] [ipv6]`: all traffic through the tunnel.
    Full {
        /// Add `bypass-dhcp`.
        bypass_dhcp: bool,
        /// Add `ipv6` (needs an IPv6 lease).
        ipv6: bool,
    },
}

/// Protocol features this server implements; each is pushed only when the client also
/// announced it (§8.3: never switch on what is not implemented).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerFeatures {
    /// Data keys from the TLS exporter (`tls-ekm`).
    pub tls_ekm: bool,
    /// EXIT on the control channel handled (`cc-exit`).
    pub cc_exit: bool,
    /// Dynamic tls-crypt for renegotiations (`dyn-tls-crypt`).
    pub dyn_tls_crypt: bool,
}

impl ServerFeatures {
    /// Whether this session derives data keys with the TLS exporter (else the legacy PRF):
    /// implemented here and announced by the client (IV_PROTO bit 3). The key schedule
    /// must follow the same answer as the push.
    pub fn uses_tls_ekm(&self, peer: &PeerInfo) -> bool {
        self.tls_ekm && peer.has_proto(ProtoFlags::TLS_KEY_EXPORT)
    }

    /// Whether this session uses dynamic tls-crypt for renegotiations.
    pub fn uses_dyn_tls_crypt(&self, peer: &PeerInfo) -> bool {
        self.dyn_tls_crypt && peer.has_proto(ProtoFlags::DYN_TLS_CRYPT)
    }
}

/// `ping` / `ping-restart` to push (server `keepalive <ping> <ping_restart>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveSettings {
    /// Seconds of send silence before a ping.
    pub ping: u32,
    /// Seconds of receive silence before the client restarts (the server waits twice as
    /// long, see [`super::keepalive::Keepalive::server`]).
    pub ping_restart: u32,
}

/// `auth-token` to push; the client sends it instead of the password on later
/// authentications (renegotiation, reconnect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthToken {
    /// The token.
    pub token: String,
    /// `auth-token-user`: base64 username to use with it.
    pub username_b64: Option<String>,
}

/// What the endpoint pushes to one client (topology subnet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPolicy {
    /// The client's leased tunnel address.
    pub address: Ipv4Addr,
    /// Netmask of the client network.
    pub netmask: Ipv4Addr,
    /// The server's tunnel address (`route-gateway`).
    pub gateway: Ipv4Addr,
    /// The client's IPv6 lease, if the endpoint carries IPv6.
    pub ipv6: Option<IfconfigIpv6>,
    /// Split or full tunnel.
    pub tunnel: TunnelMode,
    /// DNS servers (AWS allows up to two).
    pub dns_servers: Vec<IpAddr>,
    /// DNS search domains; the first is also the connection suffix.
    pub search_domains: Vec<String>,
    /// Push `block-outside-dns` to Windows clients.
    pub block_outside_dns: bool,
    /// Keepalive timers.
    pub keepalive: Option<KeepaliveSettings>,
    /// `tun-mtu` to push to clients whose IV_MTU allows it.
    pub tun_mtu: Option<u32>,
    /// Features this server implements.
    pub features: ServerFeatures,
    /// Token to push.
    pub auth_token: Option<AuthToken>,
    /// Options this policy does not model, sent last to every client as they are (e.g.
    /// `echo` lines for GUIs). Must not repeat an option the fields above produce.
    pub extra: Vec<Directive>,
}

impl PushPolicy {
    /// The PUSH_REPLY for a client with `peer` info, `cipher` from NCP and `peer_id`
    /// (used only if the client takes P_DATA_V2). Leaves out what the client did not
    /// announce: `peer-id` without bit 1, `protocol-flags` without bit 7 (then
    /// `key-derivation tls-ekm` with bit 3), `dns` without bit 6, `tun-mtu` above IV_MTU,
    /// `block-outside-dns` off Windows, `cipher` for non-NCP clients.
    pub fn reply_for(&self, peer: &PeerInfo, cipher: NegotiatedCipher, peer_id: u32) -> PushConfig {
        let mut config = PushConfig::default();
        match &self.tunnel {
            TunnelMode::Split {
                routes,
                routes_ipv6,
            } => {
                config.routes = routes.clone();
                config.routes_ipv6 = routes_ipv6.clone();
            }
            TunnelMode::Full { bypass_dhcp, ipv6 } => {
                config.redirect_gateway = Some(RedirectGateway {
                    bypass_dhcp: *bypass_dhcp,
                    ipv6: *ipv6,
                    ..RedirectGateway::def1()
                });
            }
        }
        config
            .dhcp_options
            .extend(self.dns_servers.iter().map(|ip| DhcpOption::Dns(*ip)));
        let mut domains = self.search_domains.iter();
        config
            .dhcp_options
            .extend(domains.next().map(|d| DhcpOption::Domain(d.clone())));
        config
            .dhcp_options
            .extend(domains.map(|d| DhcpOption::DomainSearch(d.clone())));
        config.block_outside_dns =
            self.block_outside_dns && peer.platform.as_deref() == Some("win");
        if peer.has_proto(ProtoFlags::DNS_OPTION) {
            config.dns_search_domains = self.search_domains.clone();
            if !self.dns_servers.is_empty() {
                config.dns_servers = vec![DnsServer {
                    priority: 0,
                    addresses: self.dns_servers.iter().map(|ip| (*ip).into()).collect(),
                }];
            }
        }
        config.route_gateway = Some(self.gateway);
        config.topology = Some(Topology::Subnet);
        if let Some(keepalive) = self.keepalive {
            config.ping = Some(keepalive.ping);
            config.ping_restart = Some(keepalive.ping_restart);
        }
        config.ifconfig = Some(Ifconfig {
            address: self.address,
            netmask_or_remote: self.netmask,
        });
        config.ifconfig_ipv6 = self.ipv6;
        if peer.has_proto(ProtoFlags::DATA_V2) {
            config.peer_id = Some(peer_id);
        }
        if cipher.push_cipher() {
            config.cipher = Some(cipher.cipher);
        }
        let ekm = self.features.uses_tls_ekm(peer);
        if peer.has_proto(ProtoFlags::CC_EXIT_NOTIFY) {
            let flags = ProtocolFlags {
                cc_exit: self.features.cc_exit,
                tls_ekm: ekm,
                dyn_tls_crypt: self.features.uses_dyn_tls_crypt(peer),
                aead_epoch: false,
            };
            if flags != ProtocolFlags::default() {
                config.protocol_flags = Some(flags);
            }
        } else {
            config.key_derivation_tls_ekm = ekm;
        }
        config.tun_mtu = self
            .tun_mtu
            .filter(|mtu| peer.mtu.is_some_and(|max| max >= *mtu));
        if let Some(token) = &self.auth_token {
            config.auth_token = Some(token.token.clone());
            config.auth_token_user = token.username_b64.clone();
        }
        config.other.extend(self.extra.iter().cloned());
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Cipher;
    use crate::push::message::ControlMessage;
    use crate::push::ncp::OfferSource;
    use crate::push::split::PUSH_BUNDLE_SIZE;

    const STOCK_26: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\n\
        IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\n\
        IV_COMP_STUB=1\nIV_COMP_STUBv2=1\n";
    const CLIENT_245: &str = "IV_VER=2.4.5\nIV_PLAT=win\nIV_NCP=2\nIV_PROTO=2\n";
    const CLIENT_25: &str =
        "IV_VER=2.5.9\nIV_PLAT=mac\nIV_NCP=2\nIV_CIPHERS=AES-256-GCM:AES-128-GCM\nIV_PROTO=6\n";

    fn peer(text: &str) -> PeerInfo {
        PeerInfo::parse(text).unwrap()
    }

    fn aes256(source: OfferSource) -> NegotiatedCipher {
        NegotiatedCipher {
            cipher: Cipher::Aes256Gcm,
            source,
        }
    }

    fn implemented() -> ServerFeatures {
        ServerFeatures {
            tls_ekm: true,
            cc_exit: true,
            dyn_tls_crypt: false,
        }
    }

    fn lab_policy() -> PushPolicy {
        PushPolicy {
            address: Ipv4Addr::new(10, 8, 0, 2),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Ipv4Addr::new(10, 8, 0, 1),
            ipv6: None,
            tunnel: TunnelMode::Split {
                routes: vec![],
                routes_ipv6: vec![],
            },
            dns_servers: vec![],
            search_domains: vec![],
            block_outside_dns: false,
            keepalive: Some(KeepaliveSettings {
                ping: 10,
                ping_restart: 120,
            }),
            tun_mtu: Some(1500),
            features: implemented(),
            auth_token: None,
            extra: Vec::new(),
        }
    }

    fn wire(config: &PushConfig) -> String {
        let messages = config.to_messages(PUSH_BUNDLE_SIZE).unwrap();
        assert_eq!(messages.len(), 1);
        let mut out = Vec::new();
        messages[0].emit(&mut out).unwrap();
        assert_eq!(out.pop(), Some(0));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn stock_26_gets_the_lab_reply_without_dyn_tls_crypt() {
        let config = lab_policy().reply_for(&peer(STOCK_26), aes256(OfferSource::IvCiphers), 0);
        assert_eq!(
            wire(&config),
            "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 120,\
             ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,\
             protocol-flags cc-exit tls-ekm,tun-mtu 1500"
        );
    }

    #[test]
    fn dyn_tls_crypt_only_when_implemented_and_announced() {
        let mut policy = lab_policy();
        policy.features.dyn_tls_crypt = true;
        let config = policy.reply_for(&peer(STOCK_26), aes256(OfferSource::IvCiphers), 3);
        assert_eq!(
            config.protocol_flags,
            Some(ProtocolFlags {
                cc_exit: true,
                tls_ekm: true,
                dyn_tls_crypt: true,
                aead_epoch: false,
            })
        );
        let no_bit_9 = peer("IV_PROTO=478\nIV_CIPHERS=AES-256-GCM\n");
        let config = policy.reply_for(&no_bit_9, aes256(OfferSource::IvCiphers), 3);
        assert_eq!(config.protocol_flags.map(|f| f.dyn_tls_crypt), Some(false));
        assert!(!policy.features.uses_dyn_tls_crypt(&no_bit_9));
    }

    #[test]
    fn split_tunnel_with_dns_for_a_26_client() {
        let mut policy = lab_policy();
        policy.tunnel = TunnelMode::Split {
            routes: vec![
                Route::via_tunnel(Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(255, 255, 0, 0)),
                Route::via_tunnel(
                    Ipv4Addr::new(172, 16, 5, 0),
                    Ipv4Addr::new(255, 255, 255, 0),
                ),
            ],
            routes_ipv6: vec![],
        };
        policy.dns_servers = vec![IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 1, 2])];
        policy.search_domains = vec!["corp.example".into(), "eu.corp.example".into()];
        policy.block_outside_dns = true;
        let config = policy.reply_for(&peer(STOCK_26), aes256(OfferSource::IvCiphers), 7);
        assert_eq!(
            wire(&config),
            "PUSH_REPLY,route 10.0.0.0 255.255.0.0,route 172.16.5.0 255.255.255.0,\
             dhcp-option DNS 10.0.0.2,dhcp-option DNS 10.0.1.2,\
             dhcp-option DOMAIN corp.example,dhcp-option DOMAIN-SEARCH eu.corp.example,\
             dns search-domains corp.example eu.corp.example,\
             dns server 0 address 10.0.0.2 10.0.1.2,\
             route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 120,\
             ifconfig 10.8.0.2 255.255.255.0,peer-id 7,cipher AES-256-GCM,\
             protocol-flags cc-exit tls-ekm,tun-mtu 1500"
        );
    }

    #[test]
    fn full_tunnel_for_a_24_windows_client() {
        let mut policy = lab_policy();
        policy.tunnel = TunnelMode::Full {
            bypass_dhcp: true,
            ipv6: false,
        };
        policy.dns_servers = vec![IpAddr::from([10, 0, 0, 2])];
        policy.block_outside_dns = true;
        let config = policy.reply_for(&peer(CLIENT_245), aes256(OfferSource::IvNcp), 4);
        assert_eq!(
            wire(&config),
            "PUSH_REPLY,redirect-gateway def1 bypass-dhcp,dhcp-option DNS 10.0.0.2,\
             block-outside-dns,route-gateway 10.8.0.1,topology subnet,ping 10,\
             ping-restart 120,ifconfig 10.8.0.2 255.255.255.0,peer-id 4,cipher AES-256-GCM"
        );
        assert!(!policy.features.uses_tls_ekm(&peer(CLIENT_245)));
    }

    #[test]
    fn a_25_client_gets_no_protocol_flags_and_no_dns_option() {
        let mut policy = lab_policy();
        policy.dns_servers = vec![IpAddr::from([10, 0, 0, 2])];
        policy.block_outside_dns = true;
        let config = policy.reply_for(&peer(CLIENT_25), aes256(OfferSource::IvCiphers), 1);
        assert_eq!(
            wire(&config),
            "PUSH_REPLY,dhcp-option DNS 10.0.0.2,route-gateway 10.8.0.1,topology subnet,\
             ping 10,ping-restart 120,ifconfig 10.8.0.2 255.255.255.0,peer-id 1,\
             cipher AES-256-GCM"
        );
    }

    #[test]
    fn tls_ekm_without_cc_exit_uses_key_derivation() {
        let client = peer("IV_PROTO=14\nIV_CIPHERS=AES-256-GCM\n");
        let config = lab_policy().reply_for(&client, aes256(OfferSource::IvCiphers), 0);
        assert!(config.key_derivation_tls_ekm);
        assert_eq!(config.protocol_flags, None);
        let mut without_ekm = lab_policy();
        without_ekm.features.tls_ekm = false;
        let config = without_ekm.reply_for(&client, aes256(OfferSource::IvCiphers), 0);
        assert!(!config.key_derivation_tls_ekm);
        let config = without_ekm.reply_for(&peer(STOCK_26), aes256(OfferSource::IvCiphers), 0);
        assert_eq!(
            config.protocol_flags,
            Some(ProtocolFlags {
                cc_exit: true,
                ..ProtocolFlags::default()
            })
        );
        without_ekm.features.cc_exit = false;
        let config = without_ekm.reply_for(&peer(STOCK_26), aes256(OfferSource::IvCiphers), 0);
        assert_eq!(config.protocol_flags, None);
    }

    #[test]
    fn legacy_client_without_ncp_or_data_v2() {
        let config = lab_policy().reply_for(
            &peer("IV_VER=2.3.18\n"),
            aes256(OfferSource::OptionsString),
            9,
        );
        assert_eq!(config.cipher, None);
        assert_eq!(config.peer_id, None);
        assert_eq!(config.tun_mtu, None);
    }

    #[test]
    fn tun_mtu_only_up_to_iv_mtu() {
        let mut policy = lab_policy();
        policy.tun_mtu = Some(1601);
        let config = policy.reply_for(&peer(STOCK_26), aes256(OfferSource::IvCiphers), 0);
        assert_eq!(config.tun_mtu, None);
        policy.tun_mtu = Some(1600);
        let config = policy.reply_for(&peer(STOCK_26), aes256(OfferSource::IvCiphers), 0);
        assert_eq!(config.tun_mtu, Some(1600));
    }

    #[test]
    fn ipv6_full_tunnel_and_auth_token() {
        let mut policy = lab_policy();
        policy.ipv6 = Some(IfconfigIpv6 {
            address: "fd00::1000".parse().unwrap(),
            prefix_len: 64,
            remote: Some("fd00::1".parse().unwrap()),
        });
        policy.tunnel = TunnelMode::Full {
            bypass_dhcp: false,
            ipv6: true,
        };
        policy.auth_token = Some(AuthToken {
            token: "SESS_ID_abc".into(),
            username_b64: Some("YWxpY2U=".into()),
        });
        let config = policy.reply_for(&peer(STOCK_26), aes256(OfferSource::IvCiphers), 2);
        let mut out = Vec::new();
        ControlMessage::PushReply {
            options: config.to_directives().unwrap(),
        }
        .emit(&mut out)
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("PUSH_REPLY,redirect-gateway def1 ipv6,route-gateway"));
        assert!(
            text.contains(",ifconfig 10.8.0.2 255.255.255.0,ifconfig-ipv6 fd00::1000/64 fd00::1,")
        );
        assert!(text.ends_with(",tun-mtu 1500,auth-token SESS_ID_abc,auth-token-user YWxpY2U=\0"));
    }
}
