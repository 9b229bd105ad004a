//! Platforms (`os/arch[/variant]`) and picking one image out of an index:
//! the `--platform` flag, and the host's platform as skopeo's default.

use std::fmt;
use std::str::FromStr;

use berth_manifest::Reference;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TransferError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform in Go's names (images are Linux images).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an image of platform `candidate` satisfies this request.
    /// A request without a variant takes any; arm64's variant defaults to v8.
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        let norm = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        match &self.variant {
            None => true,
            Some(_) => norm(self) == norm(candidate),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = TransferError;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            TransferError::Invalid(format!(
                "platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64"
            ))
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

/// One entry of an index, with its platform if it gave one.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub descriptor: Reference,
    pub platform: Option<Platform>,
}

/// The entries of an OCI index or Docker manifest list.
pub fn index_entries(bytes: &[u8]) -> Result<Vec<IndexEntry>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Desc {
        #[serde(default)]
        media_type: String,
        digest: String,
        size: u64,
        platform: Option<Platform>,
    }
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Desc>,
    }
    let index: Index = serde_json::from_slice(bytes)
        .map_err(|e| TransferError::Corrupt(format!("invalid index: {e}")))?;
    index
        .manifests
        .into_iter()
        .map(|d| {
            Ok(IndexEntry {
                descriptor: Reference {
                    digest: d.digest.parse().map_err(|e| {
                        TransferError::Corrupt(format!("invalid digest in index: {e}"))
                    })?,
                    size: d.size,
                    media_type: d.media_type,
                },
                platform: d.platform,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p: Platform = "linux/arm64".parse().unwrap();
        assert!(p.matches(&"linux/arm64/v8".parse().unwrap()));
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(v8.matches(&"linux/arm64".parse().unwrap()));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(!v7.matches(&"linux/arm/v6".parse().unwrap()));
        assert!("linux".parse::<Platform>().is_err());
        assert_eq!(v7.to_string(), "linux/arm/v7");
    }
}
