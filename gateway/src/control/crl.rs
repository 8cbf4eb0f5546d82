//! The certificate revocation lists of `tls.crl`, as the control plane checks them
//! itself: that a CRL is signed by a client CA (a CRL that is not is refused, and the
//! one in force stays), whether it has expired, and which certificates it revokes, so
//! that a reload can end the live sessions of certificates revoked since they
//! connected. (The TLS handshake checks new clients against the same CRLs.)

use std::{collections::HashSet, time::SystemTime};

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::{
    prelude::{FromDer, X509Certificate},
    revocation_list::CertificateRevocationList,
};

/// What the `tls.crl` file holds, checked.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    /// (issuer name, serial) of every revoked certificate, DER.
    revoked: HashSet<(Vec<u8>, Vec<u8>)>,
    /// The earliest `nextUpdate` of the CRLs.
    next_update: Option<SystemTime>,
}

/// Why a CRL is refused (the file's or the CA's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("CRL {index} is not a valid CRL: {reason}")]
    Malformed { index: usize, reason: String },
    #[error("CRL {index} is issued by {issuer}, which is not a tls.client_ca certificate")]
    UnknownIssuer { index: usize, issuer: String },
    #[error("CRL {index} does not verify against its issuer {issuer}: {reason}")]
    BadSignature {
        index: usize,
        issuer: String,
        reason: String,
    },
}

impl Revocations {
    /// Checks `crls` against the client CAs: each must be signed by one of them.
    pub fn check(
        crls: &[CertificateRevocationListDer<'_>],
        client_ca: &[CertificateDer<'_>],
    ) -> Result<Self, CrlError> {
        let cas: Vec<X509Certificate<'_>> = client_ca
            .iter()
            .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
            .collect();
        let mut out = Revocations::default();
        for (index, der) in crls.iter().enumerate() {
            let (_, crl) =
                CertificateRevocationList::from_der(der).map_err(|e| CrlError::Malformed {
                    index,
                    reason: e.to_string(),
                })?;
            let issuer_name = crl.issuer().to_string();
            let issuer = cas
                .iter()
                .find(|ca| ca.subject().as_raw() == crl.issuer().as_raw())
                .ok_or_else(|| CrlError::UnknownIssuer {
                    index,
                    issuer: issuer_name.clone(),
                })?;
            crl.verify_signature(issuer.public_key())
                .map_err(|e| CrlError::BadSignature {
                    index,
                    issuer: issuer_name.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(next) = crl.next_update() {
                let next = SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(next.timestamp().max(0) as u64);
                out.next_update = Some(out.next_update.map_or(next, |n| n.min(next)));
            }
            for entry in crl.iter_revoked_certificates() {
                out.revoked
                    .insert((crl.issuer().as_raw().to_vec(), entry.raw_serial().to_vec()));
            }
        }
        Ok(out)
    }

    /// True when the CRLs' `nextUpdate` has passed: a new CRL is overdue.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.next_update.is_some_and(|next| next <= now)
    }

    /// When the CRLs expire (the earliest `nextUpdate`).
    pub fn next_update(&self) -> Option<SystemTime> {
        self.next_update
    }

    /// True when the certificate (DER) is revoked by its issuer's CRL.
    pub fn revokes(&self, certificate: &[u8]) -> bool {
        let Ok((_, cert)) = X509Certificate::from_der(certificate) else {
            return false;
        };
        self.revoked
            .contains(&(cert.issuer().as_raw().to_vec(), cert.raw_serial().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Pki;
    use rustls_pki_types::pem::PemObject;

    fn load(
        pki: &Pki,
    ) -> (
        Vec<CertificateRevocationListDer<'static>>,
        Vec<CertificateDer<'static>>,
    ) {
        let crls = CertificateRevocationListDer::pem_file_iter(pki.crl())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let ca = CertificateDer::pem_file_iter(pki.ca_cert())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (crls, ca)
    }

    fn cert(pki: &Pki, name: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(pki.client_cert(name)).unwrap()
    }

    #[test]
    fn a_crl_says_which_certificates_it_revokes_and_when_it_expires() {
        let dir = std::env::temp_dir().join(format!("gw-crl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::init(&dir.join("pki"), "CRL CA", "server").unwrap();
        for name in ["alice", "bob"] {
            pki.issue_client(name, None).unwrap();
        }
        let (crls, ca) = load(&pki);
        let fresh = Revocations::check(&crls, &ca).unwrap();
        assert!(!fresh.revokes(&cert(&pki, "alice")));
        assert!(!fresh.expired(SystemTime::now()));
        pki.revoke("alice").unwrap();
        let (crls, _) = load(&pki);
        let now = Revocations::check(&crls, &ca).unwrap();
        assert!(now.revokes(&cert(&pki, "alice")));
        assert!(!now.revokes(&cert(&pki, "bob")));
        pki.write_expired_crl().unwrap();
        let (crls, _) = load(&pki);
        assert!(
            Revocations::check(&crls, &ca)
                .unwrap()
                .expired(SystemTime::now())
        );

        // Another CA's CRL, or one whose signature does not verify, is refused.
        let other = Pki::init(&dir.join("other"), "Other CA", "server").unwrap();
        let (other_crls, other_ca) = load(&other);
        assert!(matches!(
            Revocations::check(&other_crls, &ca),
            Err(CrlError::UnknownIssuer { index: 0, .. })
        ));
        let mut forged = crls[0].as_ref().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            Revocations::check(&[CertificateRevocationListDer::from(forged)], &ca),
            Err(CrlError::BadSignature { .. })
        ));
        assert!(Revocations::check(&other_crls, &other_ca).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
