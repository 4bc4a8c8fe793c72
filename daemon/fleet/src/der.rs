//! The few fields of an X.509 certificate the fleet reads itself: the issuer and subject names
//! (raw) and the URIs of the subject alternative names.
//!
//! Only certificates the TLS verifier has already accepted, or that this crate has just issued,
//! are read here; still, every read is bounded by the input and nothing panics: a field that
//! cannot be read is `None`.

/// One DER element: its tag byte, its whole encoding and its contents.
#[derive(Debug, Clone, Copy)]
struct Element<'a> {
    tag: u8,
    whole: &'a [u8],
    body: &'a [u8],
}

/// DER tags used here.
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[0]` EXPLICIT version of a TBSCertificate.
const VERSION: u8 = 0xA0;
/// `[3]` EXPLICIT extensions of a TBSCertificate.
const EXTENSIONS: u8 = 0xA3;
/// `uniformResourceIdentifier [6] IMPLICIT IA5String` in GeneralName.
const URI: u8 = 0x86;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];
/// Longest length field read, in bytes (4: up to 4 GiB, far beyond any certificate).
const LENGTH_BYTES_MAX: usize = 4;

/// The first element of `input` and what follows it.
fn element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        return None; // high tag numbers: not used by X.509
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > LENGTH_BYTES_MAX || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (
            bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b)),
            rest,
        )
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let (body, after) = rest.split_at(len);
    Some((
        Element {
            tag,
            whole: &input[..header + len],
            body,
        },
        after,
    ))
}

/// The elements of a constructed element's contents, in order.
fn elements(mut input: &[u8]) -> impl Iterator<Item = Element<'_>> {
    std::iter::from_fn(move || {
        let (e, rest) = element(input)?;
        input = rest;
        Some(e)
    })
}

/// The contents of the one element of `input` if it has tag `tag`.
fn only(input: &[u8], tag: u8) -> Option<Element<'_>> {
    let (e, rest) = element(input)?;
    (e.tag == tag && rest.is_empty()).then_some(e)
}

/// The fields of the TBSCertificate after the optional version: serial, signature algorithm,
/// issuer, validity, subject, public key, then optional unique ids and extensions.
fn tbs_fields(cert_der: &[u8]) -> Option<Vec<Element<'_>>> {
    let cert = only(cert_der, SEQUENCE)?;
    let (tbs, _) = element(cert.body)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    Some(elements(tbs.body).filter(|e| e.tag != VERSION).collect())
}

/// The issuer and the subject names of a certificate, each as its whole DER encoding.
pub(crate) fn issuer_and_subject(cert_der: &[u8]) -> Option<(&[u8], &[u8])> {
    let fields = tbs_fields(cert_der)?;
    let issuer = fields.get(2)?;
    let subject = fields.get(4)?;
    (issuer.tag == SEQUENCE && subject.tag == SEQUENCE).then_some((issuer.whole, subject.whole))
}

/// The URIs among a certificate's subject alternative names (none if it has no such extension).
pub(crate) fn san_uris(cert_der: &[u8]) -> Option<Vec<String>> {
    let fields = tbs_fields(cert_der)?;
    let Some(extensions) = fields.iter().find(|e| e.tag == EXTENSIONS) else {
        return Some(Vec::new());
    };
    let list = only(extensions.body, SEQUENCE)?;
    for extension in elements(list.body) {
        if extension.tag != SEQUENCE {
            return None;
        }
        let mut parts = elements(extension.body);
        let oid = parts.next()?;
        if oid.tag != OID || oid.body != SUBJECT_ALT_NAME {
            continue;
        }
        let mut value = parts.next()?;
        if value.tag == BOOLEAN {
            value = parts.next()?;
        }
        if value.tag != OCTET_STRING {
            return None;
        }
        let names = only(value.body, SEQUENCE)?;
        return elements(names.body)
            .filter(|n| n.tag == URI)
            .map(|n| std::str::from_utf8(n.body).ok().map(str::to_owned))
            .collect();
    }
    Some(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_reads_as_nothing_and_never_panics() {
        let mut bytes = vec![0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(san_uris(&bytes).is_none());
        for len in 0..64u8 {
            bytes = (0..len).map(|i| i.wrapping_mul(37) ^ 0x30).collect();
            let _ = san_uris(&bytes);
            let _ = issuer_and_subject(&bytes);
        }
        assert!(san_uris(&[]).is_none());
    }

    #[test]
    fn long_form_lengths_are_read() {
        let mut input = vec![0x04, 0x81, 0x80];
        input.extend([7u8; 0x80]);
        let (e, rest) = element(&input).expect("element");
        assert_eq!((e.tag, e.body.len(), e.whole.len()), (0x04, 0x80, 0x83));
        assert!(rest.is_empty());
    }
}
