//! The unwrapped control-packet layout (session id, ACK block, remote session id,
//! message id, payload): the checked view, the `Repr` and its emitter.

use super::{
    KeyId, MAX_ACKS, Opcode, PacketError, SESSION_ID_LEN, SessionId, Writer, first_byte,
    peek_header,
};

const OFF_SESSION_ID: usize = 1;
const OFF_ACK_COUNT: usize = OFF_SESSION_ID + SESSION_ID_LEN;
const OFF_ACKS: usize = OFF_ACK_COUNT + 1;
const ACK_ID_LEN: usize = 4;
const MESSAGE_ID_LEN: usize = 4;

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
            .map(|c| {
                let mut id = [0u8; ACK_ID_LEN];
                id.copy_from_slice(c);
                u32::from_be_bytes(id)
            })
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
