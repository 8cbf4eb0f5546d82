//! P_DATA_V1 and P_DATA_V2 headers (op|kid, and the 24-bit peer-id of V2) in front of
//! the data-channel payload.

use super::{
    DATA_V1_HEADER_LEN, DATA_V2_HEADER_LEN, KeyId, Opcode, PacketError, PeerId, Writer, first_byte,
    peek_header,
};

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
