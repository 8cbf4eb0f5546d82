//! OpenVPN static keys (`--tls-auth`, `--tls-crypt`, `--secret`): parse, emit and generate
//! the 2048-bit key file, pick its sub-keys per key-direction or role (protocol doc §5.1),
//! and wrap/unwrap tls-crypt-v2 client keys with the server key (§5.2).

use std::fmt;

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::keys::Role;

/// Length of an OpenVPN static key: two key sets of cipher (64) + HMAC (64) bytes.
pub const STATIC_KEY_LEN: usize = 256;
/// Length of one cipher or HMAC slice of a static key.
pub const KEY_SLICE_LEN: usize = 64;

const BEGIN_MARKER: &str = "-----BEGIN OpenVPN Static key V1-----";
const END_MARKER: &str = "-----END OpenVPN Static key V1-----";
const HEX_DIGITS: usize = STATIC_KEY_LEN * 2;
const HEX_PER_LINE: usize = 32;

/// What was wrong with a static key file; line and column numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaticKeyError {
    /// No line equal to the BEGIN marker.
    #[error("static key file: no `-----BEGIN OpenVPN Static key V1-----` line found")]
    MissingBegin,
    /// The BEGIN marker was never followed by the END marker.
    #[error(
        "static key file: no `-----END OpenVPN Static key V1-----` line after the BEGIN marker on line {begin_line}"
    )]
    MissingEnd {
        /// Line of the BEGIN marker.
        begin_line: usize,
    },
    /// A second BEGIN marker appeared inside the key.
    #[error("static key file line {line}: second BEGIN marker inside the key")]
    NestedBegin {
        /// Line of the second marker.
        line: usize,
    },
    /// A character other than a hex digit or whitespace inside the key.
    #[error("static key file line {line}, column {column}: expected a hex digit, found {found:?}")]
    InvalidCharacter {
        /// Line of the character.
        line: usize,
        /// Column of the character (in characters).
        column: usize,
        /// The offending character.
        found: char,
    },
    /// More than 512 hex digits between the markers.
    #[error("static key file line {line}: more than 256 bytes (512 hex digits) of key material")]
    TooLong {
        /// Line where the 513th digit appeared.
        line: usize,
    },
    /// Fewer than 512 hex digits between the markers.
    #[error(
        "static key file: expected 256 bytes (512 hex digits) of key material, found {digits} hex digits"
    )]
    TooShort {
        /// Hex digits found.
        digits: usize,
    },
}

/// One of the two key sets of a static key (§5.1): set 0 = bytes 0..128, set 1 = 128..256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySet {
    /// Bytes 0..63 (cipher) and 64..127 (HMAC).
    Zero,
    /// Bytes 128..191 (cipher) and 192..255 (HMAC).
    One,
}

impl KeySet {
    fn offset(self) -> usize {
        match self {
            KeySet::Zero => 0,
            KeySet::One => 2 * KEY_SLICE_LEN,
        }
    }
}

/// The tls-auth `key-direction` (`tls-auth file 0|1`, or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDirection {
    /// No direction: both sides send and verify with set 0's HMAC.
    Bidirectional,
    /// `key-direction 0` (usual on servers): send with set 0, verify with set 1.
    Normal,
    /// `key-direction 1` (usual on clients): send with set 1, verify with set 0.
    Inverse,
}

/// Which key set protects what we send and what we receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySets {
    /// Key set for packets we send.
    pub send: KeySet,
    /// Key set for packets we receive.
    pub recv: KeySet,
}

impl KeySets {
    /// Key sets for tls-auth with the given key-direction.
    pub fn tls_auth(direction: KeyDirection) -> Self {
        match direction {
            KeyDirection::Bidirectional => KeySets {
                send: KeySet::Zero,
                recv: KeySet::Zero,
            },
            KeyDirection::Normal => KeySets {
                send: KeySet::Zero,
                recv: KeySet::One,
            },
            KeyDirection::Inverse => KeySets {
                send: KeySet::One,
                recv: KeySet::Zero,
            },
        }
    }

