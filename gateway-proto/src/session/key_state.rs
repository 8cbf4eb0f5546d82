//! One key_id of a session: its reliability stream, the TLS connection running over it,
//! the received plaintext, the key-method 2 material and, once derived, its data keys.

use std::io::{ErrorKind, Read, Write};
use std::time::Instant;

use std::sync::Arc;

use crate::data::{Cipher, DataKey, UsageLimits};
use crate::key_method::{ClientKeySource, ServerKeySource};
use crate::keys::{DataChannelKeys, EXPORTER_LABEL, KEY_BLOCK_LEN, KeyBlock, Role};
use crate::packet::{KeyId, SessionId};
use crate::reliable::{Reliable, ReliableConfig};
use crate::replay::ReplayConfig;

use super::CloseReason;

/// Bytes read from the reliability layer or TLS per step.
const CHUNK: usize = 4096;
/// Most received plaintext held without a complete message (AWS framing can carry a
/// 128 KiB password).
const MAX_PLAINTEXT: usize = 256 * 1024;

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// TLS and key-method 2 in progress.
    Negotiating,
    /// Key-method 2 done both ways; keys may still wait for the push (client, key 0).
    Exchanged,
}

/// The data keys of a key_id.
#[derive(Debug)]
pub(crate) struct ActiveKeys {
    /// Shared with the data plane (see [`crate::data::DataChannel`]): its packet-id
    /// counter, replay window and use counters are the ones every carrier of this
    /// key_id's packets draws from.
    pub key: Arc<DataKey>,
    pub material: DataChannelKeys,
    pub cipher: Cipher,
    pub since: Instant,
}

/// State of one key_id.
pub(crate) struct KeyState {
    pub key_id: KeyId,
    pub reliable: Reliable,
    pub tls: rustls::Connection,
    /// TLS records received and not yet consumed by rustls.
    incoming: Vec<u8>,
    /// TLS plaintext received and not yet parsed.
    pub plaintext: Vec<u8>,
    pub phase: Phase,
    /// When this key's negotiation started (hand-window).
    pub started: Instant,
    /// Key-method 2 random material, until the keys are derived (boxed: a session
    /// keeps its key states, and these are gone once the key is active).
    pub client_source: Option<Box<ClientKeySource>>,
    pub server_source: Option<Box<ServerKeySource>>,
    pub active: Option<ActiveKeys>,
    /// Lame duck: dropped at this instant.
    pub expires: Option<Instant>,
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("key_id", &self.key_id)
            .field("phase", &self.phase)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl KeyState {
    pub fn new(key_id: KeyId, reliable: Reliable, tls: rustls::Connection, now: Instant) -> Self {
        Self {
            key_id,
            reliable,
            tls,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            phase: Phase::Negotiating,
            started: now,
            client_source: None,
            server_source: None,
            active: None,
            expires: None,
        }
    }

    /// A fresh reliability stream for a key_id that starts with a reset.
    pub fn fresh_reliable(config: ReliableConfig) -> Result<Reliable, CloseReason> {
        Reliable::new(config).map_err(|e| CloseReason::Internal(e.to_string()))
    }

    /// Moves received stream bytes into TLS, lets it process them and collects the
    /// plaintext. A TLS error (bad certificate, alert from the peer …) is returned after
    /// rustls queued its alert, so [`flush_tls`](Self::flush_tls) still sends it.
    pub fn pump_tls(&mut self) -> Result<(), rustls::Error> {
        let mut buf = [0u8; CHUNK];
        loop {
            let n = self.reliable.read(&mut buf);
            if n == 0 {
                break;
            }
            self.incoming
                .extend_from_slice(buf.get(..n).unwrap_or(&buf));
        }
        while !self.incoming.is_empty() {
            let consumed = self.tls.read_tls(&mut &self.incoming[..]).unwrap_or(0);
            self.incoming.drain(..consumed);
            self.tls.process_new_packets()?;
            if consumed == 0 {
                break;
            }
        }
        loop {
            if self.plaintext.len() >= MAX_PLAINTEXT {
                return Err(rustls::Error::General(
                    "peer sent too much unparsed control-channel plaintext".into(),
                ));
            }
            match self.tls.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self
                    .plaintext
                    .extend_from_slice(buf.get(..n).unwrap_or(&buf)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(rustls::Error::General(e.to_string())),
            }
        }
        Ok(())
    }

    /// Frees buffers that are empty (see [`Reliable::release_spare_capacity`]).
    pub fn release_spare_capacity(&mut self) {
        for buffer in [&mut self.incoming, &mut self.plaintext] {
            if buffer.is_empty() && buffer.capacity() > 0 {
                *buffer = Vec::new();
            }
        }
        self.reliable.release_spare_capacity();
    }

    /// Moves TLS output into the reliability layer, once the peer's reset for this key_id
    /// arrived (TLS starts after the reset exchange, §4.3).
    pub fn flush_tls(&mut self) -> Result<(), CloseReason> {
        if self.reliable.next_rx_message_id() == 0 {
            return Ok(());
        }
        while self.tls.wants_write() {
            let mut out = Vec::new();
            self.tls
                .write_tls(&mut out)
                .map_err(|e| CloseReason::Internal(e.to_string()))?;
            if out.is_empty() {
                break;
            }
            self.reliable
                .queue(&out)
                .map_err(|e| CloseReason::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// True when everything we sent on this key was ACKed: nothing in TLS, nothing
    /// queued, nothing in flight (so the peer has our key-method 2 reply).
    pub fn all_acked(&self) -> bool {
        self.reliable.all_acked() && !self.tls.wants_write()
    }

    /// Writes one control message as its own TLS record(s).
    pub fn write_plaintext(&mut self, bytes: &[u8]) -> Result<(), CloseReason> {
        self.tls
            .writer()
            .write_all(bytes)
            .map_err(|e| CloseReason::Internal(e.to_string()))?;
        self.flush_tls()
    }

    /// The 256-byte key block of this key_id: TLS exporter or legacy PRF.
    pub fn key_block(
        &self,
        exporter: bool,
        client_sid: SessionId,
        server_sid: SessionId,
    ) -> Result<KeyBlock, CloseReason> {
        if exporter {
            let mut block = [0u8; KEY_BLOCK_LEN];
            self.tls
                .export_keying_material(&mut block, EXPORTER_LABEL, None)
                .map_err(|e| CloseReason::Internal(format!("TLS exporter: {e}")))?;
            return Ok(KeyBlock::from_exporter(block));
        }
        match (&self.client_source, &self.server_source) {
            (Some(client), Some(server)) => Ok(KeyBlock::from_prf(
                client,
                server,
                &client_sid.0,
                &server_sid.0,
            )),
            _ => Err(CloseReason::Internal(
                "key derivation before both key-method 2 messages".into(),
            )),
        }
    }

    /// Derives and installs the data keys.
    pub fn activate(
        &mut self,
        role: Role,
        cipher: Cipher,
        block: &KeyBlock,
        replay: ReplayConfig,
        limits: UsageLimits,
        now: Instant,
    ) -> Result<(), CloseReason> {
        let material = block.data_channel_keys(role);
        let key = DataKey::new(self.key_id, cipher, &material, replay, limits)
            .map_err(|e| CloseReason::Internal(e.to_string()))?;
        self.active = Some(ActiveKeys {
            key: Arc::new(key),
            material,
            cipher,
            since: now,
        });
        // Derived: the random material is not needed (nor kept) any longer.
        self.client_source = None;
        self.server_source = None;
        Ok(())
    }
}
