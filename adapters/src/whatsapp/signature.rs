//! Webhook authentication, every comparison in constant time.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Checks Meta's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`.
/// The body must be the bytes as received, before any JSON parsing.
pub fn meta_signature_valid(app_secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Meta's signature header value for `body`, as a sender would compute it.
pub fn meta_signature(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Twilio's `X-Twilio-Signature` for a form POST to `url`:
/// base64(HMAC-SHA1(auth token, url + every parameter name and value, sorted)).
pub fn twilio_signature(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks `X-Twilio-Signature` against `url` as given and with its default port added or
/// removed, as Twilio's own validators do.
pub fn twilio_signature_valid(
    auth_token: &[u8],
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    let header = header.trim().as_bytes();
    url_port_variants(url).iter().any(|candidate| {
        bool::from(
            twilio_signature(auth_token, candidate, params)
                .as_bytes()
                .ct_eq(header),
        )
    })
}

fn url_port_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(host_end);
    match host.rsplit_once(':') {
        Some((bare, port)) if port == default_port => {
            variants.push(format!("{scheme}://{bare}{tail}"))
        }
        Some(_) => {}
        None => variants.push(format!("{scheme}://{host}:{default_port}{tail}")),
    }
    variants
}

/// Compares a shared-secret header with the configured value in constant time.
pub fn secret_matches(configured: &str, presented: &str) -> bool {
    bool::from(configured.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vector A1 (tests/fixtures/whatsapp/SOURCES.md): a real body signed by Meta.
    const A1_SECRET: &[u8] = b"1222e786b144d0e85b9f365372d93676";
    const A1_SIGNATURE: &str =
        "sha256=54edfa1d7259e0eb13c677cc7d73d1b5c86cfa12433d19156e058ab9251bc441";

    fn a1_body() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/whatsapp/meta-text-signed-raw.json"
        ))
        .unwrap()
    }

    #[test]
    fn meta_vector_a1_verifies_byte_for_byte() {
        let body = a1_body();
        assert_eq!(body.len(), 511);
        assert!(meta_signature_valid(A1_SECRET, &body, A1_SIGNATURE));
        assert_eq!(meta_signature(A1_SECRET, &body), A1_SIGNATURE);
    }

    #[test]
    fn meta_signature_fails_on_any_change() {
        let body = a1_body();
        let mut with_newline = body.clone();
        with_newline.push(b'\n');
        assert!(!meta_signature_valid(
            A1_SECRET,
            &with_newline,
            A1_SIGNATURE
        ));
        let pretty =
            serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&body).unwrap())
                .unwrap();
        assert!(!meta_signature_valid(A1_SECRET, &pretty, A1_SIGNATURE));
        assert!(!meta_signature_valid(
            b"another secret",
            &body,
            A1_SIGNATURE
        ));
        assert!(!meta_signature_valid(A1_SECRET, &body, "sha256=zz"));
        assert!(!meta_signature_valid(
            A1_SECRET,
            &body,
            &A1_SIGNATURE.replace("sha256=", "sha1=")
        ));
    }

    fn b1_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Vector B1: Twilio's canonical example.
    #[test]
    fn twilio_vector_b1() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature(b"12345", url, &b1_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(twilio_signature_valid(
            b"12345",
            url,
            &b1_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // Twilio may have signed the URL with the default port written out.
        assert!(twilio_signature_valid(
            b"12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &b1_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let mut changed = b1_params();
        changed[2].1 = "1235".into();
        assert!(!twilio_signature_valid(
            b"12345",
            url,
            &changed,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cret", "s3cre"));
        assert!(!secret_matches("s3cret", ""));
    }
}
