//! The role-independent part of [`Session`]: packet dispatch, control-packet wrapping and
//! session-id checks, key_id bookkeeping and renegotiation, timers, and the data channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use super::client::ClientState;
use super::config::Common;
use super::key_state::{KeyState, Phase};
use super::server::ServerState;
use super::{Accepted, CloseReason, DropReason, Event, Identity};
use crate::data::{Cipher, PING_PAYLOAD};
use crate::keys::Role;
use crate::packet::{
    ControlPacket, ControlRepr, KeyId, Opcode, PeerId, SESSION_ID_LEN, SessionId, peek_header,
};
use crate::push::Keepalive;
use crate::replay::ReplayWindow;
use crate::wrap::ReplayStamp;

/// Interval of OCC_EXIT repeats while a client without cc-exit leaves.
const OCC_EXIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a leaving client keeps sending its exit notification.
const EXIT_LINGER: Duration = Duration::from_secs(2);

/// Bytes to send to the peer: one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The packet.
    pub contents: Vec<u8>,
}

/// Role-specific state.
#[derive(Debug)]
pub(crate) enum RoleState {
    Server(Box<ServerState>),
    Client(Box<ClientState>),
}

/// Where the session is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Life {
    Open,
    /// Sending a last message (EXIT, AUTH_FAILED) before closing with `reason`.
    Closing {
        deadline: Instant,
        reason: CloseReason,
        occ_exit_next: Option<Instant>,
    },
    Closed,
}

/// One OpenVPN session with a peer, server or client role. See the module docs.
#[derive(Debug)]
pub struct Session {
    pub(crate) role: RoleState,
    pub(crate) common: Arc<Common>,
    pub(crate) session_id: SessionId,
    pub(crate) peer_session_id: Option<SessionId>,
    pub(crate) keys: Vec<KeyState>,
    pub(crate) send_key: Option<KeyId>,
    pub(crate) tx_replay_id: u32,
    tx_replay_time: u32,
    rx_replay: ReplayWindow,
    pub(crate) events: VecDeque<Event>,
    pub(crate) outgoing: VecDeque<Vec<u8>>,
    pub(crate) last_sent: Instant,
    pub(crate) last_received: Instant,
    pub(crate) keepalive: Keepalive,
    pub(crate) life: Life,
    pub(crate) peer_id: PeerId,
    /// Whether we send P_DATA_V2 (else P_DATA_V1).
    pub(crate) data_v2: bool,
    pub(crate) cipher: Option<Cipher>,
    pub(crate) exporter: bool,
    pub(crate) identity: Identity,
    pub(crate) established: bool,
    /// Client role: the server announced AUTH_PENDING with a timeout; until the session
    /// is established, hand-window runs at least until this.
    pub(crate) pending_until: Option<Instant>,
}

/// Fills `buf` from the system CSPRNG.
pub(crate) fn random_fill(buf: &mut [u8]) -> Result<(), CloseReason> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| CloseReason::Internal("system random source failed".into()))
}

