//! Key-method 2 messages (protocol doc §7) in the stock and the AWS VPN Client framing,
//! the peer-info they carry (§7.3), and the comma-separated option lists used by the
//! options string and by push messages.

use std::fmt;

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

/// One option of an options string or push message: a name and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Option name, e.g. `route`.
    pub name: String,
    /// Arguments, unquoted.
    pub args: Vec<String>,
}

/// Why an option or option list could not be parsed or emitted; offsets are byte offsets
/// into the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A quote opened at `offset` is never closed.
    #[error("option text: quote opened at byte {offset} is not closed")]
    UnterminatedQuote {
        /// Offset of the opening quote.
        offset: usize,
    },
    /// A backslash at the very end.
    #[error("option text: backslash at byte {offset} escapes nothing")]
    DanglingEscape {
        /// Offset of the backslash.
        offset: usize,
    },
    /// A character an option cannot carry (NUL anywhere, `,` inside an option).
    #[error("option {name:?}: cannot carry the character {found:?}")]
    ForbiddenCharacter {
        /// Option name.
        name: String,
        /// The character.
        found: char,
    },
}

impl Directive {
    /// Splits one option into words: whitespace separates; `"…"` groups and allows `\`
    /// escapes; `'…'` groups literally; outside quotes `\` escapes the next character.
    /// Returns `None` for text with no words.
    pub fn parse(text: &str) -> Result<Option<Self>, OptionError> {
        let mut words: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        let mut chars = text.char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                c if c.is_whitespace() => {
                    if let Some(word) = current.take() {
                        words.push(word);
                    }
                }
                '"' => {
                    let word = current.get_or_insert_with(String::new);
                    loop {
                        match chars.next() {
                            None => return Err(OptionError::UnterminatedQuote { offset }),
                            Some((_, '"')) => break,
                            Some((escape, '\\')) => match chars.next() {
                                Some((_, e)) => word.push(e),
                                None => return Err(OptionError::DanglingEscape { offset: escape }),
                            },
                            Some((_, other)) => word.push(other),
                        }
                    }
                }
                '\'' => {
                    let word = current.get_or_insert_with(String::new);
                    loop {
                        match chars.next() {
                            None => return Err(OptionError::UnterminatedQuote { offset }),
                            Some((_, '\'')) => break,
                            Some((_, other)) => word.push(other),
                        }
                    }
                }
                '\\' => match chars.next() {
                    Some((_, e)) => current.get_or_insert_with(String::new).push(e),
                    None => return Err(OptionError::DanglingEscape { offset }),
                },
                other => current.get_or_insert_with(String::new).push(other),
            }
        }
        if let Some(word) = current {
            words.push(word);
        }
        let mut words = words.into_iter();
        Ok(words.next().map(|name| Directive {
            name,
            args: words.collect(),
        }))
    }

    /// The option as text, each word double-quoted (with `\` escapes) only if it needs it.
    /// Fails on NUL or `,`, which no option may contain.
    pub fn to_text(&self) -> Result<String, OptionError> {
        let mut out = String::new();
        for (i, word) in std::iter::once(&self.name).chain(&self.args).enumerate() {
            if let Some(found) = word.chars().find(|c| matches!(c, '\0' | ',')) {
                return Err(OptionError::ForbiddenCharacter {
                    name: self.name.clone(),
                    found,
                });
            }
            if i > 0 {
                out.push(' ');
            }
            let needs_quotes = word.is_empty()
                || word
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'));
            if needs_quotes {
                out.push('"');
                for c in word.chars() {
                    if matches!(c, '"' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            } else {
                out.push_str(word);
            }
        }
        Ok(out)
    }
}

/// Parses a comma-separated option list (an options string, or a push message after its
/// `PUSH_REPLY,` prefix). Commas always separate (options cannot contain them); empty
/// items are skipped.
pub fn parse_option_list(text: &str) -> Result<Vec<Directive>, OptionError> {
    let mut directives = Vec::new();
    let mut base = 0;
    for item in text.split(',') {
        let parsed = Directive::parse(item).map_err(|e| match e {
            OptionError::UnterminatedQuote { offset } => OptionError::UnterminatedQuote {
                offset: base + offset,
            },
            OptionError::DanglingEscape { offset } => OptionError::DanglingEscape {
                offset: base + offset,
            },
            other => other,
        })?;
        directives.extend(parsed);
        base += item.len() + 1;
    }
    Ok(directives)
}

/// Joins options with `,` (no trailing comma).
pub fn emit_option_list(directives: &[Directive]) -> Result<String, OptionError> {
    let texts = directives
        .iter()
        .map(Directive::to_text)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(texts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn client_source() -> ClientKeySource {
        ClientKeySource {
            pre_master: [0x11; PRE_MASTER_LEN],
            random1: [0x21; RANDOM_LEN],
            random2: [0x22; RANDOM_LEN],
        }
    }

    fn server_source() -> ServerKeySource {
        ServerKeySource {
            random1: [0x31; RANDOM_LEN],
            random2: [0x32; RANDOM_LEN],
        }
    }

    fn client_message(password: &str) -> ClientKeyMethod2 {
        KeyMethod2 {
            key_source: client_source(),
            options: "V4,dev-type tun,tls-client".to_owned(),
            username: "alice".to_owned(),
            password: password.to_owned(),
            peer_info: "IV_VER=2.6.14\nIV_PROTO=990\n".to_owned(),
        }
    }

    fn emitted<K: KeySource>(message: &KeyMethod2<K>, framing: Framing) -> Vec<u8> {
        let mut out = Vec::new();
        message.emit(framing, &mut out).unwrap();
        out
    }

    fn complete<K: KeySource>(buf: &[u8]) -> Parsed<KeyMethod2<K>> {
        KeyMethod2::<K>::parse(buf).unwrap().unwrap()
    }

    #[test]
    fn stock_client_layout() {
        let wire = emitted(&client_message("pw"), Framing::Stock);
        assert_eq!(&wire[..5], &[0, 0, 0, 0, 2]);
        assert_eq!(&wire[5..53], &[0x11; 48]);
        assert_eq!(&wire[53..85], &[0x21; 32]);
        assert_eq!(&wire[85..117], &[0x22; 32]);
        assert_eq!(&wire[117..119], &[0, 27]);
        assert_eq!(&wire[119..146], b"V4,dev-type tun,tls-client\0");
        assert_eq!(&wire[146..154], b"\x00\x06alice\0");
        assert_eq!(&wire[154..159], b"\x00\x03pw\0");
        assert_eq!(&wire[159..161], &[0, 28]);
        assert_eq!(wire.len(), 161 + 28);
    }

    #[test]
    fn stock_server_layout_with_empty_strings() {
        let message = ServerKeyMethod2 {
            key_source: server_source(),
            options: "V4,tls-server".to_owned(),
            username: String::new(),
            password: String::new(),
            peer_info: String::new(),
        };
        let wire = emitted(&message, Framing::Stock);
        assert_eq!(&wire[..5], &[0, 0, 0, 0, 2]);
        assert_eq!(&wire[5..37], &[0x31; 32]);
        assert_eq!(&wire[37..69], &[0x32; 32]);
        assert_eq!(&wire[69..85], b"\x00\x0eV4,tls-server\0");
        assert_eq!(&wire[85..], &[0, 0, 0, 0, 0, 0]);
        let parsed = complete::<ServerKeySource>(&wire);
        assert_eq!(parsed.message, message);
        assert_eq!(
            (parsed.framing, parsed.consumed),
            (Framing::Stock, wire.len())
        );
    }

    #[test]
    fn aws_client_layout() {
        let wire = emitted(&client_message("pw"), Framing::Aws);
        let total = wire.len() as u32;
        assert_eq!(&wire[..4], &total.to_le_bytes());
        assert_eq!(wire[4], 2);
        assert_eq!(&wire[117..121], &[0, 0, 0, 27]);
        assert_eq!(&wire[148..158], b"\x00\x00\x00\x06alice\0");
        assert_eq!(&wire[158..165], b"\x00\x00\x00\x03pw\0");
        assert_eq!(wire.len(), 165 + 4 + 28);
        let parsed = complete::<ClientKeySource>(&wire);
        assert_eq!(parsed.message, client_message("pw"));
        assert_eq!(
            (parsed.framing, parsed.consumed),
            (Framing::Aws, wire.len())
        );
    }

    #[test]
    fn a_length_of_one_is_an_empty_string() {
        let mut wire = emitted(&client_message(""), Framing::Stock);
        // Replace the empty password (u16 0) by u16 1 + NUL.
        let at = 117 + 2 + 27 + 2 + 6;
        assert_eq!(&wire[at..at + 2], &[0, 0]);
        wire.splice(at..at + 2, [0, 1, 0]);
        assert_eq!(
            complete::<ClientKeySource>(&wire).message,
            client_message("")
        );
    }

    #[test]
    fn following_bytes_are_not_consumed() {
        for framing in [Framing::Stock, Framing::Aws] {
            let mut wire = emitted(&client_message("pw"), framing);
            let len = wire.len();
            wire.extend_from_slice(b"PUSH_REQUEST\0");
            let parsed = complete::<ClientKeySource>(&wire);
            assert_eq!(parsed.consumed, len);
            assert_eq!(parsed.message, client_message("pw"));
        }
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        for framing in [Framing::Stock, Framing::Aws] {
            let wire = emitted(&client_message("secret"), framing);
            for end in 0..wire.len() {
                assert_eq!(
                    ClientKeyMethod2::parse(&wire[..end]),
                    Ok(None),
                    "{framing:?} prefix {end}"
                );
            }
        }
    }

    #[test]
    fn detection() {
        assert_eq!(Framing::detect(&[]), None);
        assert_eq!(Framing::detect(&[0, 0, 0]), None);
        assert_eq!(Framing::detect(&[1, 0, 0]), None);
        assert_eq!(Framing::detect(&[0, 0, 0, 0]), Some(Framing::Stock));
        assert_eq!(Framing::detect(&[0, 0, 0, 0, 2]), Some(Framing::Stock));
        assert_eq!(Framing::detect(&[0, 0, 0, 1]), Some(Framing::Aws));
        assert_eq!(Framing::detect(&[0x85, 0, 0, 0]), Some(Framing::Aws));
    }

    #[test]
    fn aws_total_length_bounds() {
        let min = ClientKeyMethod2::min_wire_len(Framing::Aws);
        let max = ClientKeyMethod2::max_wire_len(Framing::Aws);
        assert_eq!(min, 4 + 1 + 112 + 16);
        let out_of_range = |len: u32| KeyMethodError::AwsLengthOutOfRange { len, min, max };
        for len in [1u32, min as u32 - 1, max as u32 + 1, u32::MAX] {
            let mut buf = len.to_le_bytes().to_vec();
            buf.push(2);
            assert_eq!(
                ClientKeyMethod2::parse(&buf),
                Err(out_of_range(len)),
                "{len}"
            );
        }
        // A big-endian length of a real message reads as a huge little-endian one.
        let be = 200u32.to_be_bytes();
        assert_eq!(
            ClientKeyMethod2::parse(&be),
            Err(out_of_range(u32::from_le_bytes(be)))
        );
        // The smallest message: four empty strings.
        let empty = KeyMethod2 {
            key_source: client_source(),
            options: String::new(),
            username: String::new(),
            password: String::new(),
            peer_info: String::new(),
        };
        let wire = emitted(&empty, Framing::Aws);
        assert_eq!(wire.len(), min);
        assert_eq!(complete::<ClientKeySource>(&wire).message, empty);
        // Server messages are shorter, with their own minimum.
        assert_eq!(
            ServerKeyMethod2::min_wire_len(Framing::Aws),
            4 + 1 + 64 + 16
        );
    }

    #[test]
    fn aws_valid_total_waits_for_the_whole_message() {
        let wire = emitted(&client_message("pw"), Framing::Aws);
        assert_eq!(ClientKeyMethod2::parse(&wire[..4]), Ok(None));
        assert_eq!(ClientKeyMethod2::parse(&wire[..wire.len() - 1]), Ok(None));
        assert!(ClientKeyMethod2::parse(&wire).unwrap().is_some());
    }

    #[test]
    fn aws_strings_running_past_total() {
        let mut wire = emitted(&client_message("pw"), Framing::Aws);
        // Shrink the total by one: the peer-info no longer fits.
        let total = wire.len() - 1;
        wire[..4].copy_from_slice(&(total as u32).to_le_bytes());
        assert_eq!(
            ClientKeyMethod2::parse(&wire),
            Err(KeyMethodError::AwsTruncated {
                field: Field::PeerInfo,
                total
            })
        );
        // A total covering only the key material and four length fields.
        let mut short = emitted(&client_message("pw"), Framing::Aws);
        let total = ClientKeyMethod2::min_wire_len(Framing::Aws);
        short[..4].copy_from_slice(&(total as u32).to_le_bytes());
        assert_eq!(
            ClientKeyMethod2::parse(&short),
            Err(KeyMethodError::AwsTruncated {
                field: Field::Options,
                total
            })
        );
    }

    #[test]
    fn aws_slack_inside_total() {
        let mut wire = emitted(&client_message("pw"), Framing::Aws);
        wire.extend_from_slice(&[0, 0, 0]);
        let total = wire.len() as u32;
        wire[..4].copy_from_slice(&total.to_le_bytes());
        assert_eq!(
            ClientKeyMethod2::parse(&wire),
            Err(KeyMethodError::AwsTrailingBytes { extra: 3 })
        );
    }

    #[test]
    fn key_method_byte() {
        for framing in [Framing::Stock, Framing::Aws] {
            let mut wire = emitted(&client_message("pw"), framing);
            wire[4] = 1;
            assert_eq!(
                ClientKeyMethod2::parse(&wire),
                Err(KeyMethodError::UnsupportedKeyMethod { found: 1 })
            );
            wire[4] = 0xf3;
            assert_eq!(
                ClientKeyMethod2::parse(&wire),
                Err(KeyMethodError::UnsupportedKeyMethod { found: 3 })
            );
            // High bits are ignored, as OpenVPN masks them.
            wire[4] = 0x12;
            assert_eq!(
                complete::<ClientKeySource>(&wire).message,
                client_message("pw")
            );
        }
    }

    fn stock_with_options_field(field: &[u8]) -> Vec<u8> {
        let mut wire = vec![0, 0, 0, 0, 2];
        wire.extend_from_slice(&[7; 112]);
        wire.extend_from_slice(field);
        wire
    }

    #[test]
    fn over_long_length_is_refused_before_its_bytes_arrive() {
        let len = (MAX_OPTIONS_LEN + 2) as u16;
        let wire = stock_with_options_field(&len.to_be_bytes());
        assert_eq!(
            ClientKeyMethod2::parse(&wire),
            Err(KeyMethodError::FieldTooLong {
                field: Field::Options,
                len: MAX_OPTIONS_LEN + 1,
                max: MAX_OPTIONS_LEN
            })
        );
        let at_limit = (MAX_OPTIONS_LEN + 1) as u16;
        let wire = stock_with_options_field(&at_limit.to_be_bytes());
        assert_eq!(ClientKeyMethod2::parse(&wire), Ok(None));
    }

    #[test]
    fn string_must_end_in_nul() {
        let wire = stock_with_options_field(b"\x00\x04abcd");
        assert_eq!(
            ClientKeyMethod2::parse(&wire),
            Err(KeyMethodError::MissingNul {
                field: Field::Options
            })
        );
    }

    #[test]
    fn string_must_not_hold_nul() {
        let wire = stock_with_options_field(b"\x00\x04a\0c\0");
        assert_eq!(
            ClientKeyMethod2::parse(&wire),
            Err(KeyMethodError::InteriorNul {
                field: Field::Options,
                offset: 1
            })
        );
    }

    #[test]
    fn string_must_be_utf8() {
        let wire = stock_with_options_field(b"\x00\x03\xff\xfe\0");
        assert_eq!(
            ClientKeyMethod2::parse(&wire),
            Err(KeyMethodError::InvalidUtf8 {
                field: Field::Options
            })
        );
    }

    #[test]
    fn saml_sized_password_round_trips_in_aws_framing() {
        let password = format!(
            "CRV1::instance-1::{}",
            "A".repeat(MAX_AWS_PASSWORD_LEN - 18)
        );
        assert_eq!(password.len(), MAX_AWS_PASSWORD_LEN);
        let message = client_message(&password);
        let wire = emitted(&message, Framing::Aws);
        let parsed = complete::<ClientKeySource>(&wire);
        assert_eq!(parsed.message, message);
        assert_eq!(parsed.consumed, wire.len());
        assert!(wire.len() <= ClientKeyMethod2::max_wire_len(Framing::Aws));
    }

    #[test]
    fn over_limit_password_is_refused_both_ways() {
        let message = client_message(&"A".repeat(MAX_AWS_PASSWORD_LEN + 1));
        let mut out = b"keep".to_vec();
        assert_eq!(
            message.emit(Framing::Aws, &mut out),
            Err(KeyMethodError::FieldTooLong {
                field: Field::Password,
                len: MAX_AWS_PASSWORD_LEN + 1,
                max: MAX_AWS_PASSWORD_LEN
            })
        );
        assert_eq!(out, b"keep", "a failed emit leaves the buffer as it was");
        // Hand-build the AWS bytes the emitter refuses to produce.
        let ok = client_message(&"A".repeat(MAX_AWS_PASSWORD_LEN));
        let mut wire = emitted(&ok, Framing::Aws);
        let at = 4 + 1 + 112 + 4 + 27 + 4 + 6;
        let len = (MAX_AWS_PASSWORD_LEN + 2) as u32;
        wire[at..at + 4].copy_from_slice(&len.to_be_bytes());
        wire.insert(at + 4, b'A');
        let total = wire.len() as u32;
        wire[..4].copy_from_slice(&total.to_le_bytes());
        assert_eq!(
            ClientKeyMethod2::parse(&wire),
            Err(KeyMethodError::FieldTooLong {
                field: Field::Password,
                len: MAX_AWS_PASSWORD_LEN + 1,
                max: MAX_AWS_PASSWORD_LEN
            })
        );
    }

    #[test]
    fn stock_framing_keeps_the_stock_password_limit() {
        let ok = client_message(&"p".repeat(MAX_STOCK_PASSWORD_LEN));
        assert_eq!(
            complete::<ClientKeySource>(&emitted(&ok, Framing::Stock)).message,
            ok
        );
        let too_long = client_message(&"p".repeat(MAX_STOCK_PASSWORD_LEN + 1));
        assert_eq!(
            too_long.emit(Framing::Stock, &mut Vec::new()),
            Err(KeyMethodError::FieldTooLong {
                field: Field::Password,
                len: MAX_STOCK_PASSWORD_LEN + 1,
                max: MAX_STOCK_PASSWORD_LEN
            })
        );
    }

    #[test]
    fn emit_refuses_nul_inside_a_string() {
        let mut message = client_message("pw");
        message.username = "a\0b".to_owned();
        assert_eq!(
            message.emit(Framing::Stock, &mut Vec::new()),
            Err(KeyMethodError::InteriorNul {
                field: Field::Username,
                offset: 1
            })
        );
    }

    #[test]
    fn generate_fills_every_random() {
        let mut next = 0u8;
        let mut fill = |buf: &mut [u8]| {
            next += 1;
            buf.fill(next);
        };
        let client = ClientKeySource::generate(&mut fill);
        assert_eq!(
            (client.pre_master[47], client.random1[0], client.random2[31]),
            (1, 2, 3)
        );
        let server = ServerKeySource::generate(&mut fill);
        assert_eq!((server.random1[0], server.random2[31]), (4, 5));
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!("{:?}", client_message("hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("17") && shown.contains("alice"), "{shown}");
    }

    #[test]
    fn error_messages_name_field_and_limit() {
        let e = KeyMethodError::FieldTooLong {
            field: Field::Password,
            len: 5,
            max: 4,
        };
        assert_eq!(
            e.to_string(),
            "key-method 2 password: 5 bytes, at most 4 allowed"
        );
    }

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

    #[test]
    fn options_string_of_the_lab_client() {
        let text = "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-client";
        let list = parse_option_list(text).unwrap();
        assert_eq!(list.len(), 10);
        assert_eq!(
            list[0],
            Directive {
                name: "V4".to_owned(),
                args: vec![]
            }
        );
        assert_eq!(
            list[6],
            Directive {
                name: "auth".to_owned(),
                args: vec!["[null-digest]".to_owned()]
            }
        );
        assert_eq!(emit_option_list(&list).unwrap(), text);
    }

    #[test]
    fn option_quoting() {
        let d = Directive::parse(r#"static-challenge "Enter MFA code " 1"#)
            .unwrap()
            .unwrap();
        assert_eq!(d.args, vec!["Enter MFA code ".to_owned(), "1".to_owned()]);
        assert_eq!(
            d.to_text().unwrap(),
            r#"static-challenge "Enter MFA code " 1"#
        );
        let d = Directive::parse(r#"x 'a "b' "c\"d\\e" f\ g "" h"i j"k"#)
            .unwrap()
            .unwrap();
        assert_eq!(d.args, vec!["a \"b", "c\"d\\e", "f g", "", "hi jk"]);
        assert_eq!(
            d.to_text().unwrap(),
            r#"x "a \"b" "c\"d\\e" "f g" "" "hi jk""#
        );
        assert_eq!(Directive::parse("  \t "), Ok(None));
    }

    #[test]
    fn option_list_skips_empty_items() {
        let list = parse_option_list(",route 10.0.0.0 255.0.0.0,, ,ping 10,").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].name, "ping");
        assert_eq!(parse_option_list(""), Ok(vec![]));
        assert_eq!(emit_option_list(&[]), Ok(String::new()));
    }

    #[test]
    fn option_errors_with_offsets() {
        assert_eq!(
            parse_option_list("ping 10,x \"abc"),
            Err(OptionError::UnterminatedQuote { offset: 10 })
        );
        assert_eq!(
            parse_option_list("ping 10,x 'abc"),
            Err(OptionError::UnterminatedQuote { offset: 10 })
        );
        assert_eq!(
            parse_option_list("a,b\\"),
            Err(OptionError::DanglingEscape { offset: 3 })
        );
        assert_eq!(
            parse_option_list("a,\"b\\"),
            Err(OptionError::DanglingEscape { offset: 4 })
        );
        let comma = Directive {
            name: "route".to_owned(),
            args: vec!["a,b".to_owned()],
        };
        assert_eq!(
            emit_option_list(&[comma]),
            Err(OptionError::ForbiddenCharacter {
                name: "route".to_owned(),
                found: ','
            })
        );
        let nul = Directive {
            name: "x\0".to_owned(),
            args: vec![],
        };
        assert_eq!(
            nul.to_text(),
            Err(OptionError::ForbiddenCharacter {
                name: "x\0".to_owned(),
                found: '\0'
            })
        );
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..max)
            .prop_map(|chars| chars.into_iter().collect())
    }

    prop_compose! {
        fn client_source_strategy()(pre in any::<[u8; 32]>(), more in any::<[u8; 16]>(), r1 in any::<[u8; 32]>(), r2 in any::<[u8; 32]>()) -> ClientKeySource {
            let mut pre_master = [0u8; PRE_MASTER_LEN];
            pre_master[..32].copy_from_slice(&pre);
            pre_master[32..].copy_from_slice(&more);
            ClientKeySource { pre_master, random1: r1, random2: r2 }
        }
    }

    prop_compose! {
        fn client_strategy()(key_source in client_source_strategy(), options in text(60), username in text(30), password in text(300), peer_info in text(80)) -> ClientKeyMethod2 {
            KeyMethod2 { key_source, options, username, password, peer_info }
        }
    }

    prop_compose! {
        fn server_strategy()(r1 in any::<[u8; 32]>(), r2 in any::<[u8; 32]>(), options in text(60), username in text(5), password in text(5), peer_info in text(5)) -> ServerKeyMethod2 {
            KeyMethod2 { key_source: ServerKeySource { random1: r1, random2: r2 }, options, username, password, peer_info }
        }
    }

    fn framing_strategy() -> impl Strategy<Value = Framing> {
        prop_oneof![Just(Framing::Stock), Just(Framing::Aws)]
    }

    fn word() -> impl Strategy<Value = String> {
        prop::collection::vec(
            any::<char>().prop_filter("no NUL or comma", |c| !matches!(c, '\0' | ',')),
            0..12,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn client_round_trip(message in client_strategy(), framing in framing_strategy()) {
            let wire = emitted(&message, framing);
            let parsed = KeyMethod2::<ClientKeySource>::parse(&wire);
            prop_assert_eq!(parsed, Ok(Some(Parsed { message, framing, consumed: wire.len() })));
        }

        #[test]
        fn server_round_trip(message in server_strategy(), framing in framing_strategy()) {
            let wire = emitted(&message, framing);
            let parsed = KeyMethod2::<ServerKeySource>::parse(&wire);
            prop_assert_eq!(parsed, Ok(Some(Parsed { message, framing, consumed: wire.len() })));
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400), stock in any::<bool>()) {
            let mut buf = bytes;
            if stock && buf.len() >= 5 {
                buf[..5].copy_from_slice(&[0, 0, 0, 0, 2]);
            }
            let _ = ClientKeyMethod2::parse(&buf);
            let _ = ServerKeyMethod2::parse(&buf);
        }

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

        #[test]
        fn option_list_round_trip(list in prop::collection::vec((word(), prop::collection::vec(word(), 0..4)), 0..5)) {
            let list: Vec<Directive> = list.into_iter().map(|(name, args)| Directive { name, args }).collect();
            let text = emit_option_list(&list).unwrap();
            prop_assert_eq!(parse_option_list(&text), Ok(list));
        }

        #[test]
        fn option_parse_never_panics(text in "\\PC{0,100}") {
            let _ = parse_option_list(&text);
        }
    }
}
