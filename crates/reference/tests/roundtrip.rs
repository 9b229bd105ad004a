//! Property tests: an image reference parses, prints and parses back to the
//! same value (and the same text), for references built from the grammar
//! and for arbitrary strings that happen to parse; names, tags and digests
//! print exactly as they were given.

use berth_reference::{Digest, ImageReference, ManifestRef, RepositoryName, Tag};
use proptest::prelude::*;

/// A path component in the distribution spec's grammar.
fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,6}){0,2}"
}

/// A registry host as users write it: DNS labels, optional port, any case.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("localhost".to_string()),
        "[a-zA-Z0-9]{1,8}(\\.[a-zA-Z0-9]{1,8}){1,2}",
        "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}:[1-9][0-9]{0,3}",
        Just("index.docker.io".to_string()),
        Just("docker.io".to_string()),
    ]
}

fn tag() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9._-]{0,20}"
}

fn digest() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
        "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}")),
    ]
}

/// `[host/]path[:tag][@digest]` built from the grammar.
fn reference() -> impl Strategy<Value = (Option<String>, String, Option<String>, Option<String>)> {
    (
        proptest::option::of(host()),
        proptest::collection::vec(component(), 1..4).prop_map(|c| c.join("/")),
        proptest::option::of(tag()),
        proptest::option::of(digest()),
    )
}

fn assert_round_trip(r: &ImageReference) -> Result<(), TestCaseError> {
    let printed = r.to_string();
    let again: ImageReference = printed
        .parse()
        .map_err(|e| TestCaseError::fail(format!("{printed:?} does not parse back: {e}")))?;
    prop_assert_eq!(&again, r);
    prop_assert_eq!(again.to_string(), printed);
    Ok(())
}

proptest! {
    // Failures are reported, not written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn grammar_references_round_trip((host, path, tag, digest) in reference()) {
        // Without a host, a first component with a '.' is read as one
        // (Docker's rule), and `a.b_c` is no host.
        let first = path.split('/').next().unwrap_or_default();
        prop_assume!(host.is_some() || !path.contains('/') || !first.contains('.'));
        let mut s = String::new();
        if let Some(h) = &host {
            s.push_str(h);
            s.push('/');
        }
        s.push_str(&path);
        if let Some(t) = &tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &digest {
            s.push('@');
            s.push_str(d);
        }
        let r: ImageReference = s.parse().map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
        assert_round_trip(&r)?;
        // What was written is what was kept.
        prop_assert_eq!(r.digest.as_ref().map(ToString::to_string), digest.clone());
        match (&tag, &digest) {
            (None, None) => prop_assert_eq!(r.tag.as_ref().map(Tag::as_str), Some("latest")),
            _ => prop_assert_eq!(r.tag.as_ref().map(|t| t.to_string()), tag),
        }
        if let Some(h) = &host {
            prop_assert_eq!(&r.registry, &berth_reference::normalise_registry(h));
            prop_assert!(r.repository.as_str().ends_with(path.as_str()));
        }
        // The mirror name berth stores it under is a repository name.
        let mirror = r.mirror_repository().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(mirror.as_str().parse::<RepositoryName>().ok(), Some(mirror.clone()));
        // ... from which the registry and its path are read back.
        let (upstream, rest) = mirror.mirror_parts().ok_or_else(|| TestCaseError::fail("no mirror"))?;
        prop_assert_eq!(upstream.as_ref(), r.registry.as_str());
        prop_assert_eq!(rest, r.repository.as_str());
    }

    #[test]
    fn whatever_parses_round_trips(s in "[a-zA-Z0-9./:@_-]{0,48}") {
        if let Ok(r) = s.parse::<ImageReference>() {
            assert_round_trip(&r)?;
        }
    }

    #[test]
    fn arbitrary_text_round_trips_or_is_rejected(s in any::<String>()) {
        if let Ok(r) = s.parse::<ImageReference>() {
            assert_round_trip(&r)?;
        }
    }

    #[test]
    fn names_tags_and_digests_print_as_given(
        path in proptest::collection::vec(component(), 1..5).prop_map(|c| c.join("/")),
        tag in tag(),
        digest in digest(),
    ) {
        let n: RepositoryName = path.parse().map_err(|e| TestCaseError::fail(format!("{path:?}: {e}")))?;
        prop_assert_eq!(n.as_str(), path.as_str());
        prop_assert!(n.components().all(|c| !c.is_empty() && c != "." && c != ".."));
        let t: Tag = tag.parse().map_err(|e| TestCaseError::fail(format!("{tag:?}: {e}")))?;
        prop_assert_eq!(t.to_string(), tag.clone());
        let d: Digest = digest.parse().map_err(|e| TestCaseError::fail(format!("{digest:?}: {e}")))?;
        prop_assert_eq!(d.to_string(), digest.clone());
        for r in [tag, digest] {
            let m: ManifestRef = r.parse().map_err(|e| TestCaseError::fail(format!("{r:?}: {e}")))?;
            prop_assert_eq!(m.to_string(), r);
        }
    }
}
