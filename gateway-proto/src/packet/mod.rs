//! OpenVPN packet codecs: the opcode/key_id byte, the unwrapped control-packet layout
//! (session id, ACK block, message id, payload) and the P_DATA_V1/V2 headers, as checked
//! zero-copy views plus owned/borrowed `Repr` values with symmetric `parse`/`emit`.

use core::fmt;

mod control;
mod data_header;

pub use control::{Acks, ControlPacket, ControlRepr};
pub use data_header::{DataHeader, DataPacket};

/// Length of a session id on the wire.
pub const SESSION_ID_LEN: usize = 8;
/// Most ACKs a control packet may carry; more is a parse error.
pub const MAX_ACKS: usize = 8;
/// Most ACKs stock OpenVPN piggy-backs on a reset or P_CONTROL_V1 (we send no more).
pub const MAX_PIGGYBACK_ACKS: usize = 4;
/// Length of the P_DATA_V1 header (op|kid).
pub const DATA_V1_HEADER_LEN: usize = 1;
/// Length of the P_DATA_V2 header (op|kid, peer-id).
pub const DATA_V2_HEADER_LEN: usize = 4;

/// Why bytes could not be parsed as (or a value emitted into) an OpenVPN packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The packet ended before a field.
    #[error("packet too short for {field}: needed {needed} bytes, found {found}")]
    Truncated {
        /// The field that did not fit.
        field: &'static str,
        /// Bytes the packet needs up to and including that field.
        needed: usize,
        /// Bytes the packet has.
        found: usize,
    },
    /// The opcode (high 5 bits of byte 0) is not one OpenVPN defines.
    #[error("unknown opcode {found}: expected 1..=11")]
    UnknownOpcode {
        /// The opcode found.
        found: u8,
    },
    /// The opcode is valid but not of the kind this codec handles.
    #[error("unexpected opcode {found}: expected {expected}")]
    UnexpectedOpcode {
        /// What the codec accepts.
        expected: &'static str,
        /// The opcode found.
        found: Opcode,
    },
    /// More ACKs than a control packet may carry.
    #[error("too many ACKs: expected at most {max}, found {found}")]
    TooManyAcks {
        /// The limit.
        max: usize,
        /// The count found.
        found: usize,
    },
    /// A P_ACK_V1 with no ACK in it.
    #[error("P_ACK_V1 carries no ACK: expected at least 1")]
    EmptyAck,
    /// Bytes after the end of a packet kind that has no payload.
    #[error("{found} unexpected bytes after the end of {what}")]
    TrailingBytes {
        /// The packet kind.
        what: &'static str,
        /// How many extra bytes.
        found: usize,
    },
    /// A key_id outside 0..=7.
    #[error("invalid key_id {found}: expected 0..=7")]
    InvalidKeyId {
        /// The value given.
        found: u8,
    },
    /// A peer-id that does not fit in 24 bits.
    #[error("invalid peer-id {found:#x}: expected at most 0xffffff")]
    InvalidPeerId {
        /// The value given.
        found: u32,
    },
    /// The output buffer is too small for `emit`.
    #[error("output buffer too small: needed {needed} bytes, found {found}")]
    BufferTooSmall {
        /// Bytes `emit` needs.
        needed: usize,
        /// Bytes the buffer has.
        found: usize,
    },
    /// A `Repr` whose fields contradict each other (our bug, not the peer's).
    #[error("inconsistent packet to emit: {reason}")]
    InvalidRepr {
        /// Which rule the value breaks.
        reason: &'static str,
    },
}

/// Packet opcode: the high 5 bits of byte 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Key-method 1 client reset; removed from 2.6, rejected.
    ControlHardResetClientV1 = 1,
    /// Key-method 1 server reset; never sent.
    ControlHardResetServerV1 = 2,
    /// Start (or answer) a renegotiation with a new key_id.
    ControlSoftResetV1 = 3,
    /// Reliable control packet carrying TLS bytes.
    ControlV1 = 4,
    /// Standalone acknowledgement.
    AckV1 = 5,
    /// Data packet without peer-id.
    DataV1 = 6,
    /// First packet of a client (no wrap, tls-auth or tls-crypt).
    ControlHardResetClientV2 = 7,
    /// Server answer to a client hard reset.
    ControlHardResetServerV2 = 8,
    /// Data packet with a 24-bit peer-id.
    DataV2 = 9,
    /// First packet of a tls-crypt-v2 client (WKc appended).
    ControlHardResetClientV3 = 10,
    /// tls-crypt-v2 P_CONTROL_V1 with the WKc appended.
    ControlWkcV1 = 11,
}

impl Opcode {
    /// The opcode for a 5-bit value, if OpenVPN defines one.
    pub const fn from_u8(value: u8) -> Result<Self, PacketError> {
        Ok(match value {
            1 => Self::ControlHardResetClientV1,
            2 => Self::ControlHardResetServerV1,
            3 => Self::ControlSoftResetV1,
            4 => Self::ControlV1,
            5 => Self::AckV1,
            6 => Self::DataV1,
            7 => Self::ControlHardResetClientV2,
            8 => Self::ControlHardResetServerV2,
            9 => Self::DataV2,
            10 => Self::ControlHardResetClientV3,
            11 => Self::ControlWkcV1,
            found => return Err(PacketError::UnknownOpcode { found }),
        })
    }

