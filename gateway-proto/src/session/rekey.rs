//! Key rotation: soft resets from either side, key_id cycling, the renegotiation
//! triggers, deriving a key's data keys, and switching the sending key (the previous one
//! stays as a lame duck for the transition window).

use std::time::{Duration, Instant};

use super::core::{Life, Session};
use super::key_state::{ActiveKeys, KeyState};
use super::{CloseReason, DropReason, Event, KeyMaterial};
use crate::data::UsageLimits;
use crate::keys::Role;
use crate::packet::{ControlRepr, KeyId, Opcode, SESSION_ID_LEN, SessionId};

/// Most key states kept: the sending key, a lame duck and one being negotiated.
const MAX_KEY_STATES: usize = 3;

impl Session {
    /// A peer's SOFT_RESET for the next key_id of an established session.
    pub(crate) fn accept_soft_reset(
        &mut self,
        now: Instant,
        repr: &ControlRepr<'_>,
    ) -> Result<usize, DropReason> {
        let next = self.next_key_id();
        let acceptable = repr.opcode == Opcode::ControlSoftResetV1
            && self.established
            && !self.renegotiating()
            && next == Some(repr.key_id);
        if !acceptable {
            return Err(DropReason::KeyId(repr.key_id));
        }
        match self.start_key(now, repr.key_id) {
            Ok(index) => Ok(index),
            Err(reason) => {
                self.finish(reason);
                Err(DropReason::Closed)
            }
        }
    }

    pub(crate) fn next_key_id(&self) -> Option<KeyId> {
        self.keys.last().map(|k| k.key_id.next())
    }

    /// True while a key newer than the sending key is being negotiated.
    pub(crate) fn renegotiating(&self) -> bool {
        self.keys
            .last()
            .is_some_and(|k| Some(k.key_id) != self.send_key)
    }

    /// Creates the key state for `key_id`, queues our SOFT_RESET and lets the role start.
    pub(crate) fn start_key(&mut self, now: Instant, key_id: KeyId) -> Result<usize, CloseReason> {
        while self.keys.len() >= MAX_KEY_STATES {
            let Some(old) = self
                .keys
                .iter()
                .position(|k| Some(k.key_id) != self.send_key)
            else {
                break;
            };
            self.keys.remove(old);
        }
        let mut reliable = KeyState::fresh_reliable(self.common.reliable)?;
        reliable
            .queue_reset(Opcode::ControlSoftResetV1, &[])
            .map_err(|e| CloseReason::Internal(e.to_string()))?;
        let tls = self.new_tls()?;
        self.keys.push(KeyState::new(key_id, reliable, tls, now));
        let index = self.keys.len() - 1;
        self.on_key_created(index)?;
        Ok(index)
    }

    /// Starts a renegotiation now (as `reneg-sec` would). Ignored while one runs or before
    /// the session is established.
    pub fn renegotiate(&mut self, now: Instant) {
        if self.life != Life::Open || !self.established || self.renegotiating() {
            return;
        }
        let Some(key_id) = self.next_key_id() else {
            return;
        };
        if let Err(reason) = self.start_key(now, key_id) {
            self.finish(reason);
        }
    }

    pub(crate) fn renegotiation_due(&self) -> Option<Instant> {
        let seconds = self.common.renegotiation.seconds;
        if seconds == 0 || self.renegotiating() {
            return None;
        }
        let since = self.send_keys()?.since;
        since.checked_add(Duration::from_secs(seconds))
    }

    pub(crate) fn send_keys(&self) -> Option<&ActiveKeys> {
        let index = self.key_index(self.send_key?)?;
        self.keys.get(index)?.active.as_ref()
    }

    /// Starts a renegotiation when the sending key is due one: `reneg-sec` passed, or its
    /// use (counted by whoever carried its packets: this session or a data plane) reached
    /// `reneg-bytes` / `reneg-pkts`, or its packet-ids are nearly spent. A data plane
    /// calls this when [`crate::data::Sealed::renegotiate`] or
    /// [`crate::data::Opened::renegotiate`] says a packet crossed a limit.
    pub fn check_renegotiation(&mut self, now: Instant) {
        let seconds = self.common.renegotiation.seconds;
        let Some(active) = self.send_keys() else {
            return;
        };
        let due = (seconds > 0
            && now.saturating_duration_since(active.since) >= Duration::from_secs(seconds))
            || active.key.renegotiation_due();
        if due {
            self.renegotiate(now);
        }
    }

    /// Server: a renegotiated key whose key-method 2 reply was ACKed (so the client has the
    /// key) takes over sending.
    pub(crate) fn maybe_promote(&mut self, now: Instant) {
        let Some(newest) = self.keys.last() else {
            return;
        };
        let ready = self.role() == Role::Server
            && self.established
            && Some(newest.key_id) != self.send_key
            && newest.active.is_some()
            && newest.all_acked();
        if ready {
            let key_id = newest.key_id;
            self.promote(key_id, now);
        }
    }

    /// Makes `key_id` the sending key; the previous one becomes a lame duck.
    pub(crate) fn promote(&mut self, key_id: KeyId, now: Instant) {
        let transition = self.common.transition_window;
        if let Some(old) = self
            .send_key
            .and_then(|id| self.key_index(id))
            .and_then(|i| self.keys.get_mut(i))
        {
            old.expires = Some(now + transition);
        }
        self.send_key = Some(key_id);
        if let Some(material) = self.key_material(key_id) {
            self.events.push_back(Event::Rekeyed(Box::new(material)));
        }
    }

    pub(crate) fn key_material(&self, key_id: KeyId) -> Option<KeyMaterial> {
        let active = self.keys.get(self.key_index(key_id)?)?.active.as_ref()?;
        Some(KeyMaterial {
            key_id,
            cipher: active.cipher,
            keys: active.material.clone(),
        })
    }

    /// Client and server session ids in PRF order.
    pub(crate) fn prf_session_ids(&self) -> (SessionId, SessionId) {
        let peer = self
            .peer_session_id
            .unwrap_or(SessionId([0; SESSION_ID_LEN]));
        match self.role() {
            Role::Client => (self.session_id, peer),
            Role::Server => (peer, self.session_id),
        }
    }

    /// Derives and installs the data keys of key `index` with the session's method.
    pub(crate) fn activate_key(&mut self, index: usize, now: Instant) -> Result<(), CloseReason> {
        let cipher = self
            .cipher
            .ok_or_else(|| CloseReason::Internal("no data cipher negotiated".into()))?;
        let (client_sid, server_sid) = self.prf_session_ids();
        let role = self.role();
        let replay = self.common.replay;
        let limits = UsageLimits {
            bytes: self.common.renegotiation.bytes,
            packets: self.common.renegotiation.packets,
        };
        let exporter = self.exporter;
        let key = self
            .keys
            .get_mut(index)
            .ok_or_else(|| CloseReason::Internal("key state vanished".into()))?;
        let block = key.key_block(exporter, client_sid, server_sid)?;
        key.activate(role, cipher, &block, replay, limits, now)
    }
}
