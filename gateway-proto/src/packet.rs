//! OpenVPN packet codecs: the opcode/key_id byte, the unwrapped control-packet layout
//! (session id, ACK block, message id, payload) and the P_DATA_V1/V2 headers, as checked
//! zero-copy views plus owned/borrowed `Repr` values with symmetric `parse`/`emit`.

use core::fmt;

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

const OFF_SESSION_ID: usize = 1;
const OFF_ACK_COUNT: usize = OFF_SESSION_ID + SESSION_ID_LEN;
const OFF_ACKS: usize = OFF_ACK_COUNT + 1;
const ACK_ID_LEN: usize = 4;
const MESSAGE_ID_LEN: usize = 4;

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

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    let array: [u8; 4] = field.try_into().ok()?;
    Some(u32::from_be_bytes(array))
}

fn read_session_id(bytes: &[u8], offset: usize) -> Option<SessionId> {
    let field = bytes.get(offset..offset.checked_add(SESSION_ID_LEN)?)?;
    let array: [u8; SESSION_ID_LEN] = field.try_into().ok()?;
    Some(SessionId(array))
}

/// A fixed-capacity list of up to [`MAX_ACKS`] acknowledged message ids (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Acks {
    ids: [u32; MAX_ACKS],
    len: u8,
}

impl Acks {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            ids: [0; MAX_ACKS],
            len: 0,
        }
    }

    /// A list holding `ids`, which must number at most [`MAX_ACKS`].
    pub fn from_slice(ids: &[u32]) -> Result<Self, PacketError> {
        let mut acks = Self::new();
        for &id in ids {
            acks.push(id)?;
        }
        Ok(acks)
    }

    /// Appends a message id; fails once [`MAX_ACKS`] are held.
    pub fn push(&mut self, message_id: u32) -> Result<(), PacketError> {
        let slot = self
            .ids
            .get_mut(usize::from(self.len))
            .ok_or(PacketError::TooManyAcks {
                max: MAX_ACKS,
                found: usize::from(self.len) + 1,
            })?;
        *slot = message_id;
        self.len += 1;
        Ok(())
    }

    /// The message ids, in wire order.
    pub fn as_slice(&self) -> &[u32] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Number of ids held.
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// True when no id is held.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A checked, zero-copy view of an unwrapped control packet (§3.1):
/// `op|kid, own sid, n, n × acked msg-id, [peer sid if n > 0], [msg-id unless P_ACK_V1], payload`.
///
/// For P_CONTROL_HARD_RESET_CLIENT_V3 and P_CONTROL_WKC_V1 the view covers the packet
/// after the wrap layer has removed the WKc; whatever follows the msg-id is the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket<'a> {
    bytes: &'a [u8],
    opcode: Opcode,
    key_id: KeyId,
    ack_count: usize,
}

