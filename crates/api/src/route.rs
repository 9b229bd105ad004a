//! Every `/v2/` URL parsed into one [`Route`]. Repository names contain
//! slashes, so the path is split at the last `/blobs/`, `/manifests/`,
//! `/tags/` or `/referrers/` marker rather than matched by a router pattern.

use berth_reference::{Digest, ManifestRef, NameError, RepositoryName};

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: String },
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        name: String,
        reference: ManifestRef,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: String, digest: Digest },
    /// `/v2/<name>/blobs/uploads/`
    Uploads { name: String },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: String, id: String },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: String, digest: Digest },
    /// `POST /v2/<name>/prefetch/<reference>`: berth's own extension, a
    /// mirror fetches an image from its upstream (see `prefetch`).
    Prefetch {
        name: String,
        reference: ManifestRef,
    },
}

impl Route {
    /// The repository name as written in the URL (before `?ns=` resolution).
    pub fn name(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. }
            | Route::Prefetch { name, .. } => Some(name),
        }
    }

    /// The methods this route answers to, for the `Allow` header of a 405.
    pub fn allow(&self) -> &'static str {
        match self {
            Route::Base => "GET, HEAD",
            Route::Catalog | Route::Tags { .. } | Route::Referrers { .. } => "GET",
            Route::Manifest { .. } => "GET, HEAD, PUT, DELETE",
            Route::Blob { .. } => "GET, HEAD, DELETE",
            Route::Uploads { .. } | Route::Prefetch { .. } => "POST",
            Route::Upload { .. } => "GET, PATCH, PUT, DELETE",
        }
    }

    /// Parse a request path. `Ok(None)` means "not a registry URL" (plain 404).
    pub fn parse(path: &str) -> Result<Option<Route>, ApiError> {
        let Some(rest) = path.strip_prefix("/v2") else {
            return Ok(None);
        };
        if rest.is_empty() || rest == "/" {
            return Ok(Some(Route::Base));
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Ok(None);
        };
        if rest == "_catalog" {
            return Ok(Some(Route::Catalog));
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Ok(Some(Route::Tags {
                name: check_name(name)?,
            }));
        }
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return Ok(Some(Route::Uploads {
                name: check_name(name)?,
            }));
        }
        if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
            if !id.is_empty() && !id.contains('/') {
                return Ok(Some(Route::Upload {
                    name: check_name(name)?,
                    id: id.to_string(),
                }));
            }
        }
        if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
            if !reference.contains('/') {
                let name = check_name(name)?;
                let reference = check_reference(reference)?;
                return Ok(Some(Route::Manifest { name, reference }));
            }
        }
        if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
            if !digest.contains('/') {
                let name = check_name(name)?;
                let digest = digest.parse().map_err(|e: berth_reference::DigestError| {
                    ApiError::DigestInvalid(e.to_string())
                })?;
                return Ok(Some(Route::Blob { name, digest }));
            }
        }
        if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
            if !digest.contains('/') {
                let name = check_name(name)?;
                let digest = digest.parse().map_err(|e: berth_reference::DigestError| {
                    ApiError::DigestInvalid(e.to_string())
                })?;
                return Ok(Some(Route::Referrers { name, digest }));
            }
        }
        if let Some((name, reference)) = rest.rsplit_once("/prefetch/") {
            if !reference.contains('/') {
                let name = check_name(name)?;
                let reference = check_reference(reference)?;
                return Ok(Some(Route::Prefetch { name, reference }));
            }
        }
        Ok(None)
    }
}

/// A tag or a digest; a malformed digest is DIGEST_INVALID.
fn check_reference(reference: &str) -> Result<ManifestRef, ApiError> {
    reference.parse::<ManifestRef>().map_err(|e| match e {
        NameError::Digest(d) => ApiError::DigestInvalid(d.to_string()),
        other => ApiError::ReferenceInvalid(other.to_string()),
    })
}

/// Names are validated as repository names here, before `?ns=` resolution
/// may prefix a host, so hostile input is refused at the edge. A first
/// component `host:port` (what older berth accepted) is read as berth's
/// spelling of that mirror, `host__port`.
fn check_name(name: &str) -> Result<String, ApiError> {
    RepositoryName::parse_lenient(name)
        .map(|n| n.to_string())
        .map_err(|e| ApiError::NameInvalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    #[test]
    fn parses_every_route() {
        assert_eq!(Route::parse("/v2/").unwrap(), Some(Route::Base));
        assert_eq!(Route::parse("/v2").unwrap(), Some(Route::Base));
        assert_eq!(Route::parse("/v2/_catalog").unwrap(), Some(Route::Catalog));
        assert_eq!(
            Route::parse("/v2/a/b/tags/list").unwrap(),
            Some(Route::Tags { name: "a/b".into() })
        );
        assert!(matches!(
            Route::parse("/v2/docker.io/library/alpine/manifests/3.20").unwrap(),
            Some(Route::Manifest { name, reference: ManifestRef::Tag(_) }) if name == "docker.io/library/alpine"
        ));
        assert!(matches!(
            Route::parse(&format!("/v2/x/manifests/{}", d())).unwrap(),
            Some(Route::Manifest {
                reference: ManifestRef::Digest(_),
                ..
            })
        ));
        assert!(matches!(
            Route::parse(&format!("/v2/x/blobs/{}", d())).unwrap(),
            Some(Route::Blob { .. })
        ));
        assert_eq!(
            Route::parse("/v2/x/y/blobs/uploads/").unwrap(),
            Some(Route::Uploads { name: "x/y".into() })
        );
        assert_eq!(
            Route::parse("/v2/x/blobs/uploads/abc-1").unwrap(),
            Some(Route::Upload {
                name: "x".into(),
                id: "abc-1".into()
            })
        );
        assert!(matches!(
            Route::parse(&format!("/v2/x/referrers/{}", d())).unwrap(),
            Some(Route::Referrers { .. })
        ));
        // A repository may itself be called "blobs" or "manifests".
        assert!(matches!(
            Route::parse("/v2/blobs/manifests/latest").unwrap(),
            Some(Route::Manifest { name, .. }) if name == "blobs"
        ));
    }

    #[test]
    fn hostile_input_is_refused() {
        assert!(matches!(
            Route::parse("/v2/../etc/tags/list"),
            Err(ApiError::NameInvalid(_))
        ));
        assert!(matches!(
            Route::parse("/v2/UPPER/tags/list"),
            Err(ApiError::NameInvalid(_))
        ));
        assert!(matches!(
            Route::parse("/v2/x/blobs/sha256:zz"),
            Err(ApiError::DigestInvalid(_))
        ));
        assert!(matches!(
            Route::parse("/v2/x/manifests/..bad"),
            Err(ApiError::ReferenceInvalid(_))
        ));
        assert_eq!(Route::parse("/v3/x").unwrap(), None);
        assert_eq!(Route::parse("/v2/x/unknown").unwrap(), None);
    }
}
