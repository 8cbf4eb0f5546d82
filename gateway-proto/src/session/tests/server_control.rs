//! Server-initiated RESTART and HALT, and AUTH_PENDING with INFO_PRE before the decision.

use super::*;
use crate::push::InfoPayload;

fn handshake(setup: Setup) -> Pair {
    let mut pair = Pair::new(setup);
    pair.run_until(Duration::from_secs(30), Pair::both_established);
    pair
}

fn both_closed(pair: &Pair) -> bool {
    Pair::closed(&pair.client_events).is_some() && Pair::closed(&pair.server_events).is_some()
}

#[test]
fn server_restart_reaches_the_client_before_the_server_closes() {
    let mut pair = handshake(Setup::default());
    let now = pair.now;
    pair.server().restart(now, Some("maintenance")).unwrap();
    assert!(!pair.server().is_closed(), "lingers for the message");
    assert!(matches!(
        pair.server().send_data(now, &[0x45]),
        Err(UsageError::Closed)
    ));
    assert_eq!(
        pair.server().restart(now, None),
        Err(UsageError::Closed),
        "only once"
    );
    pair.run_until(Duration::from_secs(10), both_closed);
    let expected = CloseReason::ServerRestart("maintenance".into());
    assert_eq!(Pair::closed(&pair.client_events), Some(&expected));
    assert_eq!(Pair::closed(&pair.server_events), Some(&expected));
}

#[test]
fn server_halt_reaches_the_client_and_clients_cannot_send_it() {
    let mut pair = handshake(Setup::default());
    let now = pair.now;
    assert_eq!(pair.client.halt(now, None), Err(UsageError::NotServer));
    assert_eq!(pair.client.restart(now, None), Err(UsageError::NotServer));
    assert!(matches!(
        pair.server().halt(now, Some("bad\0text")),
        Err(UsageError::Message(_))
    ));
    pair.server().halt(now, None).unwrap();
    pair.run_until(Duration::from_secs(10), both_closed);
    let expected = CloseReason::ServerHalt(String::new());
    assert_eq!(Pair::closed(&pair.client_events), Some(&expected));
    assert_eq!(Pair::closed(&pair.server_events), Some(&expected));
}

#[test]
fn server_restart_while_authentication_is_undecided() {
    let mut pair = Pair::new(Setup::default());
    pair.decision = Decision::Ignore;
    pair.run_until(Duration::from_secs(30), auth_requested);
    let now = pair.now;
    pair.server().restart(now, Some("[later")).unwrap();
    pair.run_until(Duration::from_secs(10), both_closed);
    let expected = CloseReason::ServerRestart("[later".into());
    assert_eq!(Pair::closed(&pair.client_events), Some(&expected));
    assert_eq!(Pair::closed(&pair.server_events), Some(&expected));
}

fn auth_requested(pair: &Pair) -> bool {
    pair.server_events
        .iter()
        .any(|e| matches!(e, Event::AuthRequest(_)))
}

fn pending_events(pair: &Pair) -> Vec<(Option<Duration>, Option<InfoPayload>)> {
    pair.client_events
        .iter()
        .filter_map(|e| match e {
            Event::AuthPending { timeout, info } => Some((*timeout, info.clone())),
            _ => None,
        })
        .collect()
}

fn web_auth() -> InfoPayload {
    InfoPayload::WebAuth {
        flags: String::new(),
        url: "https://auth.example/session/42".into(),
    }
}

/// A client announcing the AUTH_PENDING keyword and web auth, still undecided.
fn pending_pair() -> Pair {
    let setup = Setup {
        client_flags: DEFAULT_CLIENT_PROTO_FLAGS | ProtoFlags::AUTH_PENDING_KW,
        client_sso: Some("webauth,crtext"),
        ..Setup::default()
    };
    let mut pair = Pair::new(setup);
    pair.decision = Decision::Ignore;
    pair.run_until(Duration::from_secs(30), auth_requested);
    pair
}