impl<'a> ControlPacket<'a> {
    /// Validates `bytes` as a control packet: a control opcode, at most [`MAX_ACKS`] ACKs,
    /// every field present, at least one ACK and nothing after it for P_ACK_V1.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, PacketError> {
        let (opcode, key_id) = peek_header(bytes)?;
        if !opcode.is_control() {
            return Err(PacketError::UnexpectedOpcode {
                expected: "a control opcode (3, 4, 5, 7, 8, 10 or 11)",
                found: opcode,
            });
        }
        let ack_count = match bytes.get(OFF_ACK_COUNT) {
            Some(&n) => usize::from(n),
            None => {
                return Err(PacketError::Truncated {
                    field: "session id and ACK count",
                    needed: OFF_ACKS,
                    found: bytes.len(),
                });
            }
        };
        if ack_count > MAX_ACKS {
            return Err(PacketError::TooManyAcks {
                max: MAX_ACKS,
                found: ack_count,
            });
        }
        if opcode == Opcode::AckV1 && ack_count == 0 {
            return Err(PacketError::EmptyAck);
        }
        let packet = Self {
            bytes,
            opcode,
            key_id,
            ack_count,
        };
        let acks_end = packet.acks_end();
        if bytes.len() < acks_end {
            return Err(PacketError::Truncated {
                field: "ACK block",
                needed: acks_end,
                found: bytes.len(),
            });
        }
        if opcode == Opcode::AckV1 {
            if bytes.len() > acks_end {
                return Err(PacketError::TrailingBytes {
                    what: "P_ACK_V1",
                    found: bytes.len() - acks_end,
                });
            }
        } else if bytes.len() < acks_end + MESSAGE_ID_LEN {
            return Err(PacketError::Truncated {
                field: "message id",
                needed: acks_end + MESSAGE_ID_LEN,
                found: bytes.len(),
            });
        }
        Ok(packet)
    }

    /// End of the ACK block (including the peer session id when present).
    fn acks_end(&self) -> usize {
        let ids_end = OFF_ACKS + ACK_ID_LEN * self.ack_count;
        if self.ack_count > 0 {
            ids_end + SESSION_ID_LEN
        } else {
            ids_end
        }
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }

    /// The key_id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The sender's session id.
    pub fn session_id(&self) -> SessionId {
        read_session_id(self.bytes, OFF_SESSION_ID).unwrap_or_default()
    }

    /// Number of acknowledged message ids.
    pub fn ack_count(&self) -> usize {
        self.ack_count
    }

    /// The acknowledged message ids, in wire order.
    pub fn acks(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        let end = OFF_ACKS + ACK_ID_LEN * self.ack_count;
        self.bytes
            .get(OFF_ACKS..end)
            .unwrap_or(&[])
            .chunks_exact(ACK_ID_LEN)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The receiver's session id echoed by the sender; present iff there are ACKs.
    pub fn remote_session_id(&self) -> Option<SessionId> {
        if self.ack_count == 0 {
            return None;
        }
        read_session_id(self.bytes, OFF_ACKS + ACK_ID_LEN * self.ack_count)
    }

    /// The reliability-layer message id; absent in P_ACK_V1.
    pub fn message_id(&self) -> Option<u32> {
        if self.opcode == Opcode::AckV1 {
            return None;
        }
        read_u32(self.bytes, self.acks_end())
    }

    /// The payload after the message id (empty for P_ACK_V1).
    pub fn payload(&self) -> &'a [u8] {
        if self.opcode == Opcode::AckV1 {
            return &[];
        }
        self.bytes
            .get(self.acks_end() + MESSAGE_ID_LEN..)
            .unwrap_or(&[])
    }
}

/// A control packet's fields, borrowing its payload; `parse` and `emit` are inverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRepr<'a> {
    /// A control opcode (see [`Opcode::is_control`]).
    pub opcode: Opcode,
    /// The key_id.
    pub key_id: KeyId,
    /// The sender's session id.
    pub session_id: SessionId,
    /// Acknowledged message ids (at least one for P_ACK_V1).
    pub acks: Acks,
    /// The receiver's session id; `Some` exactly when `acks` is not empty.
    pub remote_session_id: Option<SessionId>,
    /// The message id; `None` exactly for P_ACK_V1.
    pub message_id: Option<u32>,
    /// The payload; empty for P_ACK_V1.
    pub payload: &'a [u8],
}

impl<'a> ControlRepr<'a> {
    /// The fields of a checked control packet.
    pub fn parse(packet: &ControlPacket<'a>) -> Self {
        let mut acks = Acks::new();
        for id in packet.acks() {
            // The view holds at most MAX_ACKS ids, so push cannot fail.
            let _ = acks.push(id);
        }
        Self {
            opcode: packet.opcode(),
            key_id: packet.key_id(),
            session_id: packet.session_id(),
            acks,
            remote_session_id: packet.remote_session_id(),
            message_id: packet.message_id(),
            payload: packet.payload(),
        }
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        let mut len = OFF_ACKS + ACK_ID_LEN * self.acks.len();
        if !self.acks.is_empty() {
            len += SESSION_ID_LEN;
        }
        if self.message_id.is_some() {
            len += MESSAGE_ID_LEN;
        }
        len + self.payload.len()
    }

    fn validate(&self) -> Result<(), PacketError> {
        if !self.opcode.is_control() {
            return Err(PacketError::UnexpectedOpcode {
                expected: "a control opcode (3, 4, 5, 7, 8, 10 or 11)",
                found: self.opcode,
            });
        }
        if self.acks.is_empty() != self.remote_session_id.is_none() {
            return Err(PacketError::InvalidRepr {
                reason: "remote session id must be present exactly when ACKs are",
            });
        }
        if self.opcode == Opcode::AckV1 {
            if self.acks.is_empty() {
                return Err(PacketError::EmptyAck);
            }
            if self.message_id.is_some() || !self.payload.is_empty() {
                return Err(PacketError::InvalidRepr {
                    reason: "P_ACK_V1 has no message id and no payload",
                });
            }
        } else if self.message_id.is_none() {
            return Err(PacketError::InvalidRepr {
                reason: "every control opcode but P_ACK_V1 needs a message id",
            });
        }
        Ok(())
    }

