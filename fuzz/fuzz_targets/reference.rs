//! Image references, repository names, tags, digests, manifest references
//! and repository patterns (berth-reference): nothing panics, and whatever
//! parses prints to a string that parses back to the same value.
#![no_main]

use berth_reference::{
    glob_match, Digest, ImageReference, ManifestRef, RepositoryName, RepositoryPattern, Tag,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(r) = s.parse::<ImageReference>() {
        let printed = r.to_string();
        let again: ImageReference = printed
            .parse()
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(again, r, "{s:?} → {printed:?} parses differently");
        assert_eq!(again.to_string(), printed);
        let _ = r.reference_str();
        // A mirrored copy's name is a repository name (or a typed error).
        // It reads back as the same registry and path.
        if let Ok(m) = r.mirror_repository() {
            assert_eq!(m.as_str().parse::<RepositoryName>().as_ref(), Ok(&m));
            let (host, rest) = m.mirror_parts().unwrap_or_else(|| panic!("{m} is no mirror"));
            assert_eq!((host.as_ref(), rest), (r.registry.as_str(), r.repository.as_str()));
        }
    }

    if let Ok(n) = s.parse::<RepositoryName>() {
        assert_eq!(n.as_str(), s);
        // Safe to join onto a storage path.
        for c in n.components() {
            assert!(!c.is_empty() && c != "." && c != "..", "{s:?}");
        }
        let _ = n.mirror_parts();
    }
    // The lenient form (`host:port/...`) yields a spec-valid name.
    if let Ok(n) = RepositoryName::parse_lenient(s) {
        assert!(!n.as_str().contains(':'), "{s:?} → {n}");
        assert_eq!(n.as_str().parse::<RepositoryName>().as_ref(), Ok(&n));
    }

    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.as_str(), s);
    }

    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex().len(), d.algorithm().hex_len());
    }

    if let Ok(m) = s.parse::<ManifestRef>() {
        assert_eq!(m.to_string(), s);
    }

    // Pattern and name from the two halves of the input.
    let (pattern, name) = s.split_once('\n').unwrap_or((s, s));
    if let Ok(p) = pattern.parse::<RepositoryPattern>() {
        let _ = p.matches_name(name);
        let _ = p.literal_host();
    }
    let _ = glob_match(pattern, name);
});