pub(crate) fn random_session_id() -> Result<SessionId, CloseReason> {
    let mut sid = [0u8; SESSION_ID_LEN];
    random_fill(&mut sid)?;
    Ok(SessionId(sid))
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_parts(
        role: RoleState,
        common: Arc<Common>,
        session_id: SessionId,
        peer_session_id: Option<SessionId>,
        first_key: KeyState,
        now: Instant,
        unix_time: u32,
        next_tx_replay_id: u32,
        peer_id: PeerId,
    ) -> Self {
        let rx_replay = ReplayWindow::new(common.replay);
        Self {
            role,
            common,
            session_id,
            peer_session_id,
            keys: vec![first_key],
            send_key: None,
            tx_replay_id: next_tx_replay_id,
            tx_replay_time: unix_time,
            rx_replay,
            events: VecDeque::new(),
            outgoing: VecDeque::new(),
            last_sent: now,
            last_received: now,
            keepalive: Keepalive::default(),
            life: Life::Open,
            peer_id,
            data_v2: false,
            cipher: None,
            exporter: false,
            identity: Identity::default(),
            established: false,
            pending_until: None,
        }
    }

    pub(crate) fn role(&self) -> Role {
        match self.role {
            RoleState::Server(_) => Role::Server,
            RoleState::Client(_) => Role::Client,
        }
    }

    /// Our session id.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// The peer's session id, once known.
    pub fn peer_session_id(&self) -> Option<SessionId> {
        self.peer_session_id
    }

    /// The peer-id on data packets (`PeerId::UNDEFINED` when P_DATA_V1 is used).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// True once the data channel is up.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// True once the session ended.
    pub fn is_closed(&self) -> bool {
        self.life == Life::Closed
    }

    /// The key_id our data packets use.
    pub fn send_key_id(&self) -> Option<KeyId> {
        self.send_key
    }

    /// The peer's identity as known so far.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Processes one received datagram. `Ok` says what kind of packet it was (a server
    /// driver floats a session only on [`Accepted::allows_float`]); `Err` means it was
    /// dropped and the session is unchanged apart from counters.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: &[u8],
    ) -> Result<Accepted, DropReason> {
        if self.life == Life::Closed {
            return Err(DropReason::Closed);
        }
        let (opcode, _) = peek_header(datagram)?;
        if opcode.is_data() {
            self.handle_data(now, datagram)
        } else {
            self.handle_control(now, datagram)?;
            Ok(Accepted::Control)
        }
    }

    fn handle_control(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DropReason> {
        let mut buf = vec![0u8; datagram.len()];
        let unwrapped = self.common.wrap.unwrap(datagram, &mut buf)?;
        if let Some(stamp) = unwrapped.replay {
            self.rx_replay.check_timed(stamp.id, stamp.time, now)?;
        }
        buf.truncate(unwrapped.len);
        let packet = ControlPacket::new_checked(&buf[..])?;
        let repr = ControlRepr::parse(&packet);
        match self.peer_session_id {
            Some(peer) if peer != repr.session_id => return Err(DropReason::SessionId),
            Some(_) => {}
            None => {
                let learns = self.role() == Role::Client
                    && repr.opcode == Opcode::ControlHardResetServerV2
                    && repr.key_id == KeyId::ZERO;
                if !learns {
                    return Err(DropReason::SessionId);
                }
            }
        }
        if !repr.acks.is_empty() && repr.remote_session_id != Some(self.session_id) {
            return Err(DropReason::SessionId);
        }
        let index = match self.key_index(repr.key_id) {
            Some(index) => index,
            None => self.accept_soft_reset(now, &repr)?,
        };
        self.keys
            .get_mut(index)
            .ok_or(DropReason::KeyId(repr.key_id))?
            .reliable
            .on_packet(&repr, now)?;
        if let Some(stamp) = unwrapped.replay {
            self.rx_replay.commit_timed(stamp.id, stamp.time, now)?;
        }
        if self.peer_session_id.is_none() {
            self.peer_session_id = Some(repr.session_id);
        }
        self.last_received = now;
        self.process_key(index, now);
        self.maybe_promote(now);
        Ok(())
    }

    pub(crate) fn key_index(&self, key_id: KeyId) -> Option<usize> {
        self.keys.iter().position(|k| k.key_id == key_id)
    }

    /// The key state at `index` (from [`Self::key_index`] or a walk of the keys); a slot
    /// that is gone is an internal error, never a panic.
    pub(crate) fn key_at(&mut self, index: usize) -> Result<&mut KeyState, CloseReason> {
        key_slot(&mut self.keys, index)
    }

    /// Feeds TLS, runs the role's message handling and queues TLS output.
    pub(crate) fn process_key(&mut self, index: usize, now: Instant) {
        let Some(key) = self.keys.get_mut(index) else {
            return;
        };
        if let Err(error) = key.pump_tls() {
            let reason = CloseReason::Tls(error.to_string());
            if key.flush_tls().is_ok() {
                self.drain_key_transmits(index, now);
            }
            self.finish(reason);
            return;
        }
        let result = self
            .on_plaintext(index, now)
            .and_then(|()| match self.keys.get_mut(index) {
                Some(key) => key.flush_tls(),
                None => Ok(()),
            });
        if let Err(reason) = result {
            self.finish(reason);
        }
        if let Some(key) = self.keys.get_mut(index) {
            key.release_spare_capacity();
        }
    }

    /// Sends what a key has queued right away (a TLS alert before closing).
    fn drain_key_transmits(&mut self, index: usize, now: Instant) {
        while let Some(packet) = self.next_control_transmit(index, now) {
            self.outgoing.push_back(packet);
        }
    }

    fn next_control_transmit(&mut self, index: usize, now: Instant) -> Option<Vec<u8>> {
        let key = self.keys.get_mut(index)?;
        let transmit = key.reliable.poll_transmit(now)?;
        let peer = self
            .peer_session_id
            .unwrap_or(SessionId([0; SESSION_ID_LEN]));
        let repr = transmit.to_repr(key.key_id, self.session_id, peer);
        let mut plain = vec![0u8; repr.buffer_len()];
        let len = repr.emit(&mut plain).ok()?;
        let stamp = ReplayStamp {
            id: self.tx_replay_id,
            time: self.tx_replay_time,
        };
        self.tx_replay_id = self.tx_replay_id.checked_add(1)?;
        let mut wire = vec![0u8; len + self.common.wrap.overhead()];
        let len = self
            .common
            .wrap
            .wrap(plain.get(..len)?, stamp, &mut wire)
            .ok()?;
        wire.truncate(len);
        Some(wire)
    }

    /// The next datagram to send at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(contents) = self.outgoing.pop_front() {
            self.last_sent = now;
            return Some(Transmit { contents });
        }
        if self.life == Life::Closed {
            return None;
        }
        for index in 0..self.keys.len() {
            if let Some(contents) = self.next_control_transmit(index, now) {
                self.last_sent = now;
                return Some(Transmit { contents });
            }
        }
        None
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut deadlines: Vec<Option<Instant>> = Vec::new();
        match &self.life {
            Life::Closed => return None,
            Life::Closing {
                deadline,
                occ_exit_next,
                ..
            } => {
                // Only retransmissions and the closing timers run while closing.
                deadlines.push(Some(*deadline));
                deadlines.push(*occ_exit_next);
                deadlines.extend(self.keys.iter().map(|k| k.reliable.poll_timeout()));
                return deadlines.into_iter().flatten().min();
            }
            Life::Open => {}
        }
        for key in &self.keys {
            deadlines.push(key.reliable.poll_timeout());
            deadlines.push(key.expires);
            if self.is_pending(key) {
                deadlines.push(self.hand_window_end(key));
            }
        }
        if self.established {
            deadlines.push(self.keepalive.next_ping(self.last_sent));
            deadlines.push(self.keepalive.deadline(self.last_received));
            deadlines.push(self.renegotiation_due());
        }
        deadlines.push(self.role_timeout());
        deadlines.into_iter().flatten().min()
    }

    /// A key still bound by hand-window: TLS or key-method 2 running, or (first key) the
    /// push or the application's decision still outstanding.
    fn is_pending(&self, key: &KeyState) -> bool {
        key.phase == Phase::Negotiating || !self.established
    }

    /// When a pending key runs out of hand-window (for the first key, extended by an
    /// announced AUTH_PENDING).
    fn hand_window_end(&self, key: &KeyState) -> Option<Instant> {
        let end = key.started.checked_add(self.common.hand_window);
        match (end, self.pending_until) {
            (Some(end), Some(pending)) if !self.established => Some(end.max(pending)),
            _ => end,
        }
    }

    /// Runs the timers due at `now`: retransmissions (at the next poll_transmit),
    /// hand-window, lame-duck expiry, keepalive, renegotiation, role timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Life::Closing {
            deadline,
            reason,
            occ_exit_next,
        } = &mut self.life
        {
            if now >= *deadline {
                let reason = reason.clone();
                self.finish(reason);
                return;
            }
            if occ_exit_next.is_some_and(|at| now >= at) {
                *occ_exit_next = Some(now + OCC_EXIT_INTERVAL);
                self.send_occ_exit(now);
            }
            return;
        }
        if self.life == Life::Closed {
            return;
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.expires.is_none_or(|at| now < at));
        if self.keys.len() < before {
            // A key state is about 2 KB: an idle session keeps room for one only.
            self.keys.shrink_to_fit();
        }
        self.server_handle_timeout(now);
        if self.life != Life::Open {
            return;
        }
        let expired = self
            .keys
            .iter()
            .position(|k| self.is_pending(k) && self.hand_window_end(k).is_some_and(|d| now >= d));
        if let Some(index) = expired {
            if self.established {
                self.keys.remove(index);
                self.keys.shrink_to_fit();
            } else {
                self.finish(CloseReason::HandshakeTimeout);
                return;
            }
        }
        if self.established {
            match self.keepalive.poll(now, self.last_sent, self.last_received) {
                crate::push::KeepaliveAction::TimedOut => {
                    self.finish(CloseReason::Timeout);
                    return;
                }
                crate::push::KeepaliveAction::SendPing { .. } => {
                    if self.send_plaintext(now, &PING_PAYLOAD).is_err() {
                        self.last_sent = now;
                    }
                }
                crate::push::KeepaliveAction::Idle { .. } => {}
            }
            self.check_renegotiation(now);
        }
        self.role_handle_timeout(now);
    }

    /// Ends the session now with `reason` and reports it.
    pub(crate) fn finish(&mut self, reason: CloseReason) {
        if self.life == Life::Closed {
            return;
        }
        self.life = Life::Closed;
        self.events.push_back(Event::Closed { reason });
    }

    /// Ends the session after a grace period in which queued control messages still go out.
    pub(crate) fn linger(&mut self, now: Instant, reason: CloseReason, occ_exit: bool) {
        if self.life != Life::Open {
            return;
        }
        self.life = Life::Closing {
            deadline: now + EXIT_LINGER,
            reason,
            occ_exit_next: occ_exit.then_some(now + OCC_EXIT_INTERVAL),
        };
    }

    /// Restarts the keepalive clocks (the session just became established).
    pub(crate) fn mark_alive(&mut self, now: Instant) {
        self.last_sent = now;
        self.last_received = now;
    }

    pub(crate) fn new_tls(&self) -> Result<rustls::Connection, CloseReason> {
        match &self.role {
            RoleState::Server(server) => server.new_tls(),
            RoleState::Client(client) => client.new_tls(),
        }
    }

    pub(crate) fn on_key_created(&mut self, index: usize) -> Result<(), CloseReason> {
        match self.role {
            RoleState::Server(_) => Ok(()),
            RoleState::Client(_) => self.client_key_created(index),
        }
    }

    pub(crate) fn on_plaintext(&mut self, index: usize, now: Instant) -> Result<(), CloseReason> {
        match self.role {
            RoleState::Server(_) => self.server_on_plaintext(index, now),
            RoleState::Client(_) => self.client_on_plaintext(index, now),
        }
    }

    fn role_timeout(&self) -> Option<Instant> {
        self.client_timeout().or_else(|| self.server_timeout())
    }

    fn role_handle_timeout(&mut self, now: Instant) {
        self.client_handle_timeout(now);
    }
}

/// `keys[index]`, borrowing only the key list; a slot that is gone is an internal error.
pub(crate) fn key_slot(keys: &mut [KeyState], index: usize) -> Result<&mut KeyState, CloseReason> {
    keys.get_mut(index)
        .ok_or_else(|| CloseReason::Internal(format!("no key in slot {index}")))
}
