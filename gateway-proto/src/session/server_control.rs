//! Server role: control messages the application sends outside the handshake's own flow
//! — AUTH_PENDING and INFO_PRE while an out-of-band decision runs (with its deadline), and
//! RESTART / HALT before closing (protocol doc §10.3, §13).

use std::time::{Duration, Instant};

use super::core::{Life, RoleState, Session};
use super::server::Auth;
use super::{CloseReason, UsageError};
use crate::push::{AuthFailure, ControlMessage, InfoPayload, RestartFlags};

/// The AUTH_FAILED reason (and [`CloseReason::AuthFailed`] text) when an announced
/// AUTH_PENDING runs out without a decision.
pub const PENDING_TIMEOUT_REASON: &str = "pending timeout";

impl Session {
    /// Server role: answers an [`Event::AuthRequest`](super::Event::AuthRequest) with "still
    /// deciding" while an out-of-band check (web auth, push notification) runs. Sends
    /// AUTH_PENDING (with `timeout N` only if the client announced the keyword, IV_PROTO
    /// bit 4) and, if the client announced the method in IV_SSO (plain text always),
    /// INFO_PRE with `info`. PUSH_REQUESTs wait; [`accept`](Self::accept) or
    /// [`reject`](Self::reject) completes it later. Without a decision by `timeout`,
    /// capped at the end of hand-window, the client gets AUTH_FAILED and the session
    /// closes with [`CloseReason::AuthFailed`]`(`[`PENDING_TIMEOUT_REASON`]`)`. May be
    /// called again (new deadline and messages) while the decision is open.
    pub fn accept_pending(
        &mut self,
        now: Instant,
        timeout: Duration,
        info: Option<InfoPayload>,
    ) -> Result<(), UsageError> {
        if self.life != Life::Open {
            return Err(UsageError::Closed);
        }
        let RoleState::Server(server) = &self.role else {
            return Err(UsageError::NotServer);
        };
        let Auth::Pending { push_requested, .. } = server.auth else {
            return Err(UsageError::NoPendingAuth);
        };
        let hand_window_end = self
            .keys
            .first()
            .and_then(|k| k.started.checked_add(self.common.hand_window));
        let until = match (now.checked_add(timeout), hand_window_end) {
            (Some(requested), Some(end)) => requested.min(end),
            (requested, end) => requested.or(end).unwrap_or(now),
        };
        let left = until.saturating_duration_since(now);
        let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let seconds = u32::try_from(seconds).unwrap_or(u32::MAX);
        let peer = &self.identity.peer_info;
        let mut messages = vec![ControlMessage::auth_pending_for(peer, seconds)];
        messages.extend(
            info.filter(|info| info.supported_by(peer))
                .map(ControlMessage::InfoPre),
        );
        let mut encoded = Vec::with_capacity(messages.len());
        for message in &messages {
            let mut out = Vec::new();
            message.emit(&mut out)?;
            encoded.push(out);
        }
        if let RoleState::Server(server) = &mut self.role {
            server.auth = Auth::Pending {
                push_requested,
                until: Some(until),
            };
        }
        for out in &encoded {
            if let Err(reason) = self.send_encoded(out) {
                self.finish(reason);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Server role: tells the client to reconnect (`RESTART` or `RESTART,<message>`,
    /// §10.3; stock clients then reconnect to the same server) and closes with
    /// [`CloseReason::ServerRestart`] once the client had
    /// [`AUTH_FAILED_LINGER`](super::AUTH_FAILED_LINGER) to receive it. Before the
    /// key-method 2 exchange there is no channel for the message: the session closes at
    /// once with the same reason.
    pub fn restart(&mut self, now: Instant, message: Option<&str>) -> Result<(), UsageError> {
        let message = message.unwrap_or_default().to_owned();
        let reason = CloseReason::ServerRestart(message.clone());
        let restart = ControlMessage::Restart {
            flags: RestartFlags::default(),
            message,
        };
        self.notify_and_close(now, &restart, reason)
    }

    /// Server role: tells the client to stop for good (`HALT` or `HALT,<message>`,
    /// §10.3) and closes like [`restart`](Self::restart), with
    /// [`CloseReason::ServerHalt`].
    pub fn halt(&mut self, now: Instant, message: Option<&str>) -> Result<(), UsageError> {
        let message = message.unwrap_or_default().to_owned();
        let reason = CloseReason::ServerHalt(message.clone());
        self.notify_and_close(now, &ControlMessage::Halt { message }, reason)
    }

    fn notify_and_close(
        &mut self,
        now: Instant,
        message: &ControlMessage,
        reason: CloseReason,
    ) -> Result<(), UsageError> {
        if self.life != Life::Open {
            return Err(UsageError::Closed);
        }
        if !matches!(self.role, RoleState::Server(_)) {
            return Err(UsageError::NotServer);
        }
        let mut out = Vec::new();
        message.emit(&mut out)?;
        if self.control_key_index().is_none() {
            self.finish(reason);
            return Ok(());
        }
        if let Err(error) = self.send_encoded(&out) {
            self.finish(error);
            return Ok(());
        }
        self.linger(now, reason, false);
        Ok(())
    }

    /// The deadline of an announced AUTH_PENDING.
    pub(crate) fn server_timeout(&self) -> Option<Instant> {
        match &self.role {
            RoleState::Server(server) => match server.auth {
                Auth::Pending { until, .. } => until,
                _ => None,
            },
            RoleState::Client(_) => None,
        }
    }

    /// Refuses a client whose AUTH_PENDING ran out. Runs before the hand-window check, so
    /// a deadline capped at hand-window still ends in AUTH_FAILED.
    pub(crate) fn server_handle_timeout(&mut self, now: Instant) {
        if self.server_timeout().is_some_and(|at| now >= at) {
            let failure = AuthFailure::Plain {
                reason: Some(PENDING_TIMEOUT_REASON.to_owned()),
            };
            self.refuse(now, failure);
        }
    }
}
