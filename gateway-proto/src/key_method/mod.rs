//! Key-method 2 messages (protocol doc §7) in the stock and the AWS VPN Client framing,
//! the peer-info they carry (§7.3), and the comma-separated option lists used by the
//! options string and by push messages.

use std::fmt;

mod options;
mod peer_info;

pub use options::{Directive, OptionError, emit_option_list, parse_option_list};
pub use peer_info::{PeerInfo, PeerInfoError, ProtoFlags};

/// Length of the client's pre-master secret.
pub const PRE_MASTER_LEN: usize = 48;
/// Length of each of the two randoms per side.
pub const RANDOM_LEN: usize = 32;
/// The only key method OpenVPN 2.6 speaks.
pub const KEY_METHOD_2: u8 = 2;
const KEY_METHOD_MASK: u8 = 0x0f;
const PREFIX_LEN: usize = 4;

/// Longest options string accepted or sent, in bytes without the NUL.
pub const MAX_OPTIONS_LEN: usize = 1024;
/// Longest username accepted or sent, in bytes without the NUL.
pub const MAX_USERNAME_LEN: usize = 4096;
/// Longest password in the stock framing (PKCS#11 builds of OpenVPN allow 4096).
pub const MAX_STOCK_PASSWORD_LEN: usize = 4096;
/// Longest password in the AWS framing: 128 KiB, room for a SAML assertion.
pub const MAX_AWS_PASSWORD_LEN: usize = 128 * 1024;
/// Longest peer-info block accepted or sent, in bytes without the NUL.
pub const MAX_PEER_INFO_LEN: usize = 8192;

/// How a key-method 2 message is framed on the TLS plaintext stream.
///
/// Detection rule: the first 4 bytes are zero in the stock framing. The AWS VPN Client
/// overwrites them with the total message length (itself included) as a little-endian
/// `u32`, which is never zero because the message is at least 85 bytes long. So "first 4
/// bytes zero" means stock and anything else means AWS; a total outside the possible range
/// (including a big-endian length, which reads as a huge number) is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Stock OpenVPN: zero prefix, strings as `u16 len || bytes || NUL`.
    Stock,
    /// AWS VPN Client: little-endian total length prefix, strings as `u32 len || bytes || NUL`.
    Aws,
}

/// Upper bounds on the strings of a message, in bytes without the NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Options string.
    pub options: usize,
    /// Username.
    pub username: usize,
    /// Password.
    pub password: usize,
    /// Peer-info block.
    pub peer_info: usize,
}

impl Framing {
    /// Framing of a message starting with `prefix`; `None` until 4 bytes are available.
    pub fn detect(prefix: &[u8]) -> Option<Framing> {
        let (first, _) = prefix.split_first_chunk::<PREFIX_LEN>()?;
        Some(if *first == [0; PREFIX_LEN] {
            Framing::Stock
        } else {
            Framing::Aws
        })
    }

    /// The string limits of this framing; only the password limit differs.
    pub fn limits(self) -> Limits {
        Limits {
            options: MAX_OPTIONS_LEN,
            username: MAX_USERNAME_LEN,
            password: match self {
                Framing::Stock => MAX_STOCK_PASSWORD_LEN,
                Framing::Aws => MAX_AWS_PASSWORD_LEN,
            },
            peer_info: MAX_PEER_INFO_LEN,
        }
    }

    fn length_field_len(self) -> usize {
        match self {
            Framing::Stock => 2,
            Framing::Aws => 4,
        }
    }
}

/// A part of a key-method 2 message, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The key-method byte.
    KeyMethod,
    /// Pre-master secret and randoms.
    KeySource,
    /// Options string.
    Options,
    /// Username.
    Username,
    /// Password.
    Password,
    /// Peer-info block.
    PeerInfo,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::KeyMethod => "key-method byte",
            Field::KeySource => "key material",
            Field::Options => "options string",
            Field::Username => "username",
            Field::Password => "password",
            Field::PeerInfo => "peer-info",
        })
    }
}

