//! Manifests: the only structured documents a registry must understand.
//!
//! [`Manifest::parse`] takes the bytes exactly as pushed plus the request's
//! `Content-Type`, and answers what the registry needs to accept them: the
//! media type to store and serve back, the blobs and child manifests that must
//! already exist, the `subject` (for the referrers API) and the artifact type.
//! Docker schema2 documents have the same shape as OCI's and differ only in
//! media types. The document's shape is checked by the serde types in
//! `wire` (every field the image spec defines, with its JSON type).
#![forbid(unsafe_code)]

mod wire;

use std::collections::HashMap;

use berth_reference::Digest;
use wire::{Digests, ImageIndex, ImageManifest};

/// Largest manifest accepted (Distribution's and the spec's customary limit).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

    /// Media types of single-image manifests.
    pub fn is_image_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }

    /// Media types of multi-platform indexes.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }

    /// Every manifest media type berth serves (the `Accept` it answers to).
    pub const ALL: [&str; 4] = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is larger than {MAX_MANIFEST_SIZE} bytes")]
    TooLarge,
    #[error("Docker schema1 manifests are not supported; push a schema2 or OCI manifest")]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

/// What kind of document a manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// A reference from a manifest to content that must exist in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A parsed, validated manifest. The original bytes are not kept here: the
/// caller stores exactly what was pushed.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub kind: Kind,
    /// Blobs (config and layers) that must exist before the manifest is accepted.
    pub blobs: Vec<Reference>,
    /// Child manifests of an index, which must exist before it is accepted.
    pub manifests: Vec<Reference>,
    pub subject: Option<Reference>,
    pub artifact_type: Option<String>,
    pub annotations: HashMap<String, String>,
}

/// Just enough of any manifest to decide how to parse it. Whether
/// `manifests` and `config` are present is all that matters of them: they
/// are skipped, not built into a tree (an index of tens of thousands of
/// entries would otherwise be materialised once more just to be dropped).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    config: Option<serde::de::IgnoredAny>,
}

