//! Structured payloads of AUTH_FAILED and INFO / INFO_PRE (protocol doc §10.3, §13):
//! temporary failures, session-token failures, CRV1 challenges, web-auth and CR_TEXT prompts.

use std::fmt::Write as _;

use super::message::{ControlError, decimal, malformed, unencodable};
use crate::key_method::PeerInfo;

/// The forms of AUTH_FAILED (§10.3, §13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// `AUTH_FAILED` or `AUTH_FAILED,<reason>`.
    Plain {
        /// The reason shown to the user.
        reason: Option<String>,
    },
    /// `AUTH_FAILED,TEMP[backoff N,advance X]:<message>`: retryable (IV_PROTO bit 8).
    Temp {
        /// Seconds to wait before retrying.
        backoff: Option<u32>,
        /// Which remote to try next.
        advance: Option<Advance>,
        /// Text shown to the user.
        message: String,
    },
    /// `AUTH_FAILED,SESSION:<message>`: auth-token rejected, retry with credentials.
    Session {
        /// Text after `SESSION:`, as sent (usually with a leading space).
        message: String,
    },
    /// `AUTH_FAILED,CRV1:<flags>:<state_id>:<username_b64>:<text>`: dynamic challenge.
    Challenge(DynamicChallenge),
}

/// `advance` flag of `AUTH_FAILED,TEMP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// `addr`: next address of the same remote.
    Addr,
    /// `remote`: next remote.
    Remote,
    /// `no`: retry the same address.
    No,
}

impl Advance {
    fn word(self) -> &'static str {
        match self {
            Advance::Addr => "addr",
            Advance::Remote => "remote",
            Advance::No => "no",
        }
    }
}

/// A CRV1 dynamic challenge. No field but `text` may hold `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicChallenge {
    /// Flags as sent: `R` response required, `E` echo (AWS variants carry more).
    pub flags: String,
    /// Server state the client returns in `CRV1::<state_id>::<response>`.
    pub state_id: String,
    /// Base64 username the client reconnects with.
    pub username_b64: String,
    /// Challenge text (AWS SAML: the IdP URL).
    pub text: String,
}

impl DynamicChallenge {
    /// Whether the `R` flag asks for a response.
    pub fn response_required(&self) -> bool {
        self.flags.split(',').any(|f| f.contains('R'))
    }

    /// Whether the `E` flag asks to echo the response while typing.
    pub fn echo(&self) -> bool {
        self.flags.split(',').any(|f| f.contains('E'))
    }
}

/// Payload of INFO / INFO_PRE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoPayload {
    /// `WEB_AUTH:<flags>:<url>`: open a browser (IV_SSO `webauth`).
    WebAuth {
        /// Flags, possibly empty (e.g. `proxy,hidden`).
        flags: String,
        /// URL.
        url: String,
    },
    /// `OPEN_URL:<url>` (deprecated form, IV_SSO `openurl`).
    OpenUrl {
        /// URL.
        url: String,
    },
    /// `CR_TEXT:<flags>:<text>`: ask the user; the answer comes as CR_RESPONSE
    /// (IV_SSO `crtext`).
    CrText {
        /// Flags, e.g. `R,E`.
        flags: String,
        /// Prompt.
        text: String,
    },
    /// Anything else.
    Text(String),
}

impl InfoPayload {
    /// Whether the client announced support for this payload in IV_SSO (always true for
    /// plain text).
    pub fn supported_by(&self, peer: &PeerInfo) -> bool {
        let method = match self {
            InfoPayload::WebAuth { .. } => "webauth",
            InfoPayload::OpenUrl { .. } => "openurl",
            InfoPayload::CrText { .. } => "crtext",
            InfoPayload::Text(_) => return true,
        };
        peer.sso
            .as_ref()
            .is_some_and(|methods| methods.iter().any(|m| m == method))
    }
}

pub(super) fn parse_auth_failed(rest: &str) -> Result<AuthFailure, ControlError> {
    if let Some(temp) = rest.strip_prefix("TEMP")
        && (temp.is_empty() || temp.starts_with(['[', ':']))
    {
        return parse_temp(temp);
    }
    if let Some(message) = rest.strip_prefix("SESSION:") {
        return Ok(AuthFailure::Session {
            message: message.to_owned(),
        });
    }
    if let Some(crv1) = rest.strip_prefix("CRV1:") {
        let mut fields = crv1.splitn(4, ':');
        let (Some(flags), Some(state_id), Some(username_b64), Some(text)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed(
                "AUTH_FAILED,CRV1",
                "<flags>:<state_id>:<username_b64>:<text>",
                crv1,
            ));
        };
        return Ok(AuthFailure::Challenge(DynamicChallenge {
            flags: flags.to_owned(),
            state_id: state_id.to_owned(),
            username_b64: username_b64.to_owned(),
            text: text.to_owned(),
        }));
    }
    Ok(AuthFailure::Plain {
        reason: Some(rest.to_owned()),
    })
}