    /// Writes the packet at the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, PacketError> {
        self.validate()?;
        let len = self.buffer_len();
        let found = buf.len();
        let out = buf
            .get_mut(..len)
            .ok_or(PacketError::BufferTooSmall { needed: len, found })?;
        let mut writer = Writer { out, pos: 0 };
        writer.put(&[first_byte(self.opcode, self.key_id)]);
        writer.put(&self.session_id.0);
        writer.put(&[self.acks.len]);
        for id in self.acks.as_slice() {
            writer.put(&id.to_be_bytes());
        }
        if let Some(remote) = self.remote_session_id {
            writer.put(&remote.0);
        }
        if let Some(message_id) = self.message_id {
            writer.put(&message_id.to_be_bytes());
        }
        writer.put(self.payload);
        Ok(writer.pos)
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

/// The header of a data packet: P_DATA_V1 (op|kid) or P_DATA_V2 (op|kid, 24-bit peer-id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataHeader {
    /// P_DATA_V1: one byte.
    V1 {
        /// The key_id.
        key_id: KeyId,
    },
    /// P_DATA_V2: four bytes.
    V2 {
        /// The key_id.
        key_id: KeyId,
        /// The peer-id the server pushed ([`PeerId::UNDEFINED`] if none).
        peer_id: PeerId,
    },
}

impl DataHeader {
    /// Parses the header at the start of a data packet.
    pub fn parse(packet: &[u8]) -> Result<Self, PacketError> {
        let (opcode, key_id) = peek_header(packet)?;
        match opcode {
            Opcode::DataV1 => Ok(Self::V1 { key_id }),
            Opcode::DataV2 => match packet.get(1..DATA_V2_HEADER_LEN) {
                Some(&[a, b, c]) => Ok(Self::V2 {
                    key_id,
                    peer_id: PeerId::from_bytes([a, b, c]),
                }),
                _ => Err(PacketError::Truncated {
                    field: "peer-id",
                    needed: DATA_V2_HEADER_LEN,
                    found: packet.len(),
                }),
            },
            found => Err(PacketError::UnexpectedOpcode {
                expected: "P_DATA_V1 or P_DATA_V2",
                found,
            }),
        }
    }

    /// The opcode.
    pub const fn opcode(&self) -> Opcode {
        match self {
            Self::V1 { .. } => Opcode::DataV1,
            Self::V2 { .. } => Opcode::DataV2,
        }
    }

    /// The key_id.
    pub const fn key_id(&self) -> KeyId {
        match *self {
            Self::V1 { key_id } | Self::V2 { key_id, .. } => key_id,
        }
    }

    /// The peer-id (P_DATA_V2 only).
    pub const fn peer_id(&self) -> Option<PeerId> {
        match *self {
            Self::V1 { .. } => None,
            Self::V2 { peer_id, .. } => Some(peer_id),
        }
    }

    /// Bytes `emit` writes: 1 for V1, 4 for V2.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::V1 { .. } => DATA_V1_HEADER_LEN,
            Self::V2 { .. } => DATA_V2_HEADER_LEN,
        }
    }

    /// Writes the header at the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, PacketError> {
        let len = self.buffer_len();
        let found = buf.len();
        let out = buf
            .get_mut(..len)
            .ok_or(PacketError::BufferTooSmall { needed: len, found })?;
        let mut writer = Writer { out, pos: 0 };
        writer.put(&[first_byte(self.opcode(), self.key_id())]);
        if let Self::V2 { peer_id, .. } = self {
            writer.put(&peer_id.to_bytes());
        }
        Ok(writer.pos)
    }
}

/// A checked, zero-copy view of a data packet: its header and the bytes after it
/// (packet-id, tag and ciphertext; see `data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPacket<'a> {
    bytes: &'a [u8],
    header: DataHeader,
}

