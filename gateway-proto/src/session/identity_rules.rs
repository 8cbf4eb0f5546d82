//! What a client certificate must be, beyond chaining to a client CA (webpki's part):
//! exactly one non-empty subject common name, the identity everything is keyed by
//! (OpenVPN takes the last of several, so a CA that lets a requester add a second CN
//! lets it pick its identity), and the extended key usage clientAuth (webpki accepts a
//! certificate with no extended key usage at all, so a CA's server or signing
//! certificates would log in).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{Error, SignatureScheme};

/// Why a verified client certificate is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the client certificate does not parse as X.509")]
    Unparsable,
    #[error("the client certificate has no subject common name")]
    NoCommonName,
    #[error("the client certificate has {0} subject common names; exactly one is allowed")]
    SeveralCommonNames(usize),
    #[error("the client certificate's common name is empty or not a string")]
    BadCommonName,
    #[error(
        "the client certificate lacks the extended key usage clientAuth \
         (tls.require_client_eku)"
    )]
    NotForClients,
}

/// Checks the rules of this module on a DER certificate.
pub fn check_client_identity(der: &[u8], require_eku: bool) -> Result<(), IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::Unparsable)?;
    let names: Vec<_> = cert.subject().iter_common_name().collect();
    match names.as_slice() {
        [] => return Err(IdentityError::NoCommonName),
        [one] => {
            if one.as_str().map_or(true, str::is_empty) {
                return Err(IdentityError::BadCommonName);
            }
        }
        several => return Err(IdentityError::SeveralCommonNames(several.len())),
    }
    if require_eku {
        let usage = cert
            .extended_key_usage()
            .map_err(|_| IdentityError::Unparsable)?;
        if !usage.is_some_and(|u| u.value.client_auth) {
            return Err(IdentityError::NotForClients);
        }
    }
    Ok(())
}

/// A client-certificate verifier that runs `inner` (chain, validity, CRLs) and then
/// [`check_client_identity`].
#[derive(Debug)]
pub struct IdentityRules {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub require_eku: bool,
}

impl ClientCertVerifier for IdentityRules {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_client_identity(end_entity, self.require_eku).map_err(|e| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

    fn cert(names: &[&str], usages: &[ExtendedKeyUsagePurpose]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (i, name) in names.iter().enumerate() {
            // rcgen keeps one value per attribute type: a second common name goes in
            // under the same OID (2.5.4.3) spelled as a custom type.
            let kind = match i {
                0 => DnType::CommonName,
                _ => DnType::CustomDnType(vec![2, 5, 4, 3]),
            };
            params.distinguished_name.push(kind, name.to_string());
        }
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params.extended_key_usages = usages.to_vec();
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn one_common_name_and_client_auth_pass_and_everything_else_is_named() {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        assert_eq!(
            check_client_identity(&cert(&["alice"], &[ClientAuth]), true),
            Ok(())
        );
        assert_eq!(
            check_client_identity(&cert(&["alice"], &[ServerAuth, ClientAuth]), true),
            Ok(())
        );
        assert_eq!(
            check_client_identity(&cert(&[], &[ClientAuth]), true),
            Err(IdentityError::NoCommonName)
        );
        assert_eq!(
            check_client_identity(&cert(&["alice", "admin"], &[ClientAuth]), true),
            Err(IdentityError::SeveralCommonNames(2))
        );
        assert_eq!(
            check_client_identity(&cert(&[""], &[ClientAuth]), true),
            Err(IdentityError::BadCommonName)
        );
        assert_eq!(
            check_client_identity(&cert(&["alice"], &[]), true),
            Err(IdentityError::NotForClients)
        );
        assert_eq!(
            check_client_identity(&cert(&["vpn.example.test"], &[ServerAuth]), true),
            Err(IdentityError::NotForClients)
        );
        // Off: a certificate without the usage passes; the name rules still hold.
        assert_eq!(check_client_identity(&cert(&["alice"], &[]), false), Ok(()));
        assert_eq!(
            check_client_identity(&cert(&["a", "b"], &[]), false),
            Err(IdentityError::SeveralCommonNames(2))
        );
        assert_eq!(
            check_client_identity(b"not a certificate", true),
            Err(IdentityError::Unparsable)
        );
        let good = cert(&["alice"], &[ClientAuth]);
        for len in 0..good.len() {
            assert!(check_client_identity(&good[..len], true).is_err());
        }
    }
}
