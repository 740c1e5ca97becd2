//! The §11.3 enrollment form: `multipart/form-data` (RFC 7578, what §11.3
//! specifies) parsed with `multer`, and, leniently,
//! `application/x-www-form-urlencoded` parsed with `form_urlencoded` (the
//! WHATWG parser the `url` crate uses). The client's multipart body is
//! written here too.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rand::{Rng, RngExt};

use super::MAX_BODY;

/// Most fields a form may have.
const MAX_FORM_FIELDS: usize = 16;
/// RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;

/// The two form encodings the server reads.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FormKind {
    Multipart { boundary: String },
    UrlEncoded,
}

impl FormKind {
    /// The form encoding a request's Content-Type names.
    pub(super) fn of(content_type: &str) -> Result<Self, &'static str> {
        let mime: mime::Mime = content_type.parse().map_err(|_| "malformed Content-Type")?;
        if mime.essence_str() == mime::APPLICATION_WWW_FORM_URLENCODED.essence_str() {
            return Ok(FormKind::UrlEncoded);
        }
        if mime.essence_str() != mime::MULTIPART_FORM_DATA.essence_str() {
            return Err("expected multipart/form-data (RFC 6940 §11.3)");
        }
        let boundary = mime.get_param(mime::BOUNDARY).ok_or("multipart/form-data without a boundary")?;
        let boundary = boundary.as_str();
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
            return Err("multipart boundary must be 1 to 70 characters");
        }
        Ok(FormKind::Multipart { boundary: boundary.to_owned() })
    }
}

/// The §11.3 fields.
#[derive(Debug)]
pub(super) struct EnrollForm {
    pub username: String,
    pub password: String,
    pub nodeids: Option<String>,
    /// The PKCS#10 request, DER.
    pub csr: Vec<u8>,
}

impl EnrollForm {
    /// Reads the fields from a whole body; the error is the detail of a
    /// 400 answer.
    pub(super) async fn parse(kind: &FormKind, body: Bytes) -> Result<Self, String> {
        let fields = match kind {
            FormKind::Multipart { boundary } => parse_multipart(body, boundary).await?,
            FormKind::UrlEncoded => parse_urlencoded(&body)?,
        };
        let mut seen: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (name, value) in fields {
            if seen.insert(name.clone(), value).is_some() {
                return Err(format!("field {name:?} given twice"));
            }
        }
        let mut text = |name: &str| -> Result<Option<String>, String> {
            seen.remove(name)
                .map(|v| String::from_utf8(v).map_err(|_| format!("field {name:?} is not UTF-8")))
                .transpose()
        };
        let username = text("username")?.ok_or("missing field \"username\"")?;
        let password = text("password")?.ok_or("missing field \"password\"")?;
        let nodeids = text("nodeids")?;
        let csr = seen.remove("csr").ok_or("missing field \"csr\"")?;
        Ok(EnrollForm { username, password, nodeids, csr: decode_csr(&csr)? })
    }
}

/// `(name, value)` pairs of a multipart/form-data body. A part with
/// `Content-Transfer-Encoding: base64` (deprecated by RFC 7578 §4.7, still
/// sent by some clients) is decoded.
async fn parse_multipart(body: Bytes, boundary: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let limits = multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(MAX_BODY as u64));
    let mut multipart = multer::Multipart::with_constraints(Full::new(body).into_data_stream(), boundary, limits);
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(|e| multipart_error(&e, fields.is_empty()))? {
        if fields.len() == MAX_FORM_FIELDS {
            return Err(format!("more than {MAX_FORM_FIELDS} form fields"));
        }
        let name = field.name().map(str::to_owned).ok_or("multipart part without a form-data name")?;
        let base64 = field
            .headers()
            .get("content-transfer-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("base64"));
        let content = field.bytes().await.map_err(|e| multipart_error(&e, false))?;
        let value = if base64 {
            let text: Vec<u8> = content.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            STANDARD_PAD_INDIFFERENT.decode(&text).map_err(|_| format!("field {name:?}: bad base64"))?
        } else {
            content.to_vec()
        };
        fields.push((name, value));
    }
    Ok(fields)
}