    /// Key sets for tls-crypt and tls-crypt-v2: the server sends with set 0, the client with
    /// set 1; there is no key-direction option.
    pub fn tls_crypt(role: Role) -> Self {
        match role {
            Role::Server => KeySets {
                send: KeySet::Zero,
                recv: KeySet::One,
            },
            Role::Client => KeySets {
                send: KeySet::One,
                recv: KeySet::Zero,
            },
        }
    }
}

/// A 2048-bit OpenVPN static key. `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKey {
    bytes: [u8; STATIC_KEY_LEN],
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticKey(<redacted>)")
    }
}

impl StaticKey {
    /// Wraps 256 raw key bytes.
    pub fn from_bytes(bytes: [u8; STATIC_KEY_LEN]) -> Self {
        StaticKey { bytes }
    }

    /// The 256 raw key bytes.
    pub fn as_bytes(&self) -> &[u8; STATIC_KEY_LEN] {
        &self.bytes
    }

    /// A new key from the caller's random source, which must fill the slice it is given
    /// with cryptographically secure random bytes.
    pub fn generate(fill_random: &mut dyn FnMut(&mut [u8])) -> Self {
        let mut bytes = [0u8; STATIC_KEY_LEN];
        fill_random(&mut bytes);
        StaticKey { bytes }
    }

    /// Parses a static key file. Text before the BEGIN line and after the END line (such as
    /// `#` comments) is ignored; between them only hex digits and whitespace are allowed.
    pub fn parse(text: &str) -> Result<Self, StaticKeyError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        let begin_line = lines
            .by_ref()
            .find(|(_, l)| *l == BEGIN_MARKER)
            .map(|(n, _)| n)
            .ok_or(StaticKeyError::MissingBegin)?;
        let mut bytes = [0u8; STATIC_KEY_LEN];
        let mut digits = 0usize;
        for (line, content) in lines {
            if content == END_MARKER {
                if digits != HEX_DIGITS {
                    return Err(StaticKeyError::TooShort { digits });
                }
                return Ok(StaticKey { bytes });
            }
            if content == BEGIN_MARKER {
                return Err(StaticKeyError::NestedBegin { line });
            }
            for (index, found) in content.chars().enumerate() {
                if found.is_whitespace() {
                    continue;
                }
                let nibble = found.to_digit(16).ok_or(StaticKeyError::InvalidCharacter {
                    line,
                    column: index + 1,
                    found,
                })?;
                let byte = bytes
                    .get_mut(digits / 2)
                    .ok_or(StaticKeyError::TooLong { line })?;
                // `to_digit(16)` returns at most 15, so the cast is lossless.
                let nibble = nibble as u8;
                *byte = if digits.is_multiple_of(2) {
                    nibble << 4
                } else {
                    *byte | nibble
                };
                digits += 1;
            }
        }
        Err(StaticKeyError::MissingEnd { begin_line })
    }

    /// The key file text as `openvpn --genkey` lays it out: a comment header, the BEGIN
    /// line, 16 lines of 32 lowercase hex digits, the END line.
    pub fn to_file_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(HEX_DIGITS + 160);
        out.push_str("#\n# 2048 bit OpenVPN static key\n#\n");
        out.push_str(BEGIN_MARKER);
        out.push('\n');
        for line in self.bytes.chunks(HEX_PER_LINE / 2) {
            for byte in line {
                // Writing to a String cannot fail.
                let _ = write!(out, "{byte:02x}");
            }
            out.push('\n');
        }
        out.push_str(END_MARKER);
        out.push('\n');
        out
    }

    /// The 64-byte cipher slice of a key set.
    pub fn cipher_key(&self, set: KeySet) -> &[u8; KEY_SLICE_LEN] {
        self.slice(set.offset())
    }

    /// The 64-byte HMAC slice of a key set.
    pub fn hmac_key(&self, set: KeySet) -> &[u8; KEY_SLICE_LEN] {
        self.slice(set.offset() + KEY_SLICE_LEN)
    }

    #[expect(
        clippy::indexing_slicing,
        reason = "offset is one of KeySet's constants, inside the 256-byte key"
    )]
    fn slice(&self, offset: usize) -> &[u8; KEY_SLICE_LEN] {
        let (slices, _) = self.bytes.as_chunks::<KEY_SLICE_LEN>();
        &slices[offset / KEY_SLICE_LEN]
    }
}