/// Why a key-method 2 message could not be parsed or emitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyMethodError {
    /// The key-method byte's low 4 bits are not 2.
    #[error("key-method 2 message: key method {found}, only key method 2 is supported")]
    UnsupportedKeyMethod {
        /// Low 4 bits of the byte.
        found: u8,
    },
    /// The AWS total-length prefix cannot be the length of a message.
    #[error("AWS-framed key-method 2 message: total length {len} outside {min}..={max}")]
    AwsLengthOutOfRange {
        /// Length read from the prefix (little-endian).
        len: u32,
        /// Smallest possible message.
        min: usize,
        /// Largest accepted message.
        max: usize,
    },
    /// A part of the message runs past the AWS total length.
    #[error("AWS-framed key-method 2 message: {field} runs past the {total}-byte message")]
    AwsTruncated {
        /// Part that did not fit.
        field: Field,
        /// Total length from the prefix.
        total: usize,
    },
    /// Bytes left over inside the AWS total length after the peer-info.
    #[error("AWS-framed key-method 2 message: {extra} bytes after the peer-info")]
    AwsTrailingBytes {
        /// Bytes left over.
        extra: usize,
    },
    /// A string is longer than its limit.
    #[error("key-method 2 {field}: {len} bytes, at most {max} allowed")]
    FieldTooLong {
        /// Which string.
        field: Field,
        /// Its length without the NUL.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string's last byte is not NUL.
    #[error("key-method 2 {field}: not NUL-terminated")]
    MissingNul {
        /// Which string.
        field: Field,
    },
    /// A string holds a NUL before its end.
    #[error("key-method 2 {field}: NUL byte at offset {offset} inside the string")]
    InteriorNul {
        /// Which string.
        field: Field,
        /// Offset of the NUL in the string.
        offset: usize,
    },
    /// A string is not UTF-8.
    #[error("key-method 2 {field}: not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        field: Field,
    },
}

mod sealed {
    pub trait Sealed: Sized {
        fn read(bytes: &[u8]) -> Option<Self>;
        fn write(&self, out: &mut Vec<u8>);
    }
}

/// The random material one side puts in its message: [`ClientKeySource`] or
/// [`ServerKeySource`].
pub trait KeySource: sealed::Sealed {
    /// Bytes this material takes on the wire.
    const WIRE_LEN: usize;
}

/// The client's random material. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKeySource {
    /// Pre-master secret (used only by the legacy PRF).
    pub pre_master: [u8; PRE_MASTER_LEN],
    /// First random (master-secret seed).
    pub random1: [u8; RANDOM_LEN],
    /// Second random (key-expansion seed).
    pub random2: [u8; RANDOM_LEN],
}

/// The server's random material (no pre-master). `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKeySource {
    /// First random (master-secret seed).
    pub random1: [u8; RANDOM_LEN],
    /// Second random (key-expansion seed).
    pub random2: [u8; RANDOM_LEN],
}

impl fmt::Debug for ClientKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientKeySource(<redacted>)")
    }
}

impl fmt::Debug for ServerKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKeySource(<redacted>)")
    }
}

impl ClientKeySource {
    /// Fresh material from the caller's cryptographically secure random source.
    pub fn generate(fill_random: &mut dyn FnMut(&mut [u8])) -> Self {
        let mut source = ClientKeySource {
            pre_master: [0; PRE_MASTER_LEN],
            random1: [0; RANDOM_LEN],
            random2: [0; RANDOM_LEN],
        };
        fill_random(&mut source.pre_master);
        fill_random(&mut source.random1);
        fill_random(&mut source.random2);
        source
    }
}

impl ServerKeySource {
    /// Fresh material from the caller's cryptographically secure random source.
    pub fn generate(fill_random: &mut dyn FnMut(&mut [u8])) -> Self {
        let mut source = ServerKeySource {
            random1: [0; RANDOM_LEN],
            random2: [0; RANDOM_LEN],
        };
        fill_random(&mut source.random1);
        fill_random(&mut source.random2);
        source
    }
}