#[test]
fn pending_then_accept_establishes() {
    let mut pair = pending_pair();
    let now = pair.now;
    assert_eq!(
        pair.client
            .accept_pending(now, Duration::from_secs(30), None),
        Err(UsageError::NotServer)
    );
    pair.server()
        .accept_pending(now, Duration::from_secs(30), Some(web_auth()))
        .unwrap();
    // The client keeps asking for its push meanwhile; the server keeps it waiting.
    pair.run_for(Duration::from_secs(12));
    assert_eq!(
        pending_events(&pair),
        [(Some(Duration::from_secs(30)), Some(web_auth()))]
    );
    assert!(!pair.client.is_established() && !pair.server().is_established());
    let now = pair.now;
    pair.server().accept(now, policy(None)).unwrap();
    pair.run_until(Duration::from_secs(10), Pair::both_established);
    pair.exchange_data(3);
    assert!(Pair::closed(&pair.client_events).is_none());
}

#[test]
fn pending_then_reject_fails_the_client() {
    let mut pair = pending_pair();
    let now = pair.now;
    pair.server()
        .accept_pending(now, Duration::from_secs(30), None)
        .unwrap();
    pair.run_for(Duration::from_secs(3));
    let now = pair.now;
    let failure = AuthFailure::Plain {
        reason: Some("denied".into()),
    };
    pair.server().reject(now, failure).unwrap();
    pair.run_until(Duration::from_secs(10), both_closed);
    assert_eq!(
        Pair::closed(&pair.server_events),
        Some(&CloseReason::AuthFailed("denied".into()))
    );
    assert!(matches!(
        Pair::closed(&pair.client_events),
        Some(CloseReason::AuthFailed(_))
    ));
}

#[test]
fn pending_timeout_closes_both_sides() {
    let mut pair = pending_pair();
    let start = pair.now;
    pair.server()
        .accept_pending(start, Duration::from_secs(20), None)
        .unwrap();
    pair.run_until(Duration::from_secs(40), both_closed);
    assert!(
        pair.now < start + Duration::from_secs(25),
        "well before hand-window"
    );
    assert_eq!(
        pending_events(&pair),
        [(Some(Duration::from_secs(20)), None)]
    );
    assert_eq!(
        Pair::closed(&pair.server_events),
        Some(&CloseReason::AuthFailed(PENDING_TIMEOUT_REASON.into()))
    );
    match Pair::closed(&pair.client_events) {
        Some(CloseReason::AuthFailed(text)) => assert!(text.contains(PENDING_TIMEOUT_REASON)),
        other => panic!("client closed with {other:?}"),
    }
    let now = pair.now;
    assert!(pair.server().accept(now, policy(None)).is_err());
}

#[test]
fn pending_timeout_is_capped_at_hand_window() {
    let mut pair = pending_pair();
    let start = pair.now;
    pair.server()
        .accept_pending(start, Duration::from_secs(600), None)
        .unwrap();
    pair.run_until(
        Duration::from_secs(DEFAULT_HAND_WINDOW.as_secs() + 10),
        both_closed,
    );
    let pending = pending_events(&pair);
    let announced = pending[0].0.unwrap();
    assert!(announced <= DEFAULT_HAND_WINDOW, "announced {announced:?}");
    assert_eq!(
        Pair::closed(&pair.server_events),
        Some(&CloseReason::AuthFailed(PENDING_TIMEOUT_REASON.into()))
    );
    // The announced timeout extended the client's wait: it hears the AUTH_FAILED.
    assert!(matches!(
        Pair::closed(&pair.client_events),
        Some(CloseReason::AuthFailed(_))
    ));
}

#[test]
fn pending_without_client_support_sends_the_bare_keyword() {
    let mut pair = Pair::new(Setup::default());
    pair.decision = Decision::Ignore;
    pair.run_until(Duration::from_secs(30), auth_requested);
    let now = pair.now;
    pair.server()
        .accept_pending(now, Duration::from_secs(30), Some(web_auth()))
        .unwrap();
    pair.run_for(Duration::from_secs(2));
    assert_eq!(pending_events(&pair), [(None, None)]);
    let text = InfoPayload::Text("check your phone".into());
    let now = pair.now;
    pair.server()
        .accept_pending(now, Duration::from_secs(30), Some(text.clone()))
        .unwrap();
    pair.run_for(Duration::from_secs(2));
    assert_eq!(pending_events(&pair)[1], (None, Some(text)));
    let now = pair.now;
    pair.server().accept(now, policy(None)).unwrap();
    pair.run_until(Duration::from_secs(10), Pair::both_established);
}
