//! Manifest and index parsing and validation (berth-manifest's
//! `Manifest::parse`, which the registry runs on every pushed or cached
//! manifest): never panics, and what it accepts is self-consistent.
//! The first line of the input is the request's Content-Type, the rest the
//! body (an input without a newline is a body with no Content-Type).
#![no_main]

use berth_manifest::{media_type, Kind, Manifest, MAX_MANIFEST_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    for ct in [content_type, None] {
        let Ok(m) = Manifest::parse(body, ct) else {
            continue;
        };
        assert!(body.len() <= MAX_MANIFEST_SIZE);
        match m.kind {
            Kind::Image => {
                assert!(media_type::is_image_manifest(&m.media_type));
                assert!(!m.blobs.is_empty(), "an image has a config");
                assert!(m.manifests.is_empty());
            }
            Kind::Index => {
                assert!(media_type::is_index(&m.media_type));
                assert!(m.blobs.is_empty());
            }
        }
        for r in m.blobs.iter().chain(&m.manifests).chain(&m.subject) {
            // Digests are checked shapes: they print as they parse.
            assert_eq!(
                r.digest.to_string().parse::<berth_reference::Digest>().ok(),
                Some(r.digest.clone())
            );
        }
    }
});