impl<'a> DataPacket<'a> {
    /// Validates that `bytes` starts with a complete P_DATA_V1 or P_DATA_V2 header.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, PacketError> {
        let header = DataHeader::parse(bytes)?;
        Ok(Self { bytes, header })
    }

    /// The parsed header.
    pub fn header(&self) -> DataHeader {
        self.header
    }

    /// The header bytes (the start of the AEAD additional data).
    pub fn header_bytes(&self) -> &'a [u8] {
        self.bytes.get(..self.header.buffer_len()).unwrap_or(&[])
    }

    /// Everything after the header.
    pub fn payload(&self) -> &'a [u8] {
        self.bytes.get(self.header.buffer_len()..).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLIENT_SID: SessionId = SessionId([0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]);
    const SERVER_SID: SessionId = SessionId([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);

    #[test]
    fn first_byte_matches_the_opcode_table() {
        let table = [
            (Opcode::ControlHardResetClientV1, 0x08),
            (Opcode::ControlHardResetServerV1, 0x10),
            (Opcode::ControlSoftResetV1, 0x18),
            (Opcode::ControlV1, 0x20),
            (Opcode::AckV1, 0x28),
            (Opcode::DataV1, 0x30),
            (Opcode::ControlHardResetClientV2, 0x38),
            (Opcode::ControlHardResetServerV2, 0x40),
            (Opcode::DataV2, 0x48),
            (Opcode::ControlHardResetClientV3, 0x50),
            (Opcode::ControlWkcV1, 0x58),
        ];
        for (opcode, byte) in table {
            assert_eq!(first_byte(opcode, KeyId::ZERO), byte, "{opcode}");
            assert_eq!(parse_first_byte(byte), Ok((opcode, KeyId::ZERO)));
            let kid7 = KeyId::new(7).unwrap();
            assert_eq!(parse_first_byte(byte | 7), Ok((opcode, kid7)));
        }
    }

    #[test]
    fn unknown_opcodes_are_rejected() {
        for value in [0u8, 12, 13, 31] {
            assert_eq!(
                parse_first_byte(value << 3 | 2),
                Err(PacketError::UnknownOpcode { found: value })
            );
        }
        assert_eq!(
            peek_header(&[]),
            Err(PacketError::Truncated {
                field: "opcode",
                needed: 1,
                found: 0
            })
        );
    }

    #[test]
    fn opcode_names_are_openvpn_spelling() {
        assert_eq!(Opcode::ControlWkcV1.to_string(), "P_CONTROL_WKC_V1");
        assert_eq!(Opcode::DataV2.name(), "P_DATA_V2");
        assert!(Opcode::DataV1.is_data() && !Opcode::DataV1.is_control());
        assert!(!Opcode::ControlHardResetClientV1.is_control());
    }

    #[test]
    fn key_id_range_and_rollover() {
        assert_eq!(KeyId::new(8), Err(PacketError::InvalidKeyId { found: 8 }));
        assert_eq!(KeyId::ZERO.next().get(), 1);
        assert_eq!(KeyId::new(6).unwrap().next().get(), 7);
        assert_eq!(KeyId::new(7).unwrap().next().get(), 1);
    }

    #[test]
    fn peer_id_range() {
        assert_eq!(
            PeerId::new(0x0100_0000),
            Err(PacketError::InvalidPeerId { found: 0x0100_0000 })
        );
        let p = PeerId::new(0x0012_3456).unwrap();
        assert_eq!(p.to_bytes(), [0x12, 0x34, 0x56]);
        assert_eq!(PeerId::from_bytes([0x12, 0x34, 0x56]), p);
        assert!(p.is_defined());
        assert!(!PeerId::UNDEFINED.is_defined());
        assert_eq!(PeerId::new(0xFF_FFFF), Ok(PeerId::UNDEFINED));
    }

    #[test]
    fn acks_capacity() {
        let mut acks = Acks::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(acks.len(), 8);
        assert_eq!(
            acks.push(9),
            Err(PacketError::TooManyAcks { max: 8, found: 9 })
        );
        assert_eq!(acks.as_slice(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(Acks::from_slice(&[0; 9]).is_err());
    }

    #[test]
    fn parses_the_handshake_packets() {
        // C→S HARD_RESET_CLIENT_V2, no ACKs, msg-id 0, empty payload.
        let client_reset = hex("38 a1a2a3a4a5a6a7a8 00 00000000");
        let p = ControlPacket::new_checked(&client_reset).unwrap();
        assert_eq!(p.opcode(), Opcode::ControlHardResetClientV2);
        assert_eq!(p.key_id(), KeyId::ZERO);
        assert_eq!(p.session_id(), CLIENT_SID);
        assert_eq!(p.ack_count(), 0);
        assert_eq!(p.remote_session_id(), None);
        assert_eq!(p.message_id(), Some(0));
        assert!(p.payload().is_empty());

        // S→C HARD_RESET_SERVER_V2, ACK [0] for Cs, msg-id 0.
        let server_reset = hex("40 1122334455667788 01 00000000 a1a2a3a4a5a6a7a8 00000000");
        let p = ControlPacket::new_checked(&server_reset).unwrap();
        assert_eq!(p.opcode(), Opcode::ControlHardResetServerV2);
        assert_eq!(p.session_id(), SERVER_SID);
        assert_eq!(p.acks().collect::<Vec<_>>(), vec![0]);
        assert_eq!(p.remote_session_id(), Some(CLIENT_SID));
        assert_eq!(p.message_id(), Some(0));

        // C→S P_CONTROL_V1 kid 1 with ACK [0, 7], msg-id 1, payload "TLS".
        let control =
            hex("21 a1a2a3a4a5a6a7a8 02 00000000 00000007 1122334455667788 00000001 544c53");
        let p = ControlPacket::new_checked(&control).unwrap();
        assert_eq!(p.key_id().get(), 1);
        assert_eq!(p.acks().collect::<Vec<_>>(), vec![0, 7]);
        assert_eq!(p.remote_session_id(), Some(SERVER_SID));
        assert_eq!(p.message_id(), Some(1));
        assert_eq!(p.payload(), b"TLS");
        assert_eq!(p.as_bytes(), &control[..]);

        // P_ACK_V1 with one ACK: no msg-id, no payload.
        let ack = hex("28 a1a2a3a4a5a6a7a8 01 00000003 1122334455667788");
        let p = ControlPacket::new_checked(&ack).unwrap();
        assert_eq!(p.opcode(), Opcode::AckV1);
        assert_eq!(p.message_id(), None);
        assert!(p.payload().is_empty());
        assert_eq!(p.acks().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn emit_reproduces_the_server_reset() {
        let repr = ControlRepr {
            opcode: Opcode::ControlHardResetServerV2,
            key_id: KeyId::ZERO,
            session_id: SERVER_SID,
            acks: Acks::from_slice(&[0]).unwrap(),
            remote_session_id: Some(CLIENT_SID),
            message_id: Some(0),
            payload: &[],
        };
        let mut buf = [0u8; 64];
        let n = repr.emit(&mut buf).unwrap();
        assert_eq!(n, repr.buffer_len());
        assert_eq!(
            &buf[..n],
            &hex("40 1122334455667788 01 00000000 a1a2a3a4a5a6a7a8 00000000")[..]
        );
    }

    #[test]
    fn control_rejects_truncation_at_every_field() {
        let control = hex("21 a1a2a3a4a5a6a7a8 02 00000000 00000007 1122334455667788 00000001");
        let fields = [
            (0, "opcode", 1),
            (1, "session id and ACK count", 10),
            (9, "session id and ACK count", 10),
            (10, "ACK block", 26),
            (25, "ACK block", 26),
            (26, "message id", 30),
            (29, "message id", 30),
        ];
        for (len, field, needed) in fields {
            assert_eq!(
                ControlPacket::new_checked(&control[..len]),
                Err(PacketError::Truncated {
                    field,
                    needed,
                    found: len
                }),
                "length {len}"
            );
        }
        assert!(ControlPacket::new_checked(&control).is_ok());
    }

    #[test]
    fn control_rejects_data_and_v1_opcodes() {
        for opcode in [
            Opcode::DataV1,
            Opcode::DataV2,
            Opcode::ControlHardResetClientV1,
            Opcode::ControlHardResetServerV1,
        ] {
            let mut pkt = hex("00 a1a2a3a4a5a6a7a8 00 00000000");
            pkt[0] = first_byte(opcode, KeyId::ZERO);
            assert!(matches!(
                ControlPacket::new_checked(&pkt),
                Err(PacketError::UnexpectedOpcode { found, .. }) if found == opcode
            ));
        }
        let pkt = hex("f8 a1a2a3a4a5a6a7a8 00 00000000");
        assert_eq!(
            ControlPacket::new_checked(&pkt),
            Err(PacketError::UnknownOpcode { found: 31 })
        );
    }

    #[test]
    fn control_rejects_more_than_eight_acks() {
        let mut pkt = hex("20 a1a2a3a4a5a6a7a8 09");
        pkt.extend_from_slice(&[0; 4 * 9 + 8 + 4]);
        assert_eq!(
            ControlPacket::new_checked(&pkt),
            Err(PacketError::TooManyAcks { max: 8, found: 9 })
        );
        let mut eight = hex("20 a1a2a3a4a5a6a7a8 08");
        eight.extend_from_slice(&[0; 4 * 8 + 8 + 4]);
        assert_eq!(ControlPacket::new_checked(&eight).unwrap().ack_count(), 8);
    }

    #[test]
    fn ack_v1_needs_an_ack_and_nothing_after_it() {
        assert_eq!(
            ControlPacket::new_checked(&hex("28 a1a2a3a4a5a6a7a8 00")),
            Err(PacketError::EmptyAck)
        );
        assert_eq!(
            ControlPacket::new_checked(&hex("28 a1a2a3a4a5a6a7a8 01 00000003 1122334455667788 00")),
            Err(PacketError::TrailingBytes {
                what: "P_ACK_V1",
                found: 1
            })
        );
    }

    fn base_repr() -> ControlRepr<'static> {
        ControlRepr {
            opcode: Opcode::ControlV1,
            key_id: KeyId::ZERO,
            session_id: SERVER_SID,
            acks: Acks::new(),
            remote_session_id: None,
            message_id: Some(1),
            payload: b"x",
        }
    }

    #[test]
    fn emit_rejects_inconsistent_reprs() {
        let mut buf = [0u8; 64];
        let missing_remote = ControlRepr {
            acks: Acks::from_slice(&[1]).unwrap(),
            ..base_repr()
        };
        assert!(matches!(
            missing_remote.emit(&mut buf),
            Err(PacketError::InvalidRepr { .. })
        ));
        let stray_remote = ControlRepr {
            remote_session_id: Some(CLIENT_SID),
            ..base_repr()
        };
        assert!(matches!(
            stray_remote.emit(&mut buf),
            Err(PacketError::InvalidRepr { .. })
        ));
        let no_message_id = ControlRepr {
            message_id: None,
            ..base_repr()
        };
        assert!(matches!(
            no_message_id.emit(&mut buf),
            Err(PacketError::InvalidRepr { .. })
        ));
        let empty_ack = ControlRepr {
            opcode: Opcode::AckV1,
            message_id: None,
            payload: &[],
            ..base_repr()
        };
        assert_eq!(empty_ack.emit(&mut buf), Err(PacketError::EmptyAck));
        let ack_with_payload = ControlRepr {
            opcode: Opcode::AckV1,
            acks: Acks::from_slice(&[1]).unwrap(),
            remote_session_id: Some(CLIENT_SID),
            message_id: None,
            ..base_repr()
        };
        assert!(matches!(
            ack_with_payload.emit(&mut buf),
            Err(PacketError::InvalidRepr { .. })
        ));
        let data = ControlRepr {
            opcode: Opcode::DataV2,
            ..base_repr()
        };
        assert!(matches!(
            data.emit(&mut buf),
            Err(PacketError::UnexpectedOpcode { .. })
        ));
    }

    #[test]
    fn emit_rejects_a_short_buffer() {
        let repr = base_repr();
        let needed = repr.buffer_len();
        let mut buf = vec![0u8; needed - 1];
        assert_eq!(
            repr.emit(&mut buf),
            Err(PacketError::BufferTooSmall {
                needed,
                found: needed - 1
            })
        );
    }

    #[test]
    fn data_headers() {
        let v2 = hex("4a 000005 00000001");
        let p = DataPacket::new_checked(&v2).unwrap();
        let kid2 = KeyId::new(2).unwrap();
        let header = DataHeader::V2 {
            key_id: kid2,
            peer_id: PeerId::new(5).unwrap(),
        };
        assert_eq!(p.header(), header);
        assert_eq!(p.header().opcode(), Opcode::DataV2);
        assert_eq!(p.header().peer_id(), Some(PeerId::new(5).unwrap()));
        assert_eq!(p.header_bytes(), &v2[..4]);
        assert_eq!(p.payload(), &v2[4..]);
        let mut buf = [0u8; 4];
        assert_eq!(header.emit(&mut buf), Ok(4));
        assert_eq!(buf, [0x4a, 0, 0, 5]);

        let v1 = hex("31 00000001");
        let p = DataPacket::new_checked(&v1).unwrap();
        assert_eq!(
            p.header(),
            DataHeader::V1 {
                key_id: KeyId::new(1).unwrap()
            }
        );
        assert_eq!(p.header().peer_id(), None);
        assert_eq!(p.payload(), &v1[1..]);
    }

    #[test]
    fn data_header_errors() {
        assert_eq!(
            DataHeader::parse(&hex("48 0000")),
            Err(PacketError::Truncated {
                field: "peer-id",
                needed: 4,
                found: 3
            })
        );
        assert!(matches!(
            DataHeader::parse(&hex("20 0000")),
            Err(PacketError::UnexpectedOpcode {
                found: Opcode::ControlV1,
                ..
            })
        ));
        assert!(matches!(
            DataHeader::parse(&[]),
            Err(PacketError::Truncated { .. })
        ));
        let header = DataHeader::V2 {
            key_id: KeyId::ZERO,
            peer_id: PeerId::UNDEFINED,
        };
        assert_eq!(
            header.emit(&mut [0u8; 3]),
            Err(PacketError::BufferTooSmall {
                needed: 4,
                found: 3
            })
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn control_opcode() -> impl Strategy<Value = Opcode> {
        prop::sample::select(vec![
            Opcode::ControlSoftResetV1,
            Opcode::ControlV1,
            Opcode::AckV1,
            Opcode::ControlHardResetClientV2,
            Opcode::ControlHardResetServerV2,
            Opcode::ControlHardResetClientV3,
            Opcode::ControlWkcV1,
        ])
    }

    proptest! {
        #[test]
        fn control_emit_then_parse_is_identity(
            opcode in control_opcode(),
            key_id in 0u8..8,
            sid in any::<[u8; 8]>(),
            remote in any::<[u8; 8]>(),
            ack_ids in prop::collection::vec(any::<u32>(), 0..=MAX_ACKS),
            message_id in any::<u32>(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let is_ack = opcode == Opcode::AckV1;
            let ack_ids = if is_ack && ack_ids.is_empty() { vec![message_id] } else { ack_ids };
            let acks = Acks::from_slice(&ack_ids).unwrap();
            let repr = ControlRepr {
                opcode,
                key_id: KeyId::new(key_id).unwrap(),
                session_id: SessionId(sid),
                acks,
                remote_session_id: (!acks.is_empty()).then_some(SessionId(remote)),
                message_id: (!is_ack).then_some(message_id),
                payload: if is_ack { &[] } else { &payload },
            };
            let mut buf = vec![0u8; repr.buffer_len()];
            let n = repr.emit(&mut buf).unwrap();
            prop_assert_eq!(n, buf.len());
            let packet = ControlPacket::new_checked(&buf).unwrap();
            prop_assert_eq!(ControlRepr::parse(&packet), repr);
        }

        #[test]
        fn control_parse_then_emit_is_identity(
            opcode in control_opcode(),
            key_id in 0u8..8,
            sid in any::<[u8; 8]>(),
            ack_count in 0u8..=9,
            tail in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut bytes = vec![first_byte(opcode, KeyId::new(key_id).unwrap())];
            bytes.extend_from_slice(&sid);
            bytes.push(ack_count);
            bytes.extend_from_slice(&tail);
            if let Ok(packet) = ControlPacket::new_checked(&bytes) {
                let repr = ControlRepr::parse(&packet);
                let mut out = vec![0u8; repr.buffer_len()];
                prop_assert_eq!(repr.emit(&mut out), Ok(bytes.len()));
                prop_assert_eq!(out, bytes);
            }
        }

        #[test]
        fn data_header_round_trip(v2 in any::<bool>(), key_id in 0u8..8, peer_id in 0u32..=PeerId::MAX) {
            let key_id = KeyId::new(key_id).unwrap();
            let header = if v2 {
                DataHeader::V2 { key_id, peer_id: PeerId::new(peer_id).unwrap() }
            } else {
                DataHeader::V1 { key_id }
            };
            let mut buf = [0u8; 8];
            let n = header.emit(&mut buf).unwrap();
            prop_assert_eq!(n, header.buffer_len());
            prop_assert_eq!(DataHeader::parse(&buf[..n]), Ok(header));
        }

        #[test]
        fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = ControlPacket::new_checked(&bytes).map(|p| ControlRepr::parse(&p));
            let _ = DataPacket::new_checked(&bytes).map(|p| p.payload().len());
        }
    }
}
