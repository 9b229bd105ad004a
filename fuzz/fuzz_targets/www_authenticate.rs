//! `WWW-Authenticate` challenge parsing (berth-upstream), which reads what
//! any upstream registry sends: never panics, every challenge it returns
//! has a lowercase scheme, and the challenges written back out (values
//! quoted and escaped) parse to the same challenges.
#![no_main]

use berth_upstream::{parse_www_authenticate, Challenge};
use libfuzzer_sys::fuzz_target;

/// A challenge as a registry would send it.
fn render(c: &Challenge) -> String {
    let mut s = c.scheme.clone();
    if let Some(t) = &c.token68 {
        s.push(' ');
        s.push_str(t);
        return s;
    }
    for (i, (name, value)) in c.params.iter().enumerate() {
        s.push_str(if i == 0 { " " } else { ", " });
        s.push_str(name);
        s.push_str("=\"");
        for ch in value.chars() {
            if ch == '"' || ch == '\\' {
                s.push('\\');
            }
            s.push(ch);
        }
        s.push('"');
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let challenges = parse_www_authenticate(header);
    let rendered: Vec<String> = challenges.iter().map(render).collect();
    let rendered = rendered.join(", ");
    assert_eq!(
        parse_www_authenticate(&rendered),
        challenges,
        "{header:?} rendered as {rendered:?}"
    );
    for c in challenges {
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
