//! Peer-info (`NAME=value` lines a client sends in key-method 2, protocol doc §7.3)
//! and the IV_PROTO flags in it.

/// The IV_PROTO bit field (§7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProtoFlags(pub u32);

impl ProtoFlags {
    /// Accepts P_DATA_V2 and a pushed `peer-id`.
    pub const DATA_V2: u32 = 1 << 1;
    /// PUSH_REPLY may be sent without waiting for PUSH_REQUEST.
    pub const REQUEST_PUSH: u32 = 1 << 2;
    /// Can derive data keys with the TLS exporter.
    pub const TLS_KEY_EXPORT: u32 = 1 << 3;
    /// Understands `AUTH_PENDING,timeout N`.
    pub const AUTH_PENDING_KW: u32 = 1 << 4;
    /// P2P-mode peer that does not take pushed ciphers.
    pub const NCP_P2P: u32 = 1 << 5;
    /// Understands the 2.6 `dns` option.
    pub const DNS_OPTION: u32 = 1 << 6;
    /// Sends EXIT on the control channel; understands `protocol-flags`.
    pub const CC_EXIT_NOTIFY: u32 = 1 << 7;
    /// Understands `AUTH_FAILED,TEMP`.
    pub const AUTH_FAIL_TEMP: u32 = 1 << 8;
    /// Dynamic tls-crypt for renegotiations.
    pub const DYN_TLS_CRYPT: u32 = 1 << 9;
    /// Epoch data format (2.7+).
    pub const DATA_EPOCH: u32 = 1 << 10;
    /// 2.7 `dns` option generation.
    pub const DNS_OPTION_V2: u32 = 1 << 11;
    /// PUSH_UPDATE (2.7+).
    pub const PUSH_UPDATE: u32 = 1 << 12;

    /// Whether every bit of `flags` is set.
    pub fn contains(self, flags: u32) -> bool {
        self.0 & flags == flags
    }
}

/// Peer-info (`NAME=value` lines) split into the keys the server acts on; the rest is kept
/// in order. Known keys are at most once each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// IV_VER, e.g. `2.6.14`.
    pub version: Option<String>,
    /// IV_PLAT, e.g. `linux`, `win`, `mac`.
    pub platform: Option<String>,
    /// IV_PROTO.
    pub proto: Option<ProtoFlags>,
    /// IV_CIPHERS, split on `:`.
    pub ciphers: Option<Vec<String>>,
    /// IV_NCP (legacy; `2` = AES-256-GCM and AES-128-GCM).
    pub ncp: Option<u32>,
    /// IV_MTU: largest `tun-mtu` that may be pushed.
    pub mtu: Option<u32>,
    /// IV_GUI_VER.
    pub gui_version: Option<String>,
    /// IV_SSO, split on `,` (e.g. `webauth`, `crtext`).
    pub sso: Option<Vec<String>>,
    /// `UV_*` user variables, name with prefix, in received order.
    pub user_vars: Vec<(String, String)>,
    /// Every other `NAME=value`, in received order.
    pub other: Vec<(String, String)>,
}

/// Why a peer-info block was refused; line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerInfoError {
    /// A non-empty line without `=`.
    #[error("peer-info line {line}: expected NAME=value, found no `=`")]
    MissingEquals {
        /// Line number.
        line: usize,
    },
    /// A line starting with `=`.
    #[error("peer-info line {line}: empty name before `=`")]
    EmptyName {
        /// Line number.
        line: usize,
    },
    /// A known key given twice.
    #[error("peer-info line {line}: {name} given twice")]
    Duplicate {
        /// Line number of the repeat.
        line: usize,
        /// The key.
        name: &'static str,
    },
    /// A numeric key whose value is not a decimal `u32`.
    #[error("peer-info line {line}: {name} must be a decimal number")]
    InvalidNumber {
        /// Line number.
        line: usize,
        /// The key.
        name: &'static str,
    },
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    line: usize,
    name: &'static str,
) -> Result<(), PeerInfoError> {
    if slot.is_some() {
        return Err(PeerInfoError::Duplicate { line, name });
    }
    *slot = Some(value);
    Ok(())
}

fn number(value: &str, line: usize, name: &'static str) -> Result<u32, PeerInfoError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PeerInfoError::InvalidNumber { line, name });
    }
    value
        .parse()
        .map_err(|_| PeerInfoError::InvalidNumber { line, name })
}