/// A multer error as the detail of a 400 answer; a body that ends before
/// any delimiter has no boundary in it at all.
fn multipart_error(e: &multer::Error, before_first_part: bool) -> String {
    match e {
        multer::Error::IncompleteStream if before_first_part => "no multipart boundary in the body".into(),
        multer::Error::IncompleteFieldData { .. } | multer::Error::IncompleteStream => {
            "multipart part not closed by the boundary".into()
        }
        other => format!("malformed multipart body: {other}"),
    }
}

/// `(name, value)` pairs of an `application/x-www-form-urlencoded` body.
/// Values are decoded as UTF-8 text (invalid sequences become U+FFFD), so
/// a `csr` sent this way is PEM or base64.
fn parse_urlencoded(body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut fields = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if fields.len() == MAX_FORM_FIELDS {
            return Err(format!("more than {MAX_FORM_FIELDS} form fields"));
        }
        fields.push((k.into_owned(), v.into_owned().into_bytes()));
    }
    if fields.is_empty() {
        return Err("empty form".into());
    }
    Ok(fields)
}

/// A `csr` value as DER: binary DER as §11.3 sends it, or PEM / base64 text.
fn decode_csr(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.first() == Some(&0x30) {
        return Ok(raw.to_vec());
    }
    let text = std::str::from_utf8(raw).map_err(|_| "bad_CSR: neither DER nor text".to_owned())?.trim();
    let b64: String = if text.starts_with("-----BEGIN") {
        text.lines().filter(|l| !l.trim_start().starts_with("-----")).collect()
    } else {
        text.to_owned()
    };
    let b64: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD_PAD_INDIFFERENT
        .decode(&b64)
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(&b64))
        .map_err(|_| "bad_CSR: neither DER, PEM nor base64".to_owned())
}

/// One field of the client's form.
pub(super) struct FormPart<'a> {
    pub name: &'a str,
    pub content_type: Option<&'a str>,
    pub value: &'a [u8],
}