fn parse_temp(after_temp: &str) -> Result<AuthFailure, ControlError> {
    const EXPECTED: &str = "TEMP[backoff <s>,advance addr|remote|no]:<message>";
    let (flags, rest) = match after_temp.strip_prefix('[') {
        Some(bracketed) => bracketed
            .split_once(']')
            .ok_or_else(|| malformed("AUTH_FAILED,TEMP", EXPECTED, after_temp))?,
        None => ("", after_temp),
    };
    let message = match rest.strip_prefix(':') {
        Some(message) => message,
        None if rest.is_empty() => "",
        None => return Err(malformed("AUTH_FAILED,TEMP", EXPECTED, after_temp)),
    };
    let (mut backoff, mut advance) = (None, None);
    for flag in flags.split(',').filter(|f| !f.is_empty()) {
        match flag.split_once(' ') {
            Some(("backoff", secs)) if backoff.is_none() => {
                backoff = Some(
                    decimal(secs).ok_or_else(|| malformed("AUTH_FAILED,TEMP", EXPECTED, flags))?,
                );
            }
            Some(("advance", target)) if advance.is_none() => {
                advance = Some(match target {
                    "addr" => Advance::Addr,
                    "remote" => Advance::Remote,
                    "no" => Advance::No,
                    _ => return Err(malformed("AUTH_FAILED,TEMP", EXPECTED, flags)),
                });
            }
            _ => return Err(malformed("AUTH_FAILED,TEMP", EXPECTED, flags)),
        }
    }
    Ok(AuthFailure::Temp {
        backoff,
        advance,
        message: message.to_owned(),
    })
}

/// Whether a plain AUTH_FAILED reason would read back as one of the structured forms.
pub(super) fn looks_structured(reason: &str) -> bool {
    reason.starts_with("SESSION:")
        || reason.starts_with("CRV1:")
        || reason
            .strip_prefix("TEMP")
            .is_some_and(|t| t.is_empty() || t.starts_with(['[', ':']))
}

pub(super) fn auth_failed_text(failure: &AuthFailure) -> Result<String, ControlError> {
    Ok(match failure {
        AuthFailure::Plain { reason: None } => "AUTH_FAILED".to_owned(),
        AuthFailure::Plain {
            reason: Some(reason),
        } => {
            if looks_structured(reason) {
                return Err(unencodable(
                    "AUTH_FAILED",
                    "a plain reason starting with TEMP, SESSION: or CRV1:",
                ));
            }
            format!("AUTH_FAILED,{reason}")
        }
        AuthFailure::Temp {
            backoff,
            advance,
            message,
        } => {
            let mut text = "AUTH_FAILED,TEMP".to_owned();
            let mut flags = Vec::new();
            if let Some(secs) = backoff {
                flags.push(format!("backoff {secs}"));
            }
            if let Some(advance) = advance {
                flags.push(format!("advance {}", advance.word()));
            }
            if !flags.is_empty() {
                let _ = write!(text, "[{}]", flags.join(","));
            }
            text.push(':');
            text.push_str(message);
            text
        }
        AuthFailure::Session { message } => format!("AUTH_FAILED,SESSION:{message}"),
        AuthFailure::Challenge(c) => {
            if [&c.flags, &c.state_id, &c.username_b64]
                .iter()
                .any(|f| f.contains(':'))
            {
                return Err(unencodable(
                    "AUTH_FAILED,CRV1",
                    "`:` in flags, state id or username",
                ));
            }
            format!(
                "AUTH_FAILED,CRV1:{}:{}:{}:{}",
                c.flags, c.state_id, c.username_b64, c.text
            )
        }
    })
}

pub(super) fn parse_info(keyword: &'static str, rest: &str) -> Result<InfoPayload, ControlError> {
    if let Some(web) = rest.strip_prefix("WEB_AUTH:") {
        let (flags, url) = web
            .split_once(':')
            .ok_or_else(|| malformed(keyword, "WEB_AUTH:<flags>:<url>", web))?;
        return Ok(InfoPayload::WebAuth {
            flags: flags.to_owned(),
            url: url.to_owned(),
        });
    }
    if let Some(cr) = rest.strip_prefix("CR_TEXT:") {
        let (flags, text) = cr
            .split_once(':')
            .ok_or_else(|| malformed(keyword, "CR_TEXT:<flags>:<text>", cr))?;
        return Ok(InfoPayload::CrText {
            flags: flags.to_owned(),
            text: text.to_owned(),
        });
    }
    if let Some(url) = rest.strip_prefix("OPEN_URL:") {
        return Ok(InfoPayload::OpenUrl {
            url: url.to_owned(),
        });
    }
    Ok(InfoPayload::Text(rest.to_owned()))
}

pub(super) fn info_text(payload: &InfoPayload) -> Result<String, ControlError> {
    Ok(match payload {
        InfoPayload::WebAuth { flags, .. } | InfoPayload::CrText { flags, .. }
            if flags.contains(':') =>
        {
            return Err(unencodable("INFO", "`:` in WEB_AUTH or CR_TEXT flags"));
        }
        InfoPayload::WebAuth { flags, url } => format!("WEB_AUTH:{flags}:{url}"),
        InfoPayload::CrText { flags, text } => format!("CR_TEXT:{flags}:{text}"),
        InfoPayload::OpenUrl { url } => format!("OPEN_URL:{url}"),
        InfoPayload::Text(text) => {
            if ["WEB_AUTH:", "CR_TEXT:", "OPEN_URL:"]
                .iter()
                .any(|p| text.starts_with(p))
            {
                return Err(unencodable(
                    "INFO",
                    "text starting with a structured prefix",
                ));
            }
            text.clone()
        }
    })
}