fn split_list(value: &str, separator: char) -> Vec<String> {
    value
        .split(separator)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

impl PeerInfo {
    /// Whether the peer announced every bit of `flags` in IV_PROTO (`false` without
    /// IV_PROTO).
    pub fn has_proto(&self, flags: u32) -> bool {
        self.proto.is_some_and(|p| p.contains(flags))
    }

    /// Parses `NAME=value` lines separated by `\n`; empty lines are skipped. The value is
    /// everything after the first `=`, kept byte for byte.
    pub fn parse(text: &str) -> Result<Self, PeerInfoError> {
        let mut info = PeerInfo::default();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            if raw.is_empty() {
                continue;
            }
            let (name, value) = raw
                .split_once('=')
                .ok_or(PeerInfoError::MissingEquals { line })?;
            if name.is_empty() {
                return Err(PeerInfoError::EmptyName { line });
            }
            match name {
                "IV_VER" => set_once(&mut info.version, value.to_owned(), line, "IV_VER")?,
                "IV_PLAT" => set_once(&mut info.platform, value.to_owned(), line, "IV_PLAT")?,
                "IV_PROTO" => {
                    let flags = ProtoFlags(number(value, line, "IV_PROTO")?);
                    set_once(&mut info.proto, flags, line, "IV_PROTO")?;
                }
                "IV_CIPHERS" => set_once(
                    &mut info.ciphers,
                    split_list(value, ':'),
                    line,
                    "IV_CIPHERS",
                )?,
                "IV_NCP" => set_once(
                    &mut info.ncp,
                    number(value, line, "IV_NCP")?,
                    line,
                    "IV_NCP",
                )?,
                "IV_MTU" => set_once(
                    &mut info.mtu,
                    number(value, line, "IV_MTU")?,
                    line,
                    "IV_MTU",
                )?,
                "IV_GUI_VER" => {
                    set_once(&mut info.gui_version, value.to_owned(), line, "IV_GUI_VER")?
                }
                "IV_SSO" => set_once(&mut info.sso, split_list(value, ','), line, "IV_SSO")?,
                _ if name.starts_with("UV_") => {
                    info.user_vars.push((name.to_owned(), value.to_owned()))
                }
                _ => info.other.push((name.to_owned(), value.to_owned())),
            }
        }
        Ok(info)
    }

    /// Peer-info text, one `NAME=value\n` line per entry: known keys first, then the user
    /// variables, then the other entries. Names and values must not contain `\n` (parsed
    /// ones never do).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: &str| {
            out.push_str(name);
            out.push('=');
            out.push_str(value);
            out.push('\n');
        };
        if let Some(v) = &self.version {
            line("IV_VER", v);
        }
        if let Some(v) = &self.platform {
            line("IV_PLAT", v);
        }
        if let Some(v) = self.proto {
            line("IV_PROTO", &v.0.to_string());
        }
        if let Some(v) = &self.ciphers {
            line("IV_CIPHERS", &v.join(":"));
        }
        if let Some(v) = self.ncp {
            line("IV_NCP", &v.to_string());
        }
        if let Some(v) = self.mtu {
            line("IV_MTU", &v.to_string());
        }
        if let Some(v) = &self.gui_version {
            line("IV_GUI_VER", v);
        }
        if let Some(v) = &self.sso {
            line("IV_SSO", &v.join(","));
        }
        for (name, value) in self.user_vars.iter().chain(&self.other) {
            line(name, value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAB_PEER_INFO: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n";

    #[test]
    fn peer_info_lab_client() {
        let info = PeerInfo::parse(LAB_PEER_INFO).unwrap();
        assert_eq!(info.version.as_deref(), Some("2.6.14"));
        assert_eq!(info.platform.as_deref(), Some("linux"));
        assert_eq!(info.mtu, Some(1600));
        assert_eq!(info.ncp, Some(2));
        assert_eq!(
            info.ciphers,
            Some(vec![
                "AES-256-GCM".to_owned(),
                "AES-128-GCM".to_owned(),
                "CHACHA20-POLY1305".to_owned()
            ])
        );
        let proto = info.proto.unwrap();
        assert_eq!(proto, ProtoFlags(990));
        for bit in [
            ProtoFlags::DATA_V2,
            ProtoFlags::REQUEST_PUSH,
            ProtoFlags::TLS_KEY_EXPORT,
            ProtoFlags::AUTH_PENDING_KW,
            ProtoFlags::DNS_OPTION,
            ProtoFlags::CC_EXIT_NOTIFY,
            ProtoFlags::AUTH_FAIL_TEMP,
            ProtoFlags::DYN_TLS_CRYPT,
        ] {
            assert!(proto.contains(bit), "{bit}");
        }
        assert!(!proto.contains(ProtoFlags::NCP_P2P));
        assert!(!proto.contains(ProtoFlags::DATA_EPOCH));
        assert!(!proto.contains(ProtoFlags::DATA_V2 | ProtoFlags::NCP_P2P));
        assert!(info.has_proto(ProtoFlags::DATA_V2 | ProtoFlags::CC_EXIT_NOTIFY));
        assert!(!info.has_proto(ProtoFlags::NCP_P2P));
        assert!(!PeerInfo::default().has_proto(ProtoFlags::DATA_V2));
        assert_eq!(info.other.len(), 4);
        assert_eq!(info.other[0], ("IV_TCPNL".to_owned(), "1".to_owned()));
        assert!(info.user_vars.is_empty() && info.gui_version.is_none() && info.sso.is_none());
    }

    #[test]
    fn proto_flag_values_match_the_table() {
        assert_eq!(
            [
                ProtoFlags::DATA_V2,
                ProtoFlags::REQUEST_PUSH,
                ProtoFlags::TLS_KEY_EXPORT,
                ProtoFlags::AUTH_PENDING_KW,
                ProtoFlags::NCP_P2P,
                ProtoFlags::DNS_OPTION,
                ProtoFlags::CC_EXIT_NOTIFY,
                ProtoFlags::AUTH_FAIL_TEMP,
                ProtoFlags::DYN_TLS_CRYPT,
                ProtoFlags::DATA_EPOCH,
                ProtoFlags::DNS_OPTION_V2,
                ProtoFlags::PUSH_UPDATE
            ],
            [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        );
    }

    #[test]
    fn peer_info_gui_sso_user_vars_and_odd_values() {
        let info = PeerInfo::parse(
            "IV_GUI_VER=OpenVPN_GUI_11\nUV_DEPT=a=b\n\nIV_SSO=webauth,crtext\nUV_X=\nIV_CIPHERS=\nX_NEW=1",
        )
        .unwrap();
        assert_eq!(info.gui_version.as_deref(), Some("OpenVPN_GUI_11"));
        assert_eq!(
            info.user_vars,
            vec![
                ("UV_DEPT".to_owned(), "a=b".to_owned()),
                ("UV_X".to_owned(), String::new())
            ]
        );
        assert_eq!(
            info.sso,
            Some(vec!["webauth".to_owned(), "crtext".to_owned()])
        );
        assert_eq!(info.ciphers, Some(vec![]));
        assert_eq!(info.other, vec![("X_NEW".to_owned(), "1".to_owned())]);
        assert_eq!(PeerInfo::parse(""), Ok(PeerInfo::default()));
    }

    #[test]
    fn peer_info_errors() {
        assert_eq!(
            PeerInfo::parse("IV_VER=1\nbogus\n"),
            Err(PeerInfoError::MissingEquals { line: 2 })
        );
        assert_eq!(
            PeerInfo::parse("=x"),
            Err(PeerInfoError::EmptyName { line: 1 })
        );
        assert_eq!(
            PeerInfo::parse("IV_PLAT=linux\nIV_PLAT=win"),
            Err(PeerInfoError::Duplicate {
                line: 2,
                name: "IV_PLAT"
            })
        );
        for bad in ["", "abc", "+5", "-1", " 6", "4294967296"] {
            assert_eq!(
                PeerInfo::parse(&format!("IV_PROTO={bad}")),
                Err(PeerInfoError::InvalidNumber {
                    line: 1,
                    name: "IV_PROTO"
                }),
                "{bad:?}"
            );
        }
        assert_eq!(
            PeerInfo::parse("IV_MTU=1e3"),
            Err(PeerInfoError::InvalidNumber {
                line: 1,
                name: "IV_MTU"
            })
        );
        assert_eq!(
            PeerInfo::parse("IV_NCP=x"),
            Err(PeerInfoError::InvalidNumber {
                line: 1,
                name: "IV_NCP"
            })
        );
    }

    proptest! {
        #[test]
        fn peer_info_round_trip(
            version in proptest::option::of("[A-Za-z0-9._-]{0,10}"),
            platform in proptest::option::of("[a-z]{0,8}"),
            proto in proptest::option::of(any::<u32>()),
            ciphers in proptest::option::of(prop::collection::vec("[A-Z0-9-]{1,20}", 0..4)),
            ncp in proptest::option::of(any::<u32>()),
            mtu in proptest::option::of(any::<u32>()),
            gui_version in proptest::option::of("[^\n\r]{0,10}"),
            sso in proptest::option::of(prop::collection::vec("[a-z]{1,8}", 0..3)),
            user_vars in prop::collection::vec(("UV_[A-Z]{0,6}", "[^\n]{0,10}"), 0..3),
            other in prop::collection::vec(("[A-Z][A-Za-z_]{0,8}", "[^\n]{0,10}"), 0..3),
        ) {
            let other: Vec<(String, String)> = other
                .into_iter()
                .filter(|(k, _)| !k.starts_with("IV_") && !k.starts_with("UV_"))
                .collect();
            let info = PeerInfo { version, platform, proto: proto.map(ProtoFlags), ciphers, ncp, mtu, gui_version, sso, user_vars, other };
            prop_assert_eq!(PeerInfo::parse(&info.to_text()), Ok(info));
        }

        #[test]
        fn peer_info_parse_never_panics(text in "\\PC{0,200}") {
            let _ = PeerInfo::parse(&text);
        }
    }
}