/// Length of the raw tls-crypt-v2 server key.
pub const TLS_CRYPT_V2_SERVER_KEY_LEN: usize = 128;
/// Largest wrapped client key (WKc) OpenVPN accepts.
pub const MAX_WRAPPED_CLIENT_KEY_LEN: usize = 1024;
const WKC_TAG_LEN: usize = 32;
const WKC_LEN_FIELD: usize = 2;
/// Smallest wrapped client key: tag, the 256-byte client key, the length field.
pub const MIN_WRAPPED_CLIENT_KEY_LEN: usize = WKC_TAG_LEN + STATIC_KEY_LEN + WKC_LEN_FIELD;
/// Largest metadata a wrapped client key can carry.
pub const MAX_CLIENT_KEY_METADATA_LEN: usize =
    MAX_WRAPPED_CLIENT_KEY_LEN - MIN_WRAPPED_CLIENT_KEY_LEN;
/// Metadata type byte: user data follows.
pub const METADATA_TYPE_USER: u8 = 0x00;
/// Metadata type byte: an 8-byte big-endian Unix timestamp follows.
pub const METADATA_TYPE_TIMESTAMP: u8 = 0x01;

/// Why a tls-crypt-v2 wrapped client key (WKc) was refused or could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsCryptV2Error {
    /// The WKc is shorter than tag + client key + length field.
    #[error("wrapped client key: {len} bytes, expected at least {MIN_WRAPPED_CLIENT_KEY_LEN}")]
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The WKc is longer than OpenVPN allows.
    #[error("wrapped client key: {len} bytes, at most {MAX_WRAPPED_CLIENT_KEY_LEN} allowed")]
    TooLong {
        /// Bytes given (or that wrapping would produce).
        len: usize,
    },
    /// The trailing length field disagrees with the WKc length.
    #[error("wrapped client key: length field says {field}, but the key is {actual} bytes")]
    LengthMismatch {
        /// Value of the trailing u16.
        field: usize,
        /// Actual WKc length.
        actual: usize,
    },
    /// The tag did not verify: wrong server key or a forged/corrupted WKc.
    #[error("wrapped client key: authentication tag mismatch")]
    BadTag,
}

/// The tls-crypt-v2 server key (`Ke` = bytes 0..32, `Ka` = bytes 64..96). `Debug` does not
/// print the key.
#[derive(Clone)]
pub struct TlsCryptV2ServerKey {
    cipher: [u8; 32],
    hmac: hmac::Key,
}

impl fmt::Debug for TlsCryptV2ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsCryptV2ServerKey(<redacted>)")
    }
}

/// A client key recovered from a WKc, with the metadata the server put in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeyV2 {
    /// The client's tls-crypt key `Kc`; the server uses it with [`KeySets::tls_crypt`].
    pub key: StaticKey,
    /// Metadata: byte 0 is the type ([`METADATA_TYPE_USER`], [`METADATA_TYPE_TIMESTAMP`]).
    pub metadata: Vec<u8>,
}

impl ClientKeyV2 {
    /// The issue time if the metadata is of the timestamp type with exactly 8 bytes.
    pub fn timestamp(&self) -> Option<u64> {
        match self.metadata.split_first() {
            Some((&METADATA_TYPE_TIMESTAMP, rest)) => {
                let bytes: [u8; 8] = rest.try_into().ok()?;
                Some(u64::from_be_bytes(bytes))
            }
            _ => None,
        }
    }
}

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

