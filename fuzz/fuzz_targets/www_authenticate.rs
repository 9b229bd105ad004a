//! `WWW-Authenticate` challenge parsing (berth-upstream), which reads what
//! any upstream registry sends: never panics, and every challenge it
//! returns has a lowercase scheme.
#![no_main]

use berth_upstream::parse_www_authenticate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    for c in parse_www_authenticate(header) {
        assert!(!c.scheme.is_empty());
        assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
        for (name, _) in &c.params {
            assert_eq!(name, &name.to_ascii_lowercase());
        }
        if let Some(b) = c.bearer() {
            assert_eq!(c.param("realm"), Some(b.realm.as_str()));
        }
        let _ = c.is_basic();
    }
});
