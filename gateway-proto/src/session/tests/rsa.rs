//! RSA-2048 certificates on both sides (the RSA hierarchy in `testdata/`), with each TLS
//! version: rustls signs with RSA-PSS (TLS 1.3) or PKCS#1 / PSS (TLS 1.2).

use super::*;

fn rsa_setup(tls: TlsVersions) -> Setup {
    Setup {
        tls,
        server_cert: RSA_SERVER_CERT,
        server_key: RSA_SERVER_KEY,
        server_ca: RSA_CA,
        server_crl: RSA_CRL,
        client_cert: RSA_BOB_CERT,
        client_key: RSA_BOB_KEY,
        client_ca: RSA_CA,
        ..Setup::default()
    }
}

#[test]
fn rsa_certificates_establish_with_tls12_and_tls13() {
    for tls in [TlsVersions::Tls12Only, TlsVersions::Tls13Only] {
        let mut pair = Pair::new(rsa_setup(tls));
        pair.run_until(Duration::from_secs(30), Pair::both_established);
        let expected = match tls {
            TlsVersions::Tls12Only => rustls::ProtocolVersion::TLSv1_2,
            _ => rustls::ProtocolVersion::TLSv1_3,
        };
        assert_eq!(pair.client.keys[0].tls.protocol_version(), Some(expected));
        let server_est = Pair::established(&pair.server_events).unwrap();
        assert_eq!(server_est.identity.common_name.as_deref(), Some("bob"));
        let client_est = Pair::established(&pair.client_events).unwrap();
        assert_eq!(client_est.identity.common_name.as_deref(), Some("server"));
        pair.exchange_data(4);
        pair.client.renegotiate(pair.now);
        pair.run_until(Duration::from_secs(30), |p| {
            p.client_events
                .iter()
                .any(|e| matches!(e, Event::Rekeyed(_)))
        });
        pair.exchange_data(5);
        assert_eq!(pair.client_drops + pair.server_drops, 0);
    }
}

#[test]
fn rsa_client_is_refused_by_a_server_trusting_only_the_ec_ca() {
    let setup = Setup {
        client_cert: RSA_BOB_CERT,
        client_key: RSA_BOB_KEY,
        ..Setup::default()
    };
    let mut pair = Pair::new(setup);
    pair.run_until(Duration::from_secs(30), |p| {
        Pair::closed(&p.server_events).is_some()
    });
    assert!(matches!(
        Pair::closed(&pair.server_events),
        Some(CloseReason::Tls(_))
    ));
    assert!(!pair.client.is_established());
}