impl TlsCryptV2ServerKey {
    /// The key from its 128 raw bytes (the base64 payload of the server key PEM).
    pub fn from_bytes(bytes: &[u8; TLS_CRYPT_V2_SERVER_KEY_LEN]) -> Self {
        let mut cipher = [0u8; 32];
        cipher.copy_from_slice(&bytes[..32]);
        TlsCryptV2ServerKey {
            cipher,
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &bytes[64..96]),
        }
    }

    /// Builds a WKc for `client_key`: `T || AES-256-CTR(Ke, T[..16], Kc || metadata) || len`.
    pub fn wrap_client_key(
        &self,
        client_key: &StaticKey,
        metadata: &[u8],
    ) -> Result<Vec<u8>, TlsCryptV2Error> {
        let total = MIN_WRAPPED_CLIENT_KEY_LEN + metadata.len();
        let len_field = u16::try_from(total)
            .ok()
            .filter(|_| total <= MAX_WRAPPED_CLIENT_KEY_LEN)
            .ok_or(TlsCryptV2Error::TooLong { len: total })?
            .to_be_bytes();
        let mut ctx = hmac::Context::with_key(&self.hmac);
        ctx.update(&len_field);
        ctx.update(client_key.as_bytes());
        ctx.update(metadata);
        let tag = ctx.sign();
        let mut body = Vec::with_capacity(total - WKC_TAG_LEN - WKC_LEN_FIELD);
        body.extend_from_slice(client_key.as_bytes());
        body.extend_from_slice(metadata);
        self.apply_ctr(tag.as_ref(), &mut body)?;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(tag.as_ref());
        out.extend_from_slice(&body);
        out.extend_from_slice(&len_field);
        Ok(out)
    }

    /// Verifies and decrypts a WKc (as cut off the end of a V3 reset or WKC_V1 packet).
    pub fn unwrap_client_key(&self, wkc: &[u8]) -> Result<ClientKeyV2, TlsCryptV2Error> {
        let len = wkc.len();
        if len < MIN_WRAPPED_CLIENT_KEY_LEN {
            return Err(TlsCryptV2Error::TooShort { len });
        }
        if len > MAX_WRAPPED_CLIENT_KEY_LEN {
            return Err(TlsCryptV2Error::TooLong { len });
        }
        let (tag, rest) = wkc.split_at(WKC_TAG_LEN);
        let (ciphertext, len_field) = rest
            .split_last_chunk::<WKC_LEN_FIELD>()
            .ok_or(TlsCryptV2Error::TooShort { len })?;
        let field = usize::from(u16::from_be_bytes(*len_field));
        if field != len {
            return Err(TlsCryptV2Error::LengthMismatch { field, actual: len });
        }
        let mut plaintext = ciphertext.to_vec();
        self.apply_ctr(tag, &mut plaintext)?;
        let mut ctx = hmac::Context::with_key(&self.hmac);
        ctx.update(len_field);
        ctx.update(&plaintext);
        let expected = ctx.sign();
        if !bool::from(expected.as_ref().ct_eq(tag)) {
            return Err(TlsCryptV2Error::BadTag);
        }
        let metadata = plaintext.split_off(STATIC_KEY_LEN);
        let mut key = [0u8; STATIC_KEY_LEN];
        key.copy_from_slice(&plaintext);
        Ok(ClientKeyV2 {
            key: StaticKey::from_bytes(key),
            metadata,
        })
    }

    /// AES-256-CTR over `data` with the first 16 bytes of `tag` as the IV.
    fn apply_ctr(&self, tag: &[u8], data: &mut [u8]) -> Result<(), TlsCryptV2Error> {
        let iv = *tag.first_chunk::<16>().ok_or(TlsCryptV2Error::BadTag)?;
        let mut ctr = Aes256Ctr::new(&self.cipher.into(), &iv.into());
        ctr.apply_keystream(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counting_key() -> StaticKey {
        let mut bytes = [0u8; STATIC_KEY_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        StaticKey::from_bytes(bytes)
    }

    fn key_body(key: &StaticKey) -> String {
        key.to_file_text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn wrap_body(body: &str) -> String {
        format!("{BEGIN_MARKER}\n{body}\n{END_MARKER}\n")
    }

    #[test]
    fn emits_the_genkey_layout() {
        let text = counting_key().to_file_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3 + 1 + 16 + 1);
        assert_eq!(lines[3], BEGIN_MARKER);
        assert_eq!(lines[4], "000102030405060708090a0b0c0d0e0f");
        assert_eq!(lines[19], "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        assert_eq!(lines[20], END_MARKER);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn parses_with_comments_crlf_uppercase_and_odd_wrapping() {
        let key = counting_key();
        let hex: String = key_body(&key).split_whitespace().collect();
        let body = format!(
            "  {}\r\n{}\r\n\t{}  ",
            hex[..7].to_uppercase(),
            &hex[7..300],
            &hex[300..]
        );
        let text = format!(
            "# comment\r\nfoo bar\r\n{BEGIN_MARKER}\r\n{body}\r\n{END_MARKER}\r\ntrailing junk !!\n"
        );
        assert_eq!(StaticKey::parse(&text), Ok(key));
    }

    #[test]
    fn missing_begin() {
        assert_eq!(
            StaticKey::parse("# nothing here\n"),
            Err(StaticKeyError::MissingBegin)
        );
        assert_eq!(StaticKey::parse(""), Err(StaticKeyError::MissingBegin));
    }

    #[test]
    fn missing_end() {
        let text = format!("#\n{BEGIN_MARKER}\n{}\n", key_body(&counting_key()));
        assert_eq!(
            StaticKey::parse(&text),
            Err(StaticKeyError::MissingEnd { begin_line: 2 })
        );
    }

    #[test]
    fn nested_begin() {
        let text = format!("{BEGIN_MARKER}\n0011\n{BEGIN_MARKER}\n");
        assert_eq!(
            StaticKey::parse(&text),
            Err(StaticKeyError::NestedBegin { line: 3 })
        );
    }

    #[test]
    fn invalid_character_names_line_and_column() {
        let mut body = key_body(&counting_key());
        // Line 3 of the file is the third body line; replace its 5th character.
        let offset = 2 * 33 + 4;
        body.replace_range(offset..offset + 1, "g");
        let text = format!("# c\n{BEGIN_MARKER}\n{body}\n{END_MARKER}\n");
        assert_eq!(
            StaticKey::parse(&text),
            Err(StaticKeyError::InvalidCharacter {
                line: 5,
                column: 5,
                found: 'g'
            })
        );
    }

    #[test]
    fn too_short_counts_digits() {
        let body = key_body(&counting_key());
        let short = &body[..body.len() - 3];
        assert_eq!(
            StaticKey::parse(&wrap_body(short)),
            Err(StaticKeyError::TooShort { digits: 509 })
        );
        assert_eq!(
            StaticKey::parse(&wrap_body("")),
            Err(StaticKeyError::TooShort { digits: 0 })
        );
    }

    #[test]
    fn too_long_names_line() {
        let body = format!("{}\n00", key_body(&counting_key()));
        assert_eq!(
            StaticKey::parse(&wrap_body(&body)),
            Err(StaticKeyError::TooLong { line: 18 })
        );
    }

    #[test]
    fn errors_render_what_and_where() {
        let err = StaticKeyError::InvalidCharacter {
            line: 7,
            column: 3,
            found: 'z',
        };
        assert_eq!(
            err.to_string(),
            "static key file line 7, column 3: expected a hex digit, found 'z'"
        );
    }

    #[test]
    fn generate_uses_the_callers_random_bytes() {
        let mut calls = 0;
        let key = StaticKey::generate(&mut |buf: &mut [u8]| {
            calls += 1;
            buf.fill(0xa5);
        });
        assert_eq!(calls, 1);
        assert_eq!(key.as_bytes(), &[0xa5; STATIC_KEY_LEN]);
    }

    #[test]
    fn debug_does_not_print_key_bytes() {
        let key = StaticKey::from_bytes([0xab; STATIC_KEY_LEN]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"));
    }

    #[test]
    fn slices_follow_the_file_layout() {
        let key = counting_key();
        assert_eq!(key.cipher_key(KeySet::Zero)[0], 0);
        assert_eq!(key.cipher_key(KeySet::Zero)[63], 63);
        assert_eq!(key.hmac_key(KeySet::Zero)[0], 64);
        assert_eq!(key.cipher_key(KeySet::One)[0], 128);
        assert_eq!(key.hmac_key(KeySet::One)[0], 192);
        assert_eq!(key.hmac_key(KeySet::One)[63], 255);
    }

    #[test]
    fn tls_auth_directions() {
        let both = KeySets::tls_auth(KeyDirection::Bidirectional);
        assert_eq!((both.send, both.recv), (KeySet::Zero, KeySet::Zero));
        let normal = KeySets::tls_auth(KeyDirection::Normal);
        assert_eq!((normal.send, normal.recv), (KeySet::Zero, KeySet::One));
        let inverse = KeySets::tls_auth(KeyDirection::Inverse);
        assert_eq!((inverse.send, inverse.recv), (KeySet::One, KeySet::Zero));
    }

    #[test]
    fn tls_crypt_roles_mirror_each_other() {
        let server = KeySets::tls_crypt(Role::Server);
        let client = KeySets::tls_crypt(Role::Client);
        assert_eq!((server.send, server.recv), (KeySet::Zero, KeySet::One));
        assert_eq!((client.send, client.recv), (server.recv, server.send));
    }

    fn server_key() -> TlsCryptV2ServerKey {
        let mut bytes = [0u8; TLS_CRYPT_V2_SERVER_KEY_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(3);
        }
        TlsCryptV2ServerKey::from_bytes(&bytes)
    }

    #[test]
    fn wkc_layout_and_round_trip() {
        let server = server_key();
        let client = counting_key();
        let mut metadata = vec![METADATA_TYPE_TIMESTAMP];
        metadata.extend_from_slice(&1_700_000_000u64.to_be_bytes());
        let wkc = server.wrap_client_key(&client, &metadata).unwrap();
        assert_eq!(wkc.len(), 32 + 256 + 9 + 2);
        assert_eq!(&wkc[wkc.len() - 2..], &(wkc.len() as u16).to_be_bytes());
        assert_ne!(&wkc[32..288], client.as_bytes(), "Kc must be encrypted");
        let unwrapped = server.unwrap_client_key(&wkc).unwrap();
        assert_eq!(unwrapped.key, client);
        assert_eq!(unwrapped.metadata, metadata);
        assert_eq!(unwrapped.timestamp(), Some(1_700_000_000));
    }

    #[test]
    fn wkc_tag_covers_length_key_and_metadata_independently_computed() {
        // Recompute T = HMAC-SHA256(Ka, len || Kc || metadata) with the hmac crate.
        use ::hmac::{Hmac, Mac};
        let mut raw = [0u8; TLS_CRYPT_V2_SERVER_KEY_LEN];
        raw.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let server = TlsCryptV2ServerKey::from_bytes(&raw);
        let wkc = server.wrap_client_key(&counting_key(), b"\x00hi").unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&raw[64..96]).unwrap();
        mac.update(&(wkc.len() as u16).to_be_bytes());
        mac.update(counting_key().as_bytes());
        mac.update(b"\x00hi");
        assert_eq!(&wkc[..32], &mac.finalize().into_bytes()[..]);
    }

    #[test]
    fn wkc_user_metadata_has_no_timestamp() {
        let server = server_key();
        let wkc = server
            .wrap_client_key(&counting_key(), &[METADATA_TYPE_USER, 1, 2])
            .unwrap();
        let unwrapped = server.unwrap_client_key(&wkc).unwrap();
        assert_eq!(unwrapped.timestamp(), None);
        assert_eq!(
            ClientKeyV2 {
                key: counting_key(),
                metadata: vec![METADATA_TYPE_TIMESTAMP, 1]
            }
            .timestamp(),
            None
        );
    }

    #[test]
    fn wkc_too_short_too_long_and_length_mismatch() {
        let server = server_key();
        assert_eq!(
            server.unwrap_client_key(&[0u8; MIN_WRAPPED_CLIENT_KEY_LEN - 1]),
            Err(TlsCryptV2Error::TooShort { len: 289 })
        );
        assert_eq!(
            server.unwrap_client_key(&[0u8; MAX_WRAPPED_CLIENT_KEY_LEN + 1]),
            Err(TlsCryptV2Error::TooLong { len: 1025 })
        );
        assert_eq!(
            server.wrap_client_key(&counting_key(), &[0u8; MAX_CLIENT_KEY_METADATA_LEN + 1]),
            Err(TlsCryptV2Error::TooLong { len: 1025 })
        );
        assert!(
            server
                .wrap_client_key(&counting_key(), &[0u8; MAX_CLIENT_KEY_METADATA_LEN])
                .is_ok()
        );
        let mut wkc = server.wrap_client_key(&counting_key(), &[0]).unwrap();
        let n = wkc.len();
        wkc[n - 1] ^= 1;
        assert_eq!(
            server.unwrap_client_key(&wkc),
            Err(TlsCryptV2Error::LengthMismatch {
                field: n ^ 1,
                actual: n
            })
        );
    }

    #[test]
    fn wkc_wrong_server_key_is_bad_tag() {
        let wkc = server_key().wrap_client_key(&counting_key(), &[0]).unwrap();
        let other = TlsCryptV2ServerKey::from_bytes(&[9u8; TLS_CRYPT_V2_SERVER_KEY_LEN]);
        assert_eq!(other.unwrap_client_key(&wkc), Err(TlsCryptV2Error::BadTag));
    }

    proptest! {
        #[test]
        fn file_round_trip(bytes in prop::collection::vec(any::<u8>(), STATIC_KEY_LEN)) {
            let mut raw = [0u8; STATIC_KEY_LEN];
            raw.copy_from_slice(&bytes);
            let key = StaticKey::from_bytes(raw);
            prop_assert_eq!(StaticKey::parse(&key.to_file_text()), Ok(key));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,600}") {
            let _ = StaticKey::parse(&text);
            let _ = StaticKey::parse(&format!("{BEGIN_MARKER}\n{text}\n{END_MARKER}"));
        }

        #[test]
        fn wkc_any_flipped_bit_is_rejected(
            metadata in prop::collection::vec(any::<u8>(), 0..64),
            bit in 0usize..(8 * (MIN_WRAPPED_CLIENT_KEY_LEN + 64)),
        ) {
            let server = server_key();
            let mut wkc = server.wrap_client_key(&counting_key(), &metadata).unwrap();
            let bit = bit % (8 * wkc.len());
            wkc[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(server.unwrap_client_key(&wkc).is_err());
        }

        #[test]
        fn wkc_round_trip(
            key in prop::collection::vec(any::<u8>(), STATIC_KEY_LEN),
            metadata in prop::collection::vec(any::<u8>(), 0..=MAX_CLIENT_KEY_METADATA_LEN),
        ) {
            let mut raw = [0u8; STATIC_KEY_LEN];
            raw.copy_from_slice(&key);
            let key = StaticKey::from_bytes(raw);
            let server = server_key();
            let wkc = server.wrap_client_key(&key, &metadata).unwrap();
            prop_assert_eq!(
                server.unwrap_client_key(&wkc),
                Ok(ClientKeyV2 { key, metadata })
            );
        }
    }
}
