//! Data-channel cipher negotiation (NCP, protocol doc §10.1): the first server cipher the
//! client offers, from IV_CIPHERS, else IV_NCP ≥ 2, else the options-string `cipher`.

use std::fmt;

use crate::data::Cipher;
use crate::key_method::{Directive, PeerInfo};

/// Ciphers a client with IV_NCP ≥ 2 but no IV_CIPHERS accepts (§10.1).
pub const IV_NCP_CIPHERS: [Cipher; 2] = [Cipher::Aes256Gcm, Cipher::Aes128Gcm];

/// Where the client's offer was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferSource {
    /// IV_CIPHERS in the peer-info (2.5 and later).
    IvCiphers,
    /// IV_NCP ≥ 2 without IV_CIPHERS (2.4): AES-256-GCM and AES-128-GCM.
    IvNcp,
    /// The `cipher` option of the client's options string (clients without NCP).
    OptionsString,
}

impl fmt::Display for OfferSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OfferSource::IvCiphers => "IV_CIPHERS",
            OfferSource::IvNcp => "IV_NCP",
            OfferSource::OptionsString => "options-string cipher",
        })
    }
}

/// The negotiated data-channel cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatedCipher {
    /// The cipher both sides use.
    pub cipher: Cipher,
    /// Where the client's offer came from.
    pub source: OfferSource,
}

impl NegotiatedCipher {
    /// Whether to push `cipher <NAME>`: only NCP-capable clients (IV_CIPHERS or IV_NCP)
    /// take a pushed cipher; the others already run their configured one.
    pub fn push_cipher(&self) -> bool {
        self.source != OfferSource::OptionsString
    }
}

/// No cipher both sides accept; the session answers with AUTH_FAILED.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NcpError {
    /// The client offered ciphers, none of which the server allows.
    #[error(
        "no common data cipher: server allows {server}, client offers {offered:?} ({offered_via})",
        server = join_names(.server)
    )]
    NoCommonCipher {
        /// The server's `data-ciphers`, in preference order.
        server: Vec<Cipher>,
        /// The client's offer as it sent it (unknown names included).
        offered: Vec<String>,
        /// Where the offer came from.
        offered_via: OfferSource,
    },
    /// The client sent no IV_CIPHERS, no IV_NCP ≥ 2 and no `cipher` in its options string.
    #[error(
        "client offers no data cipher: no IV_CIPHERS, no IV_NCP >= 2, no options-string cipher"
    )]
    NoClientOffer,
}

fn join_names(ciphers: &[Cipher]) -> String {
    ciphers
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(":")
}

/// The client's cipher offer and where it came from (§10.1 fallback order). `options` is
/// the client's parsed options string (key-method 2); only its `cipher` is read.
pub fn client_offer(
    peer_info: &PeerInfo,
    options: &[Directive],
) -> Option<(Vec<String>, OfferSource)> {
    if let Some(ciphers) = &peer_info.ciphers {
        return Some((ciphers.clone(), OfferSource::IvCiphers));
    }
    if peer_info.ncp.is_some_and(|ncp| ncp >= 2) {
        let names = IV_NCP_CIPHERS.iter().map(|c| c.name().to_owned()).collect();
        return Some((names, OfferSource::IvNcp));
    }
    options
        .iter()
        .rev()
        .find(|d| d.name == "cipher")
        .and_then(|d| d.args.first())
        .map(|name| (vec![name.clone()], OfferSource::OptionsString))
}

