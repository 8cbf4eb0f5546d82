//! The subject common name of a certificate (OpenVPN's default `x509-username-field`),
//! read with a minimal DER walk: Certificate → tbsCertificate → subject → the last CN.
//! Only called on certificates rustls already verified; still checked at every step.

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION_TAG: u8 = 0xA0;
/// id-at-commonName, 2.5.4.3.
const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];
const UTF8_STRING: u8 = 0x0C;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
const TELETEX_STRING: u8 = 0x14;

/// Splits one TLV off the front of `input`: (tag, value, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    let (value, rest) = rest.split_at_checked(len)?;
    Some((tag, value, rest))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, value, rest) = tlv(input)?;
    (found == tag).then_some((value, rest))
}

/// The subject CN of a DER certificate; `None` if it has none or the DER is malformed.
/// With several CNs the last one wins, as in OpenVPN.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut fields = tbs;
    if fields.first() == Some(&VERSION_TAG) {
        fields = tlv(fields)?.2;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        fields = tlv(fields)?.2;
    }
    let (mut rdns, _) = expect(fields, SEQUENCE)?;
    let mut common_name = None;
    while !rdns.is_empty() {
        let (mut set, rest) = expect(rdns, SET)?;
        rdns = rest;
        while !set.is_empty() {
            let (attribute, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(attribute, OID)?;
            if oid != CN_OID {
                continue;
            }
            let (tag, text, _) = tlv(value)?;
            if matches!(
                tag,
                UTF8_STRING | PRINTABLE_STRING | IA5_STRING | TELETEX_STRING
            ) {
                common_name = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    common_name
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    fn cert(pem: &[u8]) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem).unwrap().to_vec()
    }

    #[test]
    fn reads_the_fixture_common_names() {
        let alice = cert(include_bytes!("testdata/alice.pem"));
        assert_eq!(subject_common_name(&alice).as_deref(), Some("alice"));
        let ca = cert(include_bytes!("testdata/ca.pem"));
        assert_eq!(subject_common_name(&ca).as_deref(), Some("Test Only CA"));
    }

    #[test]
    fn truncated_or_garbage_input_gives_none() {
        let alice = cert(include_bytes!("testdata/alice.pem"));
        for len in 0..alice.len() {
            let _ = subject_common_name(&alice[..len]);
        }
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[]), None);
    }

    #[test]
    fn subject_without_cn_gives_none() {
        // SEQ{ SEQ{ INT 1, SEQ{}, SEQ{}, SEQ{}, SEQ{ SET{ SEQ{ OID 2.5.4.10, UTF8 "o" } } } } }
        let tbs = [
            0x02, 0x01, 0x01, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x0c, 0x31, 0x0a, 0x30,
            0x08, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x01, b'o',
        ];
        let mut der = vec![0x30, tbs.len() as u8 + 2, 0x30, tbs.len() as u8];
        der.extend_from_slice(&tbs);
        assert_eq!(subject_common_name(&der), None);
    }
}
