//! Text messages on the control channel after key-method 2 (protocol doc §10.3, §11, §13):
//! NUL-terminated ASCII keywords with comma-separated arguments, one per TLS record.

use super::auth::{auth_failed_text, info_text, parse_auth_failed, parse_info};
use super::{Advance, AuthFailure, InfoPayload};
use crate::key_method::{
    Directive, OptionError, PeerInfo, ProtoFlags, emit_option_list, parse_option_list,
};

/// Largest text message on the wire, NUL included: stock clients read one record into a
/// 2048-byte buffer (§6, §14).
pub const MAX_CONTROL_MESSAGE_LEN: usize = 2048;
/// Largest INFO_PRE message on the wire, NUL included (§10.3, §13).
pub const MAX_INFO_PRE_LEN: usize = 1024;

/// A parsed control-channel text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// `PUSH_REQUEST` (C→S): the client asks for its configuration.
    PushRequest,
    /// `PUSH_REPLY[,opt,…]` (S→C), options as sent (including `push-continuation`).
    PushReply {
        /// The options.
        options: Vec<Directive>,
    },
    /// `AUTH_FAILED[,…]` (S→C), instead of PUSH_REPLY.
    AuthFailed(AuthFailure),
    /// `AUTH_PENDING[,timeout N]` (S→C): out-of-band authentication running.
    AuthPending {
        /// Seconds the client should wait (keyword needs IV_PROTO bit 4).
        timeout: Option<u32>,
    },
    /// `INFO_PRE,<payload>` (S→C): pending-auth detail.
    InfoPre(InfoPayload),
    /// `INFO,<payload>` (S→C): informational.
    Info(InfoPayload),
    /// `CR_RESPONSE,<base64>` (C→S): answer to a `CR_TEXT` challenge.
    CrResponse {
        /// The base64 answer, as sent.
        response: String,
    },
    /// `RESTART[,[flags]<message>]` (S→C): reconnect.
    Restart {
        /// Bracketed flags.
        flags: RestartFlags,
        /// Text shown to the user (may be empty).
        message: String,
    },
    /// `HALT[,<message>]` (S→C): stop for good.
    Halt {
        /// Text shown to the user (may be empty).
        message: String,
    },
    /// `EXIT` (C→S): the client is leaving (`protocol-flags cc-exit`).
    Exit,
    /// A message with a keyword this module does not know, kept whole.
    Unknown {
        /// The message text without the NUL.
        text: String,
    },
}

/// Bracketed flags of RESTART.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartFlags {
    /// `P`: keep the credentials (and auth-token) for the reconnect.
    pub keep_credentials: bool,
    /// `N`: go to the next server.
    pub next_server: bool,
}