impl sealed::Sealed for ClientKeySource {
    fn read(bytes: &[u8]) -> Option<Self> {
        let (pre_master, rest) = bytes.split_first_chunk::<PRE_MASTER_LEN>()?;
        let (random1, rest) = rest.split_first_chunk::<RANDOM_LEN>()?;
        let (random2, _) = rest.split_first_chunk::<RANDOM_LEN>()?;
        Some(ClientKeySource {
            pre_master: *pre_master,
            random1: *random1,
            random2: *random2,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pre_master);
        out.extend_from_slice(&self.random1);
        out.extend_from_slice(&self.random2);
    }
}

impl KeySource for ClientKeySource {
    const WIRE_LEN: usize = PRE_MASTER_LEN + 2 * RANDOM_LEN;
}

impl sealed::Sealed for ServerKeySource {
    fn read(bytes: &[u8]) -> Option<Self> {
        let (random1, rest) = bytes.split_first_chunk::<RANDOM_LEN>()?;
        let (random2, _) = rest.split_first_chunk::<RANDOM_LEN>()?;
        Some(ServerKeySource {
            random1: *random1,
            random2: *random2,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.random1);
        out.extend_from_slice(&self.random2);
    }
}

impl KeySource for ServerKeySource {
    const WIRE_LEN: usize = 2 * RANDOM_LEN;
}

/// A key-method 2 message. Stock servers send empty username, password and peer-info.
/// `Debug` does not print the key material or the password.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMethod2<K> {
    /// Random material.
    pub key_source: K,
    /// Options string (`V4,dev-type tun,…`), see [`parse_option_list`].
    pub options: String,
    /// Username (empty without `auth-user-pass`).
    pub username: String,
    /// Password, auth-token, `SCRV1:`/`CRV1:` response or SAML assertion.
    pub password: String,
    /// Peer-info block, see [`PeerInfo::parse`].
    pub peer_info: String,
}

/// What the client sends.
pub type ClientKeyMethod2 = KeyMethod2<ClientKeySource>;
/// What the server sends.
pub type ServerKeyMethod2 = KeyMethod2<ServerKeySource>;

impl<K: fmt::Debug> fmt::Debug for KeyMethod2<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMethod2")
            .field("key_source", &self.key_source)
            .field("options", &self.options)
            .field("username", &self.username)
            .field("password", &format_args!("<{} bytes>", self.password.len()))
            .field("peer_info", &self.peer_info)
            .finish()
    }
}

/// A complete message taken from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<T> {
    /// The message.
    pub message: T,
    /// Framing the sender used.
    pub framing: Framing,
    /// Bytes of the buffer the message took; anything after belongs to the next message.
    pub consumed: usize,
}

enum Step {
    Short(Field),
    Bad(KeyMethodError),
}

impl From<KeyMethodError> for Step {
    fn from(e: KeyMethodError) -> Self {
        Step::Bad(e)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: Field) -> Result<&'a [u8], Step> {
        let end = self.pos.checked_add(n).ok_or(Step::Short(field))?;
        let bytes = self.buf.get(self.pos..end).ok_or(Step::Short(field))?;
        self.pos = end;
        Ok(bytes)
    }

    fn string(&mut self, framing: Framing, field: Field, max: usize) -> Result<String, Step> {
        let len_bytes = self.take(framing.length_field_len(), field)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        let Some(content_len) = len.checked_sub(1) else {
            return Ok(String::new());
        };
        if content_len > max {
            return Err(Step::Bad(KeyMethodError::FieldTooLong {
                field,
                len: content_len,
                max,
            }));
        }
        let bytes = self.take(len, field)?;
        let Some((&0, content)) = bytes.split_last() else {
            return Err(Step::Bad(KeyMethodError::MissingNul { field }));
        };
        if let Some(offset) = content.iter().position(|b| *b == 0) {
            return Err(Step::Bad(KeyMethodError::InteriorNul { field, offset }));
        }
        let text =
            std::str::from_utf8(content).map_err(|_| KeyMethodError::InvalidUtf8 { field })?;
        Ok(text.to_owned())
    }
}

impl<K: KeySource> KeyMethod2<K> {
    /// Smallest message: prefix, key-method byte, key material, four empty strings.
    pub fn min_wire_len(framing: Framing) -> usize {
        PREFIX_LEN + 1 + K::WIRE_LEN + 4 * framing.length_field_len()
    }

    /// Largest message this parser accepts in `framing`; a caller buffering plaintext
    /// never needs more than this before [`KeyMethod2::parse`] decides.
    pub fn max_wire_len(framing: Framing) -> usize {
        let limits = framing.limits();
        Self::min_wire_len(framing)
            + limits.options
            + limits.username
            + limits.password
            + limits.peer_info
            + 4
    }

    /// Parses a message from the front of `buf` (TLS plaintext received so far).
    /// `Ok(None)` means the bytes so far are a valid beginning: call again with more.
    pub fn parse(buf: &[u8]) -> Result<Option<Parsed<Self>>, KeyMethodError> {
        let Some(framing) = Framing::detect(buf) else {
            return Ok(None);
        };
        match framing {
            Framing::Stock => {
                let mut reader = Reader {
                    buf,
                    pos: PREFIX_LEN,
                };
                match Self::parse_body(&mut reader, framing) {
                    Ok(message) => Ok(Some(Parsed {
                        message,
                        framing,
                        consumed: reader.pos,
                    })),
                    Err(Step::Short(_)) => Ok(None),
                    Err(Step::Bad(e)) => Err(e),
                }
            }
            Framing::Aws => Self::parse_aws(buf),
        }
    }