/// A multipart/form-data body (RFC 7578) and its Content-Type, with a
/// random boundary that occurs in no value.
pub(super) fn multipart_body(parts: &[FormPart<'_>], rng: &mut impl Rng) -> (String, Vec<u8>) {
    let boundary = loop {
        let b = format!("chordphone-{:032x}", rng.random::<u128>());
        if !parts.iter().any(|p| p.value.windows(b.len()).any(|w| w == b.as_bytes())) {
            break b;
        }
    };
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{}\"", p.name).as_bytes());
        if let Some(ct) = p.content_type {
            body.extend_from_slice(format!("; filename=\"{}.der\"\r\nContent-Type: {ct}", p.name).as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(p.value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::super::PKCS10;
    use super::*;
    use crate::security::KeyAlgorithm;
    use crate::security::KeyPair;
    use crate::security::enroll::csr_der;

    fn parse(kind: &FormKind, body: &[u8]) -> Result<EnrollForm, String> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(EnrollForm::parse(kind, Bytes::copy_from_slice(body)))
    }

    #[test]
    fn multipart_round_trip_with_binary_csr() {
        let csr = csr_der(&KeyPair::generate(KeyAlgorithm::Ed25519).unwrap(), Some("a@b.c")).unwrap();
        // Binary values may contain CRLF and dashes.
        let weird = b"pa\r\n--ss".to_vec();
        let parts = [
            FormPart { name: "username", content_type: None, value: b"a@b.c" },
            FormPart { name: "password", content_type: None, value: &weird },
            FormPart { name: "csr", content_type: Some(PKCS10), value: &csr },
        ];
        let (ct, body) = multipart_body(&parts, &mut StdRng::seed_from_u64(9));
        let kind = FormKind::of(&ct).unwrap();
        let form = parse(&kind, &body).unwrap();
        assert_eq!(form.username, "a@b.c");
        assert_eq!(form.password.as_bytes(), weird.as_slice());
        assert_eq!(form.nodeids, None);
        assert_eq!(form.csr, csr);
    }

    #[test]
    fn multipart_written_by_others_parses() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n\
--XyZ  \r\ncontent-disposition: form-data; name=password\r\n\r\npw\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"nodeids\"\r\n\r\n2\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"csr\"\r\nContent-Type: application/pkcs10\r\n\
Content-Transfer-Encoding: base64\r\n\r\nMAA=\r\n--XyZ--\r\nepilogue";
        let kind = FormKind::of("Multipart/Form-Data; boundary=\"XyZ\"").unwrap();
        assert_eq!(kind, FormKind::Multipart { boundary: "XyZ".into() });
        let form = parse(&kind, body).unwrap();
        assert_eq!((form.username.as_str(), form.password.as_str()), ("alice", "pw"));
        assert_eq!(form.nodeids.as_deref(), Some("2"));
        assert_eq!(form.csr, [0x30, 0x00]);
    }

    #[test]
    fn urlencoded_form_with_base64_csr() {
        let kind = FormKind::of("application/x-www-form-urlencoded").unwrap();
        let form = parse(&kind, b"username=alice%40ex.org&password=a+b%21&csr=MAA%3D").unwrap();
        assert_eq!(form.username, "alice@ex.org");
        assert_eq!(form.password, "a b!");
        assert_eq!(form.csr, [0x30, 0x00]);
        let pem = "username=a&password=b&csr=-----BEGIN+CERTIFICATE+REQUEST-----%0AMAA%3D%0A-----END+CERTIFICATE+REQUEST-----";
        assert_eq!(parse(&kind, pem.as_bytes()).unwrap().csr, [0x30, 0x00]);
    }

    #[test]
    fn too_many_fields_are_refused() {
        let many: Vec<String> = (0..=MAX_FORM_FIELDS).map(|i| format!("f{i}=v")).collect();
        let err = parse(&FormKind::UrlEncoded, many.join("&").as_bytes()).unwrap_err();
        assert!(err.contains("more than 16"), "{err}");
        let parts: Vec<String> = (0..=MAX_FORM_FIELDS)
            .map(|i| format!("--B\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"))
            .collect();
        let body = format!("{}--B--\r\n", parts.concat());
        let err = parse(&FormKind::Multipart { boundary: "B".into() }, body.as_bytes()).unwrap_err();
        assert!(err.contains("more than 16"), "{err}");
    }

    #[test]
    fn malformed_forms_are_refused() {
        let url = FormKind::UrlEncoded;
        let mp = FormKind::Multipart { boundary: "B".into() };
        let cases: [(&FormKind, &[u8], &str); 8] = [
            (&url, b"", "empty form"),
            (&url, b"username=a&password=b", "missing field \"csr\""),
            (&url, b"username=a&username=b", "given twice"),
            // Invalid UTF-8 becomes U+FFFD: text, but not base64.
            (&url, b"username=a&password=b&csr=%FF%FE", "neither DER, PEM nor base64"),
            (&mp, b"\x00\x01garbage", "no multipart boundary"),
            (&mp, b"--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nvalue without end", "not closed"),
            (&mp, b"--B\r\nContent-Disposition: form-data\r\n\r\nv\r\n--B--\r\n", "without a form-data name"),
            (&mp, b"--B\r\nContent-Disposition: form-data; name=\"csr\"\r\n\r\n\xff\xfe\r\n--B--\r\n", "missing field"),
        ];
        for (kind, body, want) in cases {
            let err = parse(kind, body).unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        assert!(FormKind::of("application/json").is_err());
        assert!(FormKind::of("multipart/form-data").is_err());
        assert!(FormKind::of(&format!("multipart/form-data; boundary={}", "b".repeat(71))).is_err());
        assert!(FormKind::of("not a media type").is_err());
    }
}