/// Why a text message could not be parsed or emitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The message is longer than allowed (lengths include the NUL).
    #[error("control message: {len} bytes with NUL, at most {max} allowed")]
    TooLong {
        /// Length on the wire.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No text (only a NUL, or nothing).
    #[error("control message: empty")]
    Empty,
    /// A NUL before the last byte.
    #[error("control message: NUL at byte {offset} before the end")]
    InteriorNul {
        /// Offset of the NUL.
        offset: usize,
    },
    /// The text is not UTF-8.
    #[error("control message: not valid UTF-8")]
    InvalidUtf8,
    /// A known keyword with arguments that do not fit its grammar.
    #[error("control message {keyword}: expected {expected}, found {found:?}")]
    Malformed {
        /// The keyword (and form).
        keyword: &'static str,
        /// What should follow it.
        expected: &'static str,
        /// The text after the keyword.
        found: String,
    },
    /// A value the message cannot carry without being read back differently.
    #[error("control message {keyword}: cannot send {problem}")]
    Unencodable {
        /// The keyword.
        keyword: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// PUSH_REPLY options that do not split into words or cannot be written.
    #[error("control message PUSH_REPLY: {0}")]
    Options(#[from] OptionError),
}

const KEYWORDS: [&str; 10] = [
    "PUSH_REQUEST",
    "PUSH_REPLY",
    "AUTH_FAILED",
    "AUTH_PENDING",
    "INFO_PRE",
    "INFO",
    "CR_RESPONSE",
    "RESTART",
    "HALT",
    "EXIT",
];

/// Finds the first complete message in received plaintext (TLS records are not visible,
/// so messages are delimited by their NUL). Returns the message without its NUL and the
/// bytes consumed, `None` if no NUL has arrived yet, or an error once more than
/// [`MAX_CONTROL_MESSAGE_LEN`] bytes arrived without a NUL.
pub fn take_message(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ControlError> {
    let window = buf.get(..MAX_CONTROL_MESSAGE_LEN).unwrap_or(buf);
    match window.iter().position(|&b| b == 0) {
        Some(nul) => Ok(window.get(..nul).map(|message| (message, nul + 1))),
        None if buf.len() >= MAX_CONTROL_MESSAGE_LEN => Err(ControlError::TooLong {
            len: buf.len(),
            max: MAX_CONTROL_MESSAGE_LEN,
        }),
        None => Ok(None),
    }
}

pub(super) fn malformed(
    keyword: &'static str,
    expected: &'static str,
    found: &str,
) -> ControlError {
    ControlError::Malformed {
        keyword,
        expected,
        found: found.to_owned(),
    }
}

pub(super) fn unencodable(keyword: &'static str, problem: &'static str) -> ControlError {
    ControlError::Unencodable { keyword, problem }
}

pub(super) fn decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl ControlMessage {
    /// Parses one message: its text, optionally followed by the terminating NUL. Unknown
    /// keywords give [`ControlMessage::Unknown`]; a keyword matches only whole (followed
    /// by `,` or the end).
    pub fn parse(bytes: &[u8]) -> Result<Self, ControlError> {
        let body = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        if body.len() + 1 > MAX_CONTROL_MESSAGE_LEN {
            return Err(ControlError::TooLong {
                len: body.len() + 1,
                max: MAX_CONTROL_MESSAGE_LEN,
            });
        }
        if let Some(offset) = body.iter().position(|&b| b == 0) {
            return Err(ControlError::InteriorNul { offset });
        }
        if body.is_empty() {
            return Err(ControlError::Empty);
        }
        let text = std::str::from_utf8(body).map_err(|_| ControlError::InvalidUtf8)?;
        let (keyword, rest) = match text.split_once(',') {
            Some((keyword, rest)) => (keyword, Some(rest)),
            None => (text, None),
        };
        Ok(match (keyword, rest) {
            ("PUSH_REQUEST", None) => ControlMessage::PushRequest,
            ("PUSH_REQUEST", Some(r)) => return Err(malformed("PUSH_REQUEST", "nothing", r)),
            ("PUSH_REPLY", rest) => ControlMessage::PushReply {
                options: parse_option_list(rest.unwrap_or(""))?,
            },
            ("AUTH_FAILED", None) => {
                ControlMessage::AuthFailed(AuthFailure::Plain { reason: None })
            }
            ("AUTH_FAILED", Some(r)) => ControlMessage::AuthFailed(parse_auth_failed(r)?),
            ("AUTH_PENDING", None) => ControlMessage::AuthPending { timeout: None },
            ("AUTH_PENDING", Some(r)) => {
                let timeout = r
                    .strip_prefix("timeout ")
                    .and_then(decimal)
                    .ok_or_else(|| malformed("AUTH_PENDING", "`timeout <seconds>`", r))?;
                ControlMessage::AuthPending {
                    timeout: Some(timeout),
                }
            }
            ("INFO_PRE", Some(r)) => ControlMessage::InfoPre(parse_info("INFO_PRE", r)?),
            ("INFO", Some(r)) => ControlMessage::Info(parse_info("INFO", r)?),
            ("INFO_PRE", None) => return Err(malformed("INFO_PRE", "`,<payload>`", "")),
            ("INFO", None) => return Err(malformed("INFO", "`,<payload>`", "")),
            ("CR_RESPONSE", Some(r)) => ControlMessage::CrResponse {
                response: r.to_owned(),
            },
            ("CR_RESPONSE", None) => return Err(malformed("CR_RESPONSE", "`,<base64>`", "")),
            ("RESTART", rest) => parse_restart(rest.unwrap_or(""))?,
            ("HALT", rest) => ControlMessage::Halt {
                message: rest.unwrap_or("").to_owned(),
            },
            ("EXIT", None) => ControlMessage::Exit,
            ("EXIT", Some(r)) => return Err(malformed("EXIT", "nothing", r)),
            _ => ControlMessage::Unknown {
                text: text.to_owned(),
            },
        })
    }

    /// Appends the message and its NUL to `out`. Fails, leaving `out` as it was, on text
    /// that would read back differently (a NUL, a `:` inside a colon-delimited field, a
    /// free-text field that starts like a structured form) or on a message longer than
    /// [`MAX_CONTROL_MESSAGE_LEN`] ([`MAX_INFO_PRE_LEN`] for INFO_PRE).
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), ControlError> {
        let text = self.to_text()?;
        if let Some(offset) = text.bytes().position(|b| b == 0) {
            return Err(ControlError::InteriorNul { offset });
        }
        let max = match self {
            ControlMessage::InfoPre(_) => MAX_INFO_PRE_LEN,
            _ => MAX_CONTROL_MESSAGE_LEN,
        };
        let len = text.len() + 1;
        if len > max {
            return Err(ControlError::TooLong { len, max });
        }
        out.extend_from_slice(text.as_bytes());
        out.push(0);
        Ok(())
    }

    fn to_text(&self) -> Result<String, ControlError> {
        Ok(match self {
            ControlMessage::PushRequest => "PUSH_REQUEST".to_owned(),
            ControlMessage::PushReply { options } if options.is_empty() => "PUSH_REPLY".to_owned(),
            ControlMessage::PushReply { options } => {
                format!("PUSH_REPLY,{}", emit_option_list(options)?)
            }
            ControlMessage::AuthFailed(failure) => auth_failed_text(failure)?,
            ControlMessage::AuthPending { timeout: None } => "AUTH_PENDING".to_owned(),
            ControlMessage::AuthPending { timeout: Some(t) } => {
                format!("AUTH_PENDING,timeout {t}")
            }
            ControlMessage::InfoPre(payload) => format!("INFO_PRE,{}", info_text(payload)?),
            ControlMessage::Info(payload) => format!("INFO,{}", info_text(payload)?),
            ControlMessage::CrResponse { response } => format!("CR_RESPONSE,{response}"),
            ControlMessage::Restart { flags, message } => {
                let mut text = "RESTART".to_owned();
                let letters = [(flags.keep_credentials, 'P'), (flags.next_server, 'N')];
                let any_flag = letters.iter().any(|(on, _)| *on);
                if any_flag || message.starts_with('[') {
                    text.push_str(",[");
                    text.extend(letters.iter().filter(|(on, _)| *on).map(|(_, c)| c));
                    text.push(']');
                    text.push_str(message);
                } else if !message.is_empty() {
                    text.push(',');
                    text.push_str(message);
                }
                text
            }
            ControlMessage::Halt { message } if message.is_empty() => "HALT".to_owned(),
            ControlMessage::Halt { message } => format!("HALT,{message}"),
            ControlMessage::Exit => "EXIT".to_owned(),
            ControlMessage::Unknown { text } => {
                let keyword = text.split(',').next().unwrap_or("");
                if keyword.is_empty() || KEYWORDS.contains(&keyword) {
                    return Err(unencodable("Unknown", "an empty or known keyword"));
                }
                text.clone()
            }
        })
    }

    /// AUTH_PENDING for `peer`: with `timeout N` only if it announced the keyword
    /// (IV_PROTO bit 4).
    pub fn auth_pending_for(peer: &PeerInfo, timeout_secs: u32) -> Self {
        let keyword = peer.has_proto(ProtoFlags::AUTH_PENDING_KW);
        ControlMessage::AuthPending {
            timeout: keyword.then_some(timeout_secs),
        }
    }

    /// A retryable AUTH_FAILED for `peer`: the TEMP form if it understands it (IV_PROTO
    /// bit 8), else the plain form with `message` as reason.
    pub fn auth_failed_temp_for(
        peer: &PeerInfo,
        backoff: Option<u32>,
        advance: Option<Advance>,
        message: &str,
    ) -> Self {
        let temp = peer.has_proto(ProtoFlags::AUTH_FAIL_TEMP);
        ControlMessage::AuthFailed(if temp {
            AuthFailure::Temp {
                backoff,
                advance,
                message: message.to_owned(),
            }
        } else {
            AuthFailure::Plain {
                reason: Some(message.to_owned()),
            }
        })
    }
}

fn parse_restart(rest: &str) -> Result<ControlMessage, ControlError> {
    const EXPECTED: &str = "[P|N…]<message> or <message>";
    let mut flags = RestartFlags::default();
    let message = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (letters, message) = bracketed
                .split_once(']')
                .ok_or_else(|| malformed("RESTART", EXPECTED, rest))?;
            for letter in letters.chars() {
                match letter {
                    'P' => flags.keep_credentials = true,
                    'N' => flags.next_server = true,
                    _ => return Err(malformed("RESTART", EXPECTED, rest)),
                }
            }
            message
        }
        None => rest,
    };
    Ok(ControlMessage::Restart {
        flags,
        message: message.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::DynamicChallenge;
    use crate::push::auth::looks_structured;
    use crate::push::testing::{other_directive, word};
    use proptest::prelude::*;

    fn emitted(message: &ControlMessage) -> Vec<u8> {
        let mut out = Vec::new();
        message.emit(&mut out).unwrap();
        out
    }

    fn parse(text: &str) -> Result<ControlMessage, ControlError> {
        ControlMessage::parse(text.as_bytes())
    }

    #[test]
    fn doc_examples_parse_and_emit_verbatim() {
        let cases = [
            ("PUSH_REQUEST", ControlMessage::PushRequest),
            ("EXIT", ControlMessage::Exit),
            (
                "AUTH_FAILED",
                ControlMessage::AuthFailed(AuthFailure::Plain { reason: None }),
            ),
            (
                "AUTH_FAILED,user not authorized",
                ControlMessage::AuthFailed(AuthFailure::Plain {
                    reason: Some("user not authorized".into()),
                }),
            ),
            (
                "AUTH_FAILED,TEMP[backoff 30,advance no]:server busy",
                ControlMessage::AuthFailed(AuthFailure::Temp {
                    backoff: Some(30),
                    advance: Some(Advance::No),
                    message: "server busy".into(),
                }),
            ),
            (
                "AUTH_FAILED,TEMP:try again",
                ControlMessage::AuthFailed(AuthFailure::Temp {
                    backoff: None,
                    advance: None,
                    message: "try again".into(),
                }),
            ),
            (
                "AUTH_FAILED,SESSION: token expired",
                ControlMessage::AuthFailed(AuthFailure::Session {
                    message: " token expired".into(),
                }),
            ),
            (
                "AUTH_FAILED,CRV1:R:instance-1:Ti9B:https://idp.example/sso?SAMLRequest=abc%3D",
                ControlMessage::AuthFailed(AuthFailure::Challenge(DynamicChallenge {
                    flags: "R".into(),
                    state_id: "instance-1".into(),
                    username_b64: "Ti9B".into(),
                    text: "https://idp.example/sso?SAMLRequest=abc%3D".into(),
                })),
            ),
            (
                "AUTH_PENDING",
                ControlMessage::AuthPending { timeout: None },
            ),
            (
                "AUTH_PENDING,timeout 120",
                ControlMessage::AuthPending { timeout: Some(120) },
            ),
            (
                "INFO_PRE,WEB_AUTH::https://sso.example/auth?s=1",
                ControlMessage::InfoPre(InfoPayload::WebAuth {
                    flags: String::new(),
                    url: "https://sso.example/auth?s=1".into(),
                }),
            ),
            (
                "INFO_PRE,CR_TEXT:R,E:Enter your code",
                ControlMessage::InfoPre(InfoPayload::CrText {
                    flags: "R,E".into(),
                    text: "Enter your code".into(),
                }),
            ),
            (
                "INFO_PRE,OPEN_URL:https://sso.example/",
                ControlMessage::InfoPre(InfoPayload::OpenUrl {
                    url: "https://sso.example/".into(),
                }),
            ),
            (
                "INFO,Welcome, alice",
                ControlMessage::Info(InfoPayload::Text("Welcome, alice".into())),
            ),
            (
                "CR_RESPONSE,MTIzNDU2",
                ControlMessage::CrResponse {
                    response: "MTIzNDU2".into(),
                },
            ),
            (
                "RESTART",
                ControlMessage::Restart {
                    flags: RestartFlags::default(),
                    message: String::new(),
                },
            ),
            (
                "RESTART,server shutting down",
                ControlMessage::Restart {
                    flags: RestartFlags::default(),
                    message: "server shutting down".into(),
                },
            ),
            (
                "RESTART,[PN]maintenance",
                ControlMessage::Restart {
                    flags: RestartFlags {
                        keep_credentials: true,
                        next_server: true,
                    },
                    message: "maintenance".into(),
                },
            ),
            (
                "HALT",
                ControlMessage::Halt {
                    message: String::new(),
                },
            ),
            (
                "HALT,session expired",
                ControlMessage::Halt {
                    message: "session expired".into(),
                },
            ),
            (
                "PUSH_REPLY,ping 10,ping-restart 120",
                ControlMessage::PushReply {
                    options: vec![
                        Directive {
                            name: "ping".into(),
                            args: vec!["10".into()],
                        },
                        Directive {
                            name: "ping-restart".into(),
                            args: vec!["120".into()],
                        },
                    ],
                },
            ),
            (
                "ACC,stuff",
                ControlMessage::Unknown {
                    text: "ACC,stuff".into(),
                },
            ),
            (
                "PUSH_REQUESTED",
                ControlMessage::Unknown {
                    text: "PUSH_REQUESTED".into(),
                },
            ),
        ];
        for (text, message) in cases {
            assert_eq!(parse(text).as_ref(), Ok(&message), "{text}");
            let mut with_nul = text.as_bytes().to_vec();
            with_nul.push(0);
            assert_eq!(
                ControlMessage::parse(&with_nul).as_ref(),
                Ok(&message),
                "{text}"
            );
            assert_eq!(emitted(&message), with_nul, "{text}");
        }
    }

    #[test]
    fn lenient_forms_read_back_equal() {
        let pairs = [
            ("AUTH_FAILED,TEMP", "AUTH_FAILED,TEMP:"),
            ("RESTART,", "RESTART"),
            ("RESTART,[]", "RESTART"),
            ("HALT,", "HALT"),
            ("PUSH_REPLY,", "PUSH_REPLY"),
            ("PUSH_REPLY,,ping 1,", "PUSH_REPLY,ping 1"),
        ];
        for (received, canonical) in pairs {
            let message = parse(received).unwrap();
            assert_eq!(
                emitted(&message),
                format!("{canonical}\0").as_bytes(),
                "{received}"
            );
        }
    }

    #[test]
    fn restart_message_starting_with_a_bracket() {
        let message = ControlMessage::Restart {
            flags: RestartFlags::default(),
            message: "[maintenance] back soon".into(),
        };
        assert_eq!(emitted(&message), b"RESTART,[][maintenance] back soon\0");
        assert_eq!(parse("RESTART,[][maintenance] back soon"), Ok(message));
    }

    #[test]
    fn malformed_messages() {
        let cases: [(&[u8], ControlError); 8] = [
            (b"", ControlError::Empty),
            (b"\0", ControlError::Empty),
            (b"EXIT\0\0", ControlError::InteriorNul { offset: 4 }),
            (b"PUSH_\0REQUEST", ControlError::InteriorNul { offset: 5 }),
            (b"INFO,\xff\xfe", ControlError::InvalidUtf8),
            (
                b"AUTH_PENDING,timeout soon",
                malformed("AUTH_PENDING", "`timeout <seconds>`", "timeout soon"),
            ),
            (b"EXIT,now", malformed("EXIT", "nothing", "now")),
            (b"PUSH_REQUEST,x", malformed("PUSH_REQUEST", "nothing", "x")),
        ];
        for (bytes, error) in cases {
            assert_eq!(ControlMessage::parse(bytes), Err(error), "{bytes:?}");
        }
        let keyword_errors = [
            "AUTH_FAILED,CRV1:R:state:user",
            "AUTH_FAILED,TEMP[backoff x]:m",
            "AUTH_FAILED,TEMP[advance sideways]:m",
            "AUTH_FAILED,TEMP[backoff 1,backoff 2]:m",
            "AUTH_FAILED,TEMP[backoff 1:m",
            "AUTH_FAILED,TEMP[backoff 1]m",
            "AUTH_PENDING,",
            "AUTH_PENDING,timeout 120,extra",
            "INFO_PRE",
            "INFO",
            "INFO_PRE,WEB_AUTH:https",
            "INFO,CR_TEXT:no-second-colon",
            "CR_RESPONSE",
            "RESTART,[X]msg",
            "RESTART,[P",
        ];
        for text in keyword_errors {
            assert!(
                matches!(parse(text), Err(ControlError::Malformed { .. })),
                "{text}: {:?}",
                parse(text)
            );
        }
        assert!(matches!(
            parse("PUSH_REPLY,route \"10.0.0.0"),
            Err(ControlError::Options(_))
        ));
        assert_eq!(
            parse("AUTH_FAILED,TEMPORARY outage"),
            Ok(ControlMessage::AuthFailed(AuthFailure::Plain {
                reason: Some("TEMPORARY outage".into())
            }))
        );
    }

    #[test]
    fn length_bounds() {
        let mut longest = b"INFO,".to_vec();
        longest.resize(MAX_CONTROL_MESSAGE_LEN - 1, b'x');
        assert!(ControlMessage::parse(&longest).is_ok());
        longest.push(0);
        assert!(ControlMessage::parse(&longest).is_ok());
        longest.pop();
        longest.push(b'x');
        assert_eq!(
            ControlMessage::parse(&longest),
            Err(ControlError::TooLong {
                len: MAX_CONTROL_MESSAGE_LEN + 1,
                max: MAX_CONTROL_MESSAGE_LEN
            })
        );

        let info = |len: usize| InfoPayload::Text("x".repeat(len));
        let mut out = Vec::new();
        let fits = ControlMessage::Info(info(MAX_CONTROL_MESSAGE_LEN - 6));
        assert_eq!(fits.emit(&mut out), Ok(()));
        assert_eq!(out.len(), MAX_CONTROL_MESSAGE_LEN);
        let too_long = ControlMessage::Info(info(MAX_CONTROL_MESSAGE_LEN - 5));
        assert_eq!(
            too_long.emit(&mut out),
            Err(ControlError::TooLong {
                len: MAX_CONTROL_MESSAGE_LEN + 1,
                max: MAX_CONTROL_MESSAGE_LEN
            })
        );
        assert_eq!(out.len(), MAX_CONTROL_MESSAGE_LEN);
        let pre = |len: usize| ControlMessage::InfoPre(info(len));
        out.clear();
        assert_eq!(pre(MAX_INFO_PRE_LEN - 10).emit(&mut out), Ok(()));
        assert_eq!(out.len(), MAX_INFO_PRE_LEN);
        assert_eq!(
            pre(MAX_INFO_PRE_LEN - 9).emit(&mut out),
            Err(ControlError::TooLong {
                len: MAX_INFO_PRE_LEN + 1,
                max: MAX_INFO_PRE_LEN
            })
        );
    }

    #[test]
    fn ambiguous_values_are_not_emitted() {
        let cases = [
            ControlMessage::AuthFailed(AuthFailure::Plain {
                reason: Some("TEMP:x".into()),
            }),
            ControlMessage::AuthFailed(AuthFailure::Plain {
                reason: Some("TEMP".into()),
            }),
            ControlMessage::AuthFailed(AuthFailure::Plain {
                reason: Some("SESSION: x".into()),
            }),
            ControlMessage::AuthFailed(AuthFailure::Plain {
                reason: Some("CRV1:R:a:b:c".into()),
            }),
            ControlMessage::AuthFailed(AuthFailure::Challenge(DynamicChallenge {
                flags: "R".into(),
                state_id: "a:b".into(),
                username_b64: "dQ==".into(),
                text: "t".into(),
            })),
            ControlMessage::InfoPre(InfoPayload::WebAuth {
                flags: "a:b".into(),
                url: "https://x".into(),
            }),
            ControlMessage::Info(InfoPayload::Text("OPEN_URL:https://x".into())),
            ControlMessage::Unknown {
                text: "EXIT".into(),
            },
            ControlMessage::Unknown {
                text: "HALT,bye".into(),
            },
            ControlMessage::Unknown { text: ",x".into() },
        ];
        for message in cases {
            let mut out = vec![7];
            assert!(
                matches!(
                    message.emit(&mut out),
                    Err(ControlError::Unencodable { .. })
                ),
                "{message:?}"
            );
            assert_eq!(out, [7]);
        }
        let mut out = Vec::new();
        assert_eq!(
            ControlMessage::Halt {
                message: "a\0b".into()
            }
            .emit(&mut out),
            Err(ControlError::InteriorNul { offset: 6 })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn take_message_from_a_stream() {
        assert_eq!(take_message(b""), Ok(None));
        assert_eq!(take_message(b"PUSH_REQ"), Ok(None));
        assert_eq!(
            take_message(b"PUSH_REQUEST\0EXIT\0"),
            Ok(Some((&b"PUSH_REQUEST"[..], 13)))
        );
        assert_eq!(take_message(b"\0EXIT"), Ok(Some((&b""[..], 1))));
        let mut long = vec![b'x'; MAX_CONTROL_MESSAGE_LEN - 1];
        assert_eq!(take_message(&long), Ok(None));
        long.push(0);
        assert_eq!(
            take_message(&long),
            Ok(Some((
                &long[..MAX_CONTROL_MESSAGE_LEN - 1],
                MAX_CONTROL_MESSAGE_LEN
            )))
        );
        long.pop();
        long.push(b'x');
        assert!(matches!(
            take_message(&long),
            Err(ControlError::TooLong { .. })
        ));
    }

    #[test]
    fn helpers_follow_peer_info() {
        let stock = PeerInfo::parse("IV_PROTO=990\nIV_SSO=webauth,crtext\n").unwrap();
        let old = PeerInfo::parse("IV_PROTO=6\n").unwrap();
        assert_eq!(
            ControlMessage::auth_pending_for(&stock, 120),
            ControlMessage::AuthPending { timeout: Some(120) }
        );
        assert_eq!(
            ControlMessage::auth_pending_for(&old, 120),
            ControlMessage::AuthPending { timeout: None }
        );
        assert_eq!(
            ControlMessage::auth_failed_temp_for(&stock, Some(30), Some(Advance::Remote), "busy"),
            ControlMessage::AuthFailed(AuthFailure::Temp {
                backoff: Some(30),
                advance: Some(Advance::Remote),
                message: "busy".into(),
            })
        );
        assert_eq!(
            ControlMessage::auth_failed_temp_for(&old, Some(30), None, "busy"),
            ControlMessage::AuthFailed(AuthFailure::Plain {
                reason: Some("busy".into())
            })
        );
        let web = InfoPayload::WebAuth {
            flags: String::new(),
            url: "https://x".into(),
        };
        let open = InfoPayload::OpenUrl {
            url: "https://x".into(),
        };
        let cr = InfoPayload::CrText {
            flags: "R".into(),
            text: "code".into(),
        };
        assert!(web.supported_by(&stock) && cr.supported_by(&stock));
        assert!(!open.supported_by(&stock));
        assert!(!web.supported_by(&old) && !cr.supported_by(&old));
        assert!(InfoPayload::Text("hi".into()).supported_by(&old));
    }

    #[test]
    fn challenge_flags() {
        let challenge = |flags: &str| DynamicChallenge {
            flags: flags.into(),
            state_id: String::new(),
            username_b64: String::new(),
            text: String::new(),
        };
        assert!(challenge("R").response_required() && !challenge("R").echo());
        assert!(challenge("R,E").echo());
        assert!(challenge("R,10.0.0.1").response_required());
        assert!(!challenge("").response_required());
    }

    fn free_text() -> impl Strategy<Value = String> {
        "[^\\x00]{0,40}"
    }

    fn no_colon() -> impl Strategy<Value = String> {
        "[^\\x00:]{0,20}"
    }

    fn auth_failure() -> impl Strategy<Value = AuthFailure> {
        let advance = prop_oneof![
            Just(Advance::Addr),
            Just(Advance::Remote),
            Just(Advance::No)
        ];
        prop_oneof![
            proptest::option::of(free_text().prop_filter("structured", |r| !looks_structured(r)))
                .prop_map(|reason| AuthFailure::Plain { reason }),
            (
                proptest::option::of(any::<u32>()),
                proptest::option::of(advance),
                free_text()
            )
                .prop_map(|(backoff, advance, message)| AuthFailure::Temp {
                    backoff,
                    advance,
                    message
                }),
            free_text().prop_map(|message| AuthFailure::Session { message }),
            (no_colon(), no_colon(), no_colon(), free_text()).prop_map(
                |(flags, state_id, username_b64, text)| {
                    AuthFailure::Challenge(DynamicChallenge {
                        flags,
                        state_id,
                        username_b64,
                        text,
                    })
                }
            ),
        ]
    }

    fn info_payload() -> impl Strategy<Value = InfoPayload> {
        prop_oneof![
            (no_colon(), free_text()).prop_map(|(flags, url)| InfoPayload::WebAuth { flags, url }),
            free_text().prop_map(|url| InfoPayload::OpenUrl { url }),
            (no_colon(), free_text()).prop_map(|(flags, text)| InfoPayload::CrText { flags, text }),
            free_text()
                .prop_filter("structured", |t| {
                    !["WEB_AUTH:", "CR_TEXT:", "OPEN_URL:"]
                        .iter()
                        .any(|p| t.starts_with(p))
                })
                .prop_map(InfoPayload::Text),
        ]
    }

    fn control_message() -> impl Strategy<Value = ControlMessage> {
        prop_oneof![
            Just(ControlMessage::PushRequest),
            Just(ControlMessage::Exit),
            proptest::collection::vec(other_directive(), 0..6)
                .prop_map(|options| ControlMessage::PushReply { options }),
            auth_failure().prop_map(ControlMessage::AuthFailed),
            proptest::option::of(any::<u32>())
                .prop_map(|timeout| ControlMessage::AuthPending { timeout }),
            info_payload().prop_map(ControlMessage::InfoPre),
            info_payload().prop_map(ControlMessage::Info),
            word().prop_map(|response| ControlMessage::CrResponse { response }),
            (any::<bool>(), any::<bool>(), free_text()).prop_map(|(p, n, message)| {
                ControlMessage::Restart {
                    flags: RestartFlags {
                        keep_credentials: p,
                        next_server: n,
                    },
                    message,
                }
            }),
            free_text().prop_map(|message| ControlMessage::Halt { message }),
            ("[A-Z_]{1,14}", proptest::option::of(free_text()))
                .prop_filter("known keyword", |(k, _)| !KEYWORDS.contains(&k.as_str()))
                .prop_map(|(keyword, rest)| ControlMessage::Unknown {
                    text: match rest {
                        Some(rest) => format!("{keyword},{rest}"),
                        None => keyword,
                    },
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(message in control_message()) {
            let wire = emitted(&message);
            prop_assert_eq!(wire.last(), Some(&0));
            prop_assert!(wire.len() <= MAX_CONTROL_MESSAGE_LEN);
            prop_assert_eq!(ControlMessage::parse(&wire), Ok(message.clone()));
            prop_assert_eq!(ControlMessage::parse(&wire[..wire.len() - 1]), Ok(message));
            prop_assert_eq!(take_message(&wire), Ok(Some((&wire[..wire.len() - 1], wire.len()))));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ControlMessage::parse(&bytes);
            let _ = take_message(&bytes);
        }

        #[test]
        fn parse_never_panics_on_keywords(
            keyword in proptest::sample::select(KEYWORDS.to_vec()),
            rest in "[ -~]{0,60}",
        ) {
            if let Ok(message) = parse(&format!("{keyword},{rest}")) {
                let mut out = Vec::new();
                if message.emit(&mut out).is_ok() {
                    prop_assert_eq!(ControlMessage::parse(&out), Ok(message));
                }
            }
        }
    }
}