    fn parse_aws(buf: &[u8]) -> Result<Option<Parsed<Self>>, KeyMethodError> {
        let Some((prefix, _)) = buf.split_first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*prefix);
        let (min, max) = (
            Self::min_wire_len(Framing::Aws),
            Self::max_wire_len(Framing::Aws),
        );
        let total = usize::try_from(len)
            .ok()
            .filter(|total| (min..=max).contains(total))
            .ok_or(KeyMethodError::AwsLengthOutOfRange { len, min, max })?;
        let Some(message) = buf.get(..total) else {
            return Ok(None);
        };
        let mut reader = Reader {
            buf: message,
            pos: PREFIX_LEN,
        };
        let parsed = Self::parse_body(&mut reader, Framing::Aws).map_err(|step| match step {
            Step::Short(field) => KeyMethodError::AwsTruncated { field, total },
            Step::Bad(e) => e,
        })?;
        if reader.pos != total {
            return Err(KeyMethodError::AwsTrailingBytes {
                extra: total - reader.pos,
            });
        }
        Ok(Some(Parsed {
            message: parsed,
            framing: Framing::Aws,
            consumed: total,
        }))
    }

    fn parse_body(reader: &mut Reader<'_>, framing: Framing) -> Result<Self, Step> {
        let method = reader.take(1, Field::KeyMethod)?;
        let found = method.first().map_or(0, |b| b & KEY_METHOD_MASK);
        if found != KEY_METHOD_2 {
            return Err(Step::Bad(KeyMethodError::UnsupportedKeyMethod { found }));
        }
        let key_bytes = reader.take(K::WIRE_LEN, Field::KeySource)?;
        let key_source = K::read(key_bytes).ok_or(Step::Short(Field::KeySource))?;
        let limits = framing.limits();
        Ok(KeyMethod2 {
            key_source,
            options: reader.string(framing, Field::Options, limits.options)?,
            username: reader.string(framing, Field::Username, limits.username)?,
            password: reader.string(framing, Field::Password, limits.password)?,
            peer_info: reader.string(framing, Field::PeerInfo, limits.peer_info)?,
        })
    }

    /// Appends the message to `out` in `framing`. Fails, leaving `out` unchanged, if a
    /// string is over its limit or holds a NUL, so that everything emitted also parses.
    pub fn emit(&self, framing: Framing, out: &mut Vec<u8>) -> Result<(), KeyMethodError> {
        let start = out.len();
        let result = self.emit_inner(framing, out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn emit_inner(
        &self,
        framing: Framing,
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), KeyMethodError> {
        let limits = framing.limits();
        out.extend_from_slice(&[0; PREFIX_LEN]);
        out.push(KEY_METHOD_2);
        self.key_source.write(out);
        for (field, max, text) in [
            (Field::Options, limits.options, &self.options),
            (Field::Username, limits.username, &self.username),
            (Field::Password, limits.password, &self.password),
            (Field::PeerInfo, limits.peer_info, &self.peer_info),
        ] {
            write_string(out, framing, field, max, text)?;
        }
        if framing == Framing::Aws {
            // Every string is bounded, so the total (≤ `max_wire_len`) always fits a u32.
            let total = out.len() - start;
            let len = u32::try_from(total).map_err(|_| KeyMethodError::FieldTooLong {
                field: Field::Password,
                len: total,
                max: limits.password,
            })?;
            if let Some(prefix) = out.get_mut(start..start + PREFIX_LEN) {
                prefix.copy_from_slice(&len.to_le_bytes());
            }
        }
        Ok(())
    }
}

fn write_string(
    out: &mut Vec<u8>,
    framing: Framing,
    field: Field,
    max: usize,
    text: &str,
) -> Result<(), KeyMethodError> {
    let bytes = text.as_bytes();
    if bytes.len() > max {
        return Err(KeyMethodError::FieldTooLong {
            field,
            len: bytes.len(),
            max,
        });
    }
    if let Some(offset) = bytes.iter().position(|b| *b == 0) {
        return Err(KeyMethodError::InteriorNul { field, offset });
    }
    let wire_len = if bytes.is_empty() { 0 } else { bytes.len() + 1 };
    let too_long = KeyMethodError::FieldTooLong {
        field,
        len: bytes.len(),
        max,
    };
    match framing {
        Framing::Stock => {
            let len = u16::try_from(wire_len).map_err(|_| too_long)?;
            out.extend_from_slice(&len.to_be_bytes());
        }
        Framing::Aws => {
            let len = u32::try_from(wire_len).map_err(|_| too_long)?;
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if !bytes.is_empty() {
        out.extend_from_slice(bytes);
        out.push(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