/// Chooses the data cipher: the first of `server` (the configured `data-ciphers`, in
/// preference order) that the client offers. Names compare ignoring ASCII case; offered
/// names we do not implement are skipped.
pub fn negotiate_cipher(
    server: &[Cipher],
    peer_info: &PeerInfo,
    options: &[Directive],
) -> Result<NegotiatedCipher, NcpError> {
    let (offered, source) = client_offer(peer_info, options).ok_or(NcpError::NoClientOffer)?;
    let known: Vec<Cipher> = offered.iter().filter_map(|n| n.parse().ok()).collect();
    server
        .iter()
        .copied()
        .find(|c| known.contains(c))
        .map(|cipher| NegotiatedCipher { cipher, source })
        .ok_or_else(|| NcpError::NoCommonCipher {
            server: server.to_vec(),
            offered,
            offered_via: source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_method::parse_option_list;

    const ALL: [Cipher; 3] = [
        Cipher::Aes256Gcm,
        Cipher::Aes128Gcm,
        Cipher::ChaCha20Poly1305,
    ];

    fn peer(text: &str) -> PeerInfo {
        PeerInfo::parse(text).unwrap()
    }

    fn options(text: &str) -> Vec<Directive> {
        parse_option_list(text).unwrap()
    }

    struct Case {
        name: &'static str,
        server: &'static [Cipher],
        peer_info: &'static str,
        options: &'static str,
        expected: Result<(Cipher, OfferSource), ()>,
    }

    #[test]
    fn ncp_table() {
        use Cipher::*;
        use OfferSource::*;
        let stock_26 = "IV_VER=2.6.14\nIV_NCP=2\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\n";
        let cases = [
            Case {
                name: "2.6 client, server preference wins",
                server: &ALL,
                peer_info: stock_26,
                options: "V4,cipher AES-256-GCM",
                expected: Ok((Aes256Gcm, IvCiphers)),
            },
            Case {
                name: "server order, not client order",
                server: &[ChaCha20Poly1305, Aes256Gcm],
                peer_info: stock_26,
                options: "",
                expected: Ok((ChaCha20Poly1305, IvCiphers)),
            },
            Case {
                name: "client lacks the server's first choice",
                server: &[ChaCha20Poly1305, Aes128Gcm],
                peer_info: "IV_CIPHERS=AES-256-GCM:AES-128-GCM\n",
                options: "",
                expected: Ok((Aes128Gcm, IvCiphers)),
            },
            Case {
                name: "unknown and lower-case names in IV_CIPHERS",
                server: &[Aes128Gcm],
                peer_info: "IV_CIPHERS=BF-CBC:aes-128-gcm\n",
                options: "",
                expected: Ok((Aes128Gcm, IvCiphers)),
            },
            Case {
                name: "IV_CIPHERS wins over IV_NCP and the options string",
                server: &[Aes256Gcm, ChaCha20Poly1305],
                peer_info: "IV_NCP=2\nIV_CIPHERS=CHACHA20-POLY1305\n",
                options: "V4,cipher AES-256-GCM",
                expected: Ok((ChaCha20Poly1305, IvCiphers)),
            },
            Case {
                name: "IV_CIPHERS without overlap does not fall back",
                server: &[Aes256Gcm],
                peer_info: "IV_NCP=2\nIV_CIPHERS=CHACHA20-POLY1305\n",
                options: "V4,cipher AES-256-GCM",
                expected: Err(()),
            },
            Case {
                name: "2.4 client: IV_NCP=2 means AES-256-GCM and AES-128-GCM",
                server: &ALL,
                peer_info: "IV_VER=2.4.5\nIV_NCP=2\nIV_PROTO=2\n",
                options: "V4,cipher BF-CBC",
                expected: Ok((Aes256Gcm, IvNcp)),
            },
            Case {
                name: "IV_NCP=2 with a ChaCha-first server",
                server: &[ChaCha20Poly1305, Aes128Gcm],
                peer_info: "IV_NCP=2\n",
                options: "",
                expected: Ok((Aes128Gcm, IvNcp)),
            },
            Case {
                name: "IV_NCP=2 with a ChaCha-only server",
                server: &[ChaCha20Poly1305],
                peer_info: "IV_NCP=2\n",
                options: "V4,cipher CHACHA20-POLY1305",
                expected: Err(()),
            },
            Case {
                name: "IV_NCP=1 falls back to the options string",
                server: &ALL,
                peer_info: "IV_NCP=1\n",
                options: "V4,dev-type tun,cipher AES-128-GCM,auth [null-digest]",
                expected: Ok((Aes128Gcm, OptionsString)),
            },
            Case {
                name: "no peer-info at all: options string",
                server: &ALL,
                peer_info: "",
                options: "V4,cipher CHACHA20-POLY1305",
                expected: Ok((ChaCha20Poly1305, OptionsString)),
            },
            Case {
                name: "options string cipher the server does not allow",
                server: &[Aes256Gcm],
                peer_info: "",
                options: "V4,cipher AES-128-GCM",
                expected: Err(()),
            },
            Case {
                name: "options string with a CBC cipher",
                server: &ALL,
                peer_info: "IV_VER=2.3.18\n",
                options: "V4,cipher BF-CBC",
                expected: Err(()),
            },
            Case {
                name: "empty server list",
                server: &[],
                peer_info: stock_26,
                options: "",
                expected: Err(()),
            },
        ];
        for case in cases {
            let result =
                negotiate_cipher(case.server, &peer(case.peer_info), &options(case.options));
            match (result, case.expected) {
                (Ok(got), Ok((cipher, source))) => {
                    assert_eq!(got, NegotiatedCipher { cipher, source }, "{}", case.name);
                    assert_eq!(got.push_cipher(), source != OptionsString, "{}", case.name);
                }
                (Err(NcpError::NoCommonCipher { server, .. }), Err(())) => {
                    assert_eq!(server, case.server, "{}", case.name)
                }
                (got, expected) => panic!("{}: got {got:?}, expected {expected:?}", case.name),
            }
        }
    }

    #[test]
    fn no_offer_at_all() {
        let result = negotiate_cipher(
            &ALL,
            &peer("IV_VER=2.3\nIV_NCP=0\n"),
            &options("V4,dev-type tun"),
        );
        assert_eq!(result, Err(NcpError::NoClientOffer));
    }

    #[test]
    fn no_common_cipher_names_both_sides() {
        let err = negotiate_cipher(
            &[Cipher::Aes256Gcm],
            &peer("IV_CIPHERS=CHACHA20-POLY1305:BF-CBC\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err,
            NcpError::NoCommonCipher {
                server: vec![Cipher::Aes256Gcm],
                offered: vec!["CHACHA20-POLY1305".to_owned(), "BF-CBC".to_owned()],
                offered_via: OfferSource::IvCiphers,
            }
        );
        assert_eq!(
            err.to_string(),
            "no common data cipher: server allows AES-256-GCM, client offers \
             [\"CHACHA20-POLY1305\", \"BF-CBC\"] (IV_CIPHERS)"
        );
    }
}
