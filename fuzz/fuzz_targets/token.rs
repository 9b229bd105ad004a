//! berth's own bearer tokens (berth-auth `Signer::verify`) and the
//! `Authorization` header parser (berth-api `access::credentials`): any
//! string a client sends is rejected or accepted without a panic.
//!
//! The first input byte picks a mode. Odd: the rest is a token as a client
//! sends it, checked against a verifier with a fixed key, and also the value
//! of an `Authorization` header. Even: the rest is `header JSON 0xff payload
//! JSON`, signed with the verifier's own key, so the claims parsing behind
//! the signature check is reached too.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use berth_api::access::{credentials, Credentials};
use berth_auth::token::{Kind, Signer};
use hmac::{KeyInit, Mac};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];

fn verify_both(signer: &Signer, token: &str) {
    for kind in [Kind::Access, Kind::Refresh] {
        if let Ok(claims) = signer.verify(token, kind) {
            assert_eq!(claims.kind, kind);
            for e in &claims.access {
                let _ = e.actions();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let signer = Signer::new(KEY, "berth");
    if mode % 2 == 1 {
        if let Ok(token) = std::str::from_utf8(rest) {
            verify_both(&signer, token);
        }
        if let Ok(v) = http::HeaderValue::from_bytes(rest) {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, v);
            match credentials(&headers) {
                Credentials::Basic { user, .. } => assert!(!user.is_empty()),
                Credentials::Bearer(t) => {
                    assert!(!t.is_empty());
                    verify_both(&signer, t);
                }
                Credentials::None | Credentials::Invalid => {}
            }
        }
    } else {
        let (header, payload) = match rest.iter().position(|&b| b == 0xff) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
        };
        let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&KEY) else {
            return;
        };
        mac.update(input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        verify_both(&signer, &format!("{input}.{sig}"));
    }
});