impl Manifest {
    /// Parse `bytes` pushed with `content_type` (the request header, if any).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge);
        }
        // Ignore parameters such as `; charset=utf-8`.
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or_default().trim())
            .filter(|c| !c.is_empty());
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Invalid(format!("not a JSON object: {e}")))?;
        for mt in [probe.media_type.as_deref(), content_type]
            .into_iter()
            .flatten()
        {
            if mt == media_type::DOCKER_SCHEMA1 || mt == media_type::DOCKER_SCHEMA1_SIGNED {
                return Err(ManifestError::Schema1);
            }
        }
        match &probe.schema_version {
            Some(v) if v.as_u64() == Some(2) => {}
            Some(v) if v.as_u64() == Some(1) => return Err(ManifestError::Schema1),
            _ => return Err(ManifestError::Invalid("schemaVersion must be 2".into())),
        }
        // The body's own mediaType wins; the header must agree with it when both are given.
        let media_type = match (probe.media_type.as_deref(), content_type) {
            (Some(body), Some(header)) if body != header && media_type::ALL.contains(&header) => {
                return Err(ManifestError::Invalid(format!(
                    "Content-Type {header:?} does not match the manifest's mediaType {body:?}"
                )))
            }
            (Some(body), _) => body.to_string(),
            (None, Some(header)) if media_type::ALL.contains(&header) => header.to_string(),
            // No usable type anywhere: infer it from the shape (OCI allows omitting mediaType).
            (None, _) if probe.manifests.is_some() => media_type::OCI_INDEX.to_string(),
            (None, _) if probe.config.is_some() => media_type::OCI_MANIFEST.to_string(),
            (None, _) => {
                return Err(ManifestError::Invalid(
                    "cannot tell the manifest's media type".into(),
                ))
            }
        };
        if media_type::is_index(&media_type) {
            Self::parse_index(bytes, media_type)
        } else if media_type::is_image_manifest(&media_type) {
            Self::parse_image(bytes, media_type)
        } else {
            Err(ManifestError::UnsupportedMediaType(media_type))
        }
    }

    fn parse_image(bytes: &[u8], media_type: String) -> Result<Manifest, ManifestError> {
        let m: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        let mut digests = Digests::default();
        let mut blobs = Vec::with_capacity(m.layers.len() + 1);
        blobs.push(m.config.reference(&mut digests)?);
        for layer in &m.layers {
            if !layer.is_foreign() {
                blobs.push(layer.reference(&mut digests)?);
            }
        }
        // An artifact's type is artifactType, or else its config's media type.
        let artifact_type = m
            .artifact_type
            .filter(|a| !a.is_empty())
            .or_else(|| Some(m.config.media_type.to_string()));
        Ok(Manifest {
            media_type,
            kind: Kind::Image,
            blobs,
            manifests: Vec::new(),
            subject: m
                .subject
                .as_ref()
                .map(|s| s.reference(&mut digests))
                .transpose()?,
            artifact_type,
            annotations: m.annotations.unwrap_or_default(),
        })
    }

    fn parse_index(bytes: &[u8], media_type: String) -> Result<Manifest, ManifestError> {
        let i: ImageIndex =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        let mut digests = Digests::default();
        let manifests = i
            .manifests
            .iter()
            .map(|d| d.reference(&mut digests))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Manifest {
            media_type,
            kind: Kind::Index,
            blobs: Vec::new(),
            manifests,
            subject: i
                .subject
                .as_ref()
                .map(|s| s.reference(&mut digests))
                .transpose()?,
            // An empty artifactType is a missing one (the referrers API omits it).
            artifact_type: i.artifact_type.filter(|a| !a.is_empty()),
            annotations: i.annotations.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(media_type: Option<&str>, extra: &str) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":7}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":9}}]{extra}}}"#,
            d('a'),
            d('b')
        )
    }

    #[test]
    fn oci_image_lists_config_and_layers() {
        let m =
            Manifest::parse(image(Some(media_type::OCI_MANIFEST), "").as_bytes(), None).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.media_type, media_type::OCI_MANIFEST);
        let digests: Vec<_> = m.blobs.iter().map(|r| r.digest.to_string()).collect();
        assert_eq!(digests, vec![d('a'), d('b')]);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn media_type_from_header_when_body_has_none() {
        let m = Manifest::parse(
            image(None, "").as_bytes(),
            Some(media_type::DOCKER_MANIFEST),
        )
        .unwrap();
        assert_eq!(m.media_type, media_type::DOCKER_MANIFEST);
        let m = Manifest::parse(image(None, "").as_bytes(), None).unwrap();
        assert_eq!(m.media_type, media_type::OCI_MANIFEST);
    }

    #[test]
    fn header_and_body_must_agree() {
        let body = image(Some(media_type::OCI_MANIFEST), "");
        let err = Manifest::parse(body.as_bytes(), Some(media_type::DOCKER_MANIFEST)).unwrap_err();
        assert!(matches!(err, ManifestError::Invalid(_)));
        // Parameters on the header are ignored.
        assert!(Manifest::parse(
            body.as_bytes(),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
        )
        .is_ok());
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/vnd.example.sbom","subject":{{"mediaType":"{}","digest":"{}","size":3}}"#,
            media_type::OCI_MANIFEST,
            d('c')
        );
        let m = Manifest::parse(
            image(Some(media_type::OCI_MANIFEST), &extra).as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(m.subject.unwrap().digest.to_string(), d('c'));
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
    }

    #[test]
    fn index_lists_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            media_type::DOCKER_MANIFEST_LIST,
            media_type::DOCKER_MANIFEST,
            d('e')
        );
        let m = Manifest::parse(body.as_bytes(), Some(media_type::DOCKER_MANIFEST_LIST)).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.manifests.len(), 1);
        assert!(m.blobs.is_empty());
    }

    #[test]
    fn foreign_layers_need_not_exist() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":7}},
               "layers":[{{"mediaType":"{}","digest":"{}","size":9,"urls":["https://example.invalid/l"]}}]}}"#,
            media_type::DOCKER_MANIFEST,
            d('a'),
            media_type::DOCKER_FOREIGN_LAYER,
            d('b')
        );
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.blobs.len(), 1);
    }

    /// Parsing is linear and cheap per descriptor. Measured as wall time
    /// of this thread (an upper bound on its CPU time); the bound is
    /// generous because test builds of this crate are unoptimised (a
    /// release build parses either document in a few milliseconds).
    #[test]
    fn large_manifests_and_indexes_parse_in_linear_time() {
        let layer = format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":9}}"#,
            d('b')
        );
        let layers = vec![layer; 25_000].join(",");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":7}},"layers":[{layers}]}}"#,
            media_type::OCI_MANIFEST,
            d('a')
        );
        let started = std::time::Instant::now();
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        let image = started.elapsed();
        assert_eq!(m.blobs.len(), 25_001);

        let entry = format!(
            r#"{{"mediaType":"{}","digest":"{}","size":5}}"#,
            media_type::OCI_MANIFEST,
            d('e')
        );
        let entries = vec![entry; 25_000].join(",");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{entries}]}}"#,
            media_type::OCI_INDEX
        );
        let started = std::time::Instant::now();
        let i = Manifest::parse(body.as_bytes(), None).unwrap();
        let index = started.elapsed();
        assert_eq!(i.manifests.len(), 25_000);
        eprintln!("parse: 25,000 layers {image:?}, 25,000-entry index {index:?} (debug build)");
        assert!(
            image < std::time::Duration::from_millis(400),
            "25,000 layers took {image:?}"
        );
        assert!(
            index < std::time::Duration::from_millis(400),
            "25,000 entries took {index:?}"
        );
    }

    /// The wire types check every field's JSON type, as `oci-spec`'s did,
    /// and strings with JSON escapes (copied, not borrowed) still parse.
    #[test]
    fn descriptor_fields_are_type_checked() {
        let layer = |extra: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x/y","digest":"{}","size":1}},"layers":[{{"mediaType":"x/z","digest":"{}","size":2{extra}}}]}}"#,
                media_type::OCI_MANIFEST,
                d('a'),
                d('b')
            )
        };
        assert!(Manifest::parse(layer("").as_bytes(), None).is_ok());
        for bad in [
            r#","annotations":{"k":1}"#,
            r#","urls":"http://x""#,
            r#","platform":{"architecture":"amd64"}"#,
            r#","data":7"#,
            r#","size":3"#,
        ] {
            assert!(
                matches!(
                    Manifest::parse(layer(bad).as_bytes(), None),
                    Err(ManifestError::Invalid(_))
                ),
                "accepted a layer with {bad}"
            );
        }
        let negative = layer("").replace(r#""size":2"#, r#""size":-2"#);
        assert!(Manifest::parse(negative.as_bytes(), None).is_err());
        // `\u0062` is "b": the digest arrives escaped and is still read right.
        let escaped = layer("").replace(&d('b'), &d('b').replace('b', "\\u0062"));
        let m = Manifest::parse(escaped.as_bytes(), None).unwrap();
        assert_eq!(m.blobs[1].digest.to_string(), d('b'));
        let platform =
            r#","platform":{"architecture":"arm64","os":"linux","os.version":"1","variant":"v8"}"#;
        assert!(Manifest::parse(layer(platform).as_bytes(), None).is_ok());
    }

    #[test]
    fn rejects_bad_documents() {
        assert!(matches!(
            Manifest::parse(b"not json", None),
            Err(ManifestError::Invalid(_))
        ));
        assert!(matches!(
            Manifest::parse(b"[]", None),
            Err(ManifestError::Invalid(_))
        ));
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#, None),
            Err(ManifestError::Schema1)
        ));
        assert!(matches!(
            Manifest::parse(b"{}", Some(media_type::DOCKER_SCHEMA1_SIGNED)),
            Err(ManifestError::Schema1)
        ));
        let bad_digest =
            image(Some(media_type::OCI_MANIFEST), "").replace(&d('b'), "sha256:nothex");
        assert!(matches!(
            Manifest::parse(bad_digest.as_bytes(), None),
            Err(ManifestError::Invalid(_))
        ));
        let missing_layers = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x/y","digest":"{}","size":1}}}}"#,
            media_type::OCI_MANIFEST,
            d('a')
        );
        assert!(Manifest::parse(missing_layers.as_bytes(), None).is_err());
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert_eq!(
            Manifest::parse(&big, None).unwrap_err(),
            ManifestError::TooLarge
        );
        let other = r#"{"schemaVersion":2,"mediaType":"application/vnd.example+json"}"#;
        assert!(matches!(
            Manifest::parse(other.as_bytes(), None),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
    }
}
