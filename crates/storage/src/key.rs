//! Document keys: `/`-separated paths whose components are checked again
//! here, so that a backend joining them onto a directory can never escape it,
//! whatever the layer above got wrong.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid storage key component")]
pub struct KeyError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocKey(String);

fn component_ok(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && c.len() <= 255
        && c.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'+' | b'=')
        })
}

impl DocKey {
    /// Build a key from components; each may itself contain `/` (a repository name).
    pub fn new<I, S>(parts: I) -> Result<Self, KeyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = String::new();
        for part in parts {
            for c in part.as_ref().split('/') {
                if !component_ok(c) {
                    return Err(KeyError(c.to_string()));
                }
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
        if out.is_empty() {
            return Err(KeyError(String::new()));
        }
        Ok(DocKey(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// This key with more components appended.
    pub fn join(&self, more: &str) -> Result<Self, KeyError> {
        DocKey::new([self.0.as_str(), more])
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_rejects() {
        assert_eq!(
            DocKey::new(["repositories", "a/b", "_tags"])
                .unwrap()
                .as_str(),
            "repositories/a/b/_tags"
        );
        for bad in ["..", ".", "", "a//b", "/abs", "a/../b", "a b", "a\\b", "é"] {
            assert!(DocKey::new([bad]).is_err(), "{bad:?}");
        }
    }
}
