//! The JSON shape of image manifests and indexes, as serde types that borrow
//! from the pushed bytes.
//!
//! Every field the image spec defines is here with its JSON type, so a
//! document with, say, a number where a string belongs is refused as it was
//! with `oci-spec`'s types. What differs is the cost: a registry may be sent
//! tens of thousands of descriptors, and `oci-spec` copies every digest
//! twice and checks it character by character before berth parses it again.
//! Here strings stay borrowed (JSON escapes aside) and each distinct digest
//! string is parsed once per document ([`Digests`]).

use std::borrow::Cow;
use std::collections::HashMap;

use berth_reference::Digest;
use serde::Deserialize;

use crate::{media_type, ManifestError, Reference};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageManifest<'a> {
    // The value is checked by `Manifest::parse`; here only its type.
    #[allow(dead_code)]
    pub schema_version: u32,
    #[allow(dead_code)]
    #[serde(borrow)]
    pub media_type: Option<Cow<'a, str>>,
    pub artifact_type: Option<String>,
    #[serde(borrow)]
    pub config: Descriptor<'a>,
    #[serde(borrow)]
    pub layers: Vec<Descriptor<'a>>,
    #[serde(borrow)]
    pub subject: Option<Descriptor<'a>>,
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageIndex<'a> {
    #[allow(dead_code)]
    pub schema_version: u32,
    #[allow(dead_code)]
    #[serde(borrow)]
    pub media_type: Option<Cow<'a, str>>,
    pub artifact_type: Option<String>,
    #[serde(borrow)]
    pub manifests: Vec<Descriptor<'a>>,
    #[serde(borrow)]
    pub subject: Option<Descriptor<'a>>,
    pub annotations: Option<HashMap<String, String>>,
}

/// A content descriptor. The fields berth does not use are still typed, so
/// that their JSON types are checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct Descriptor<'a> {
    #[serde(borrow)]
    pub media_type: Cow<'a, str>,
    #[serde(borrow)]
    pub digest: Cow<'a, str>,
    pub size: u64,
    pub urls: Option<Vec<String>>,
    pub annotations: Option<HashMap<String, String>>,
    pub platform: Option<Platform>,
    pub artifact_type: Option<String>,
    pub data: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
pub(crate) struct Platform {
    architecture: String,
    os: String,
    #[serde(rename = "os.version")]
    os_version: Option<String>,
    #[serde(rename = "os.features")]
    os_features: Option<Vec<String>>,
    variant: Option<String>,
    features: Option<Vec<String>>,
}

/// The digests of one document, each distinct string parsed once: a
/// manifest repeating one layer 25,000 times costs one parse, not 25,000.
#[derive(Default)]
pub(crate) struct Digests<'d> {
    parsed: HashMap<&'d str, Digest>,
}

impl<'d> Digests<'d> {
    fn get(&mut self, s: &'d str) -> Result<Digest, ManifestError> {
        if let Some(d) = self.parsed.get(s) {
            return Ok(d.clone());
        }
        let d: Digest = s
            .parse()
            .map_err(|e: berth_reference::DigestError| ManifestError::Invalid(e.to_string()))?;
        self.parsed.insert(s, d.clone());
        Ok(d)
    }
}

impl<'a> Descriptor<'a> {
    /// What this descriptor points at, its digest checked.
    pub fn reference<'d>(&'d self, digests: &mut Digests<'d>) -> Result<Reference, ManifestError> {
        Ok(Reference {
            digest: digests.get(&self.digest)?,
            size: self.size,
            media_type: self.media_type.to_string(),
        })
    }

    /// Non-distributable layers (Windows base layers) are fetched from their
    /// `urls`, not from the registry, so they need not exist here.
    pub fn is_foreign(&self) -> bool {
        self.media_type == media_type::DOCKER_FOREIGN_LAYER
            || self.media_type.contains("nondistributable")
            || self.urls.as_ref().is_some_and(|u| !u.is_empty())
    }
}