    /// The 5-bit wire value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name as OpenVPN spells it (`P_CONTROL_V1`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ControlHardResetClientV1 => "P_CONTROL_HARD_RESET_CLIENT_V1",
            Self::ControlHardResetServerV1 => "P_CONTROL_HARD_RESET_SERVER_V1",
            Self::ControlSoftResetV1 => "P_CONTROL_SOFT_RESET_V1",
            Self::ControlV1 => "P_CONTROL_V1",
            Self::AckV1 => "P_ACK_V1",
            Self::DataV1 => "P_DATA_V1",
            Self::ControlHardResetClientV2 => "P_CONTROL_HARD_RESET_CLIENT_V2",
            Self::ControlHardResetServerV2 => "P_CONTROL_HARD_RESET_SERVER_V2",
            Self::DataV2 => "P_DATA_V2",
            Self::ControlHardResetClientV3 => "P_CONTROL_HARD_RESET_CLIENT_V3",
            Self::ControlWkcV1 => "P_CONTROL_WKC_V1",
        }
    }

    /// True for P_DATA_V1 and P_DATA_V2.
    pub const fn is_data(self) -> bool {
        matches!(self, Self::DataV1 | Self::DataV2)
    }

    /// True for the control opcodes a 2.6 peer may use with the §3.1 layout
    /// (soft reset, P_CONTROL_V1, P_ACK_V1, the V2/V3 hard resets, P_CONTROL_WKC_V1).
    pub const fn is_control(self) -> bool {
        matches!(
            self,
            Self::ControlSoftResetV1
                | Self::ControlV1
                | Self::AckV1
                | Self::ControlHardResetClientV2
                | Self::ControlHardResetServerV2
                | Self::ControlHardResetClientV3
                | Self::ControlWkcV1
        )
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key_id (low 3 bits of byte 0): 0 for a session's first key, then 1..=7 wrapping 7→1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KeyId(u8);

impl KeyId {
    /// The key_id of a session's first key.
    pub const ZERO: Self = Self(0);

    /// A key_id from its 3-bit value.
    pub const fn new(value: u8) -> Result<Self, PacketError> {
        if value <= 7 {
            Ok(Self(value))
        } else {
            Err(PacketError::InvalidKeyId { found: value })
        }
    }

    /// The 3-bit value.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The key_id a renegotiation moves to: +1, wrapping 7 → 1 (never back to 0).
    pub const fn next(self) -> Self {
        if self.0 >= 7 {
            Self(1)
        } else {
            Self(self.0 + 1)
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The 24-bit peer-id of P_DATA_V2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(u32);

impl PeerId {
    /// `0xFFFFFF`: "no peer-id"; never assign it to a session.
    pub const UNDEFINED: Self = Self(0x00FF_FFFF);
    /// The largest value that fits in 24 bits.
    pub const MAX: u32 = 0x00FF_FFFF;

    /// A peer-id from a value that must fit in 24 bits.
    pub const fn new(value: u32) -> Result<Self, PacketError> {
        if value <= Self::MAX {
            Ok(Self(value))
        } else {
            Err(PacketError::InvalidPeerId { found: value })
        }
    }

    /// The numeric value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// False for [`PeerId::UNDEFINED`].
    pub const fn is_defined(self) -> bool {
        self.0 != Self::UNDEFINED.0
    }

    /// The three big-endian wire bytes.
    pub const fn to_bytes(self) -> [u8; 3] {
        let b = self.0.to_be_bytes();
        [b[1], b[2], b[3]]
    }

    /// The value of three big-endian wire bytes.
    pub const fn from_bytes(bytes: [u8; 3]) -> Self {
        Self(u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An 8-byte session id, as chosen by the side that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Byte 0 of a packet: `opcode << 3 | key_id`.
pub const fn first_byte(opcode: Opcode, key_id: KeyId) -> u8 {
    (opcode.as_u8() << 3) | key_id.get()
}

/// Splits byte 0 of a packet into its opcode and key_id.
pub const fn parse_first_byte(byte: u8) -> Result<(Opcode, KeyId), PacketError> {
    match Opcode::from_u8(byte >> 3) {
        Ok(opcode) => Ok((opcode, KeyId(byte & 0x07))),
        Err(e) => Err(e),
    }
}

/// Opcode and key_id of any packet, from its first byte.
pub fn peek_header(packet: &[u8]) -> Result<(Opcode, KeyId), PacketError> {
    match packet.first() {
        Some(&byte) => parse_first_byte(byte),
        None => Err(PacketError::Truncated {
            field: "opcode",
            needed: 1,
            found: 0,
        }),
    }
}

/// The peer-id of a P_DATA_V2 datagram, read from its header alone (no session state, no
/// authentication): lets a server find the session of a datagram from an unknown source
/// address before that session authenticates it. `None` for anything else, for a
/// truncated header and for [`PeerId::UNDEFINED`].
pub fn peek_peer_id(packet: &[u8]) -> Option<u32> {
    match DataHeader::parse(packet) {
        Ok(DataHeader::V2 { peer_id, .. }) if peer_id.is_defined() => Some(peer_id.get()),
        _ => None,
    }
}

/// Sequential writer into a slice already sized by `buffer_len`.
struct Writer<'b> {
    out: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        if let Some(dst) = self.out.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }
}

#[cfg(test)]
mod tests;
