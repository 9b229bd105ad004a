//! `--override-path [PREFIX]`: the mirror is a plain registry (registry:2,
//! a Harbor project) rather than berth, so it has no `?ns=` routing and no
//! mirror namespaces of its own. Each registry's images live under PREFIX
//! there; `{registry}` in PREFIX stands for berth's name of the registry
//! (`docker.io`, `registry.local__5000`), which is how `berth bundle load
//! --to MIRROR/PREFIX` lays several registries out side by side. Without
//! PREFIX the images sit at the mirror's root, as in a registry:2 that
//! mirrors one upstream.

use berth_reference::{mirror_component, RepositoryName};

use crate::ConfigError;

/// What stands for the registry in a prefix.
pub const REGISTRY_PLACEHOLDER: &str = "{registry}";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverridePath {
    prefix: String,
}

impl OverridePath {
    /// A repository prefix, possibly with `{registry}` components; empty
    /// for the mirror's root.
    pub fn parse(prefix: &str) -> Result<OverridePath, ConfigError> {
        let prefix = prefix.trim().trim_matches('/');
        if !prefix.is_empty() {
            // Validated with a sample registry in the placeholder's place.
            let sample = prefix.replace(REGISTRY_PLACEHOLDER, "docker.io");
            sample.parse::<RepositoryName>().map_err(|e| {
                ConfigError::Unsupported(format!("--override-path {prefix:?}: {e}"))
            })?;
        }
        Ok(OverridePath {
            prefix: prefix.to_string(),
        })
    }

    /// The prefix on the mirror of `registry`'s images (`None`: every
    /// registry, which cannot fill a `{registry}` placeholder). Empty for
    /// the mirror's root.
    pub fn for_registry(&self, registry: Option<&str>) -> Result<String, ConfigError> {
        if !self.prefix.contains(REGISTRY_PLACEHOLDER) {
            return Ok(self.prefix.clone());
        }
        let name = registry
            .and_then(mirror_component)
            .ok_or_else(|| {
                ConfigError::Unsupported(format!(
                    "--override-path {:?} names {{registry}}, which one configuration for every registry (`*`) cannot fill: list the registries",
                    self.prefix
                ))
            })?;
        Ok(self.prefix.replace(REGISTRY_PLACEHOLDER, &name))
    }

    pub fn is_root(&self) -> bool {
        self.prefix.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = OverridePath::parse("airgap/{registry}").unwrap();
        assert_eq!(
            p.for_registry(Some("registry.local:5000")).unwrap(),
            "airgap/registry.local__5000"
        );
        assert!(p.for_registry(None).is_err());
        let p = OverridePath::parse("/proxy-hub/").unwrap();
        assert_eq!(p.for_registry(None).unwrap(), "proxy-hub");
        assert!(OverridePath::parse("").unwrap().is_root());
        for bad in ["UPPER", "a//b", "../x", "a/{registry", "a b"] {
            assert!(OverridePath::parse(bad).is_err(), "{bad}");
        }
    }
}
