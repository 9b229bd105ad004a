//! Patterns over names, for configuration that selects repositories and
//! tags (retention rules, and anything else that names "these repos"):
//!
//! - [`RepositoryPattern`]: `/`-separated components where `*` matches
//!   within one component and a component `**` matches any number of them
//!   (none included): `team/**` matches `team/app` and `team/a/b`, `*/app`
//!   matches `team/app` only, `docker.io/**` every Docker Hub mirror.
//! - [`glob_match`]: `*` (any run) and `?` (one character) within a tag.

use crate::{is_registry_host, mirror_component, mirror_host, normalise_registry, RepositoryName};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryPattern {
    source: String,
    components: Vec<String>,
}

impl std::str::FromStr for RepositoryPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| PatternError {
            pattern: s.to_string(),
            reason,
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(fail("empty"));
        }
        let mut components: Vec<String> = s.split('/').map(str::to_string).collect();
        // A registry host written literally is spelled as mirrored
        // repositories spell it (`index.docker.io/**` is `docker.io/**`,
        // `registry.local:5000/**` is `registry.local__5000/**`).
        if components.len() > 1 {
            if let Some(first) = components.first_mut() {
                if !first.contains(['*', '?']) && is_registry_host(first) {
                    let host = normalise_registry(first);
                    *first = mirror_component(&host).unwrap_or(host);
                }
            }
        }
        for c in &components {
            if c.is_empty() {
                return Err(fail("empty path component"));
            }
            if c.contains("**") && c != "**" {
                return Err(fail("`**` must be a whole path component"));
            }
        }
        Ok(RepositoryPattern {
            source: s.to_string(),
            components,
        })
    }
}

impl std::fmt::Display for RepositoryPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl RepositoryPattern {
    pub fn matches(&self, repo: &RepositoryName) -> bool {
        self.matches_name(repo.as_str())
    }

    /// [`RepositoryPattern::matches`] for a name not parsed yet.
    pub fn matches_name(&self, repo: &str) -> bool {
        let names: Vec<&str> = repo.split('/').collect();
        let pats: Vec<&str> = self.components.iter().map(String::as_str).collect();
        components_match(&pats, &names)
    }

    /// The pattern as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The registry host the pattern names literally as its first
    /// component (normalised), if it does: `docker.io/**` names Docker
    /// Hub's mirror, `**` and `*.io/**` name no host.
    pub fn literal_host(&self) -> Option<&str> {
        let first = self.components.first()?;
        (self.components.len() > 1 && !first.contains(['*', '?']) && mirror_host(first).is_some())
            .then_some(first.as_str())
    }
}

/// Whether the pattern components match the name components, in time
/// proportional to their product: `reach[j]` says whether the patterns seen
/// so far can consume exactly the first `j` names. (Trying every split for
/// each `**` instead is exponential in the number of `**`: `**/**/**/**/**/x`
/// against a 140-component name ran for minutes.)
fn components_match(pats: &[&str], names: &[&str]) -> bool {
    let mut reach = vec![false; names.len() + 1];
    reach[0] = true;
    for &p in pats {
        let mut next = vec![false; names.len() + 1];
        if p == "**" {
            // Any number of components, none included.
            let mut any = false;
            for (n, r) in next.iter_mut().zip(&reach) {
                any |= *r;
                *n = any;
            }
        } else {
            for (j, name) in names.iter().enumerate() {
                next[j + 1] = reach[j] && glob_match(p, name);
            }
        }
        if !next.contains(&true) {
            return false;
        }
        reach = next;
    }
    reach[names.len()]
}

/// `*` matches any run of characters, `?` any one; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, r: &str) -> bool {
        p.parse::<RepositoryPattern>()
            .unwrap()
            .matches(&r.parse().unwrap())
    }

    #[test]
    fn repository_patterns() {
        assert!(m("team/**", "team/app"));
        assert!(m("team/**", "team/a/b/c"));
        assert!(m("team/**", "team"));
        assert!(!m("team/**", "teams/app"));
        assert!(m("*/app", "team/app"));
        assert!(!m("*/app", "a/b/app"));
        assert!(m("**/app", "a/b/app"));
        assert!(m("docker.io/**", "docker.io/library/alpine"));
        assert!(m("team/app-*", "team/app-web"));
        assert!(!m("team/app-*", "team/app-web/x"));
        assert!(m("**", "anything/at/all"));
        assert!(m("index.docker.io/**", "docker.io/library/alpine"));
        // A port may be written as clients write it or as berth spells it.
        assert!(m("registry.local:5000/**", "registry.local__5000/demo/app"));
        assert!(m(
            "registry.local__5000/**",
            "registry.local__5000/demo/app"
        ));
        assert!(!m("registry.local/**", "registry.local__5000/demo/app"));
        for p in ["localhost:5000/**", "localhost__5000/x"] {
            let p: RepositoryPattern = p.parse().unwrap();
            assert_eq!(p.literal_host(), Some("localhost__5000"));
        }
        let p: RepositoryPattern = "docker.io/library/*".parse().unwrap();
        assert_eq!(p.literal_host(), Some("docker.io"));
        assert_eq!(
            "**".parse::<RepositoryPattern>().unwrap().literal_host(),
            None
        );
        assert_eq!(
            "*.io/**"
                .parse::<RepositoryPattern>()
                .unwrap()
                .literal_host(),
            None
        );
        for bad in ["", "team//x", "team/a**"] {
            assert!(bad.parse::<RepositoryPattern>().is_err(), "{bad}");
        }
    }

    /// Inputs the `reference` fuzz target found running for minutes (many
    /// `**` against names of many components): each must answer at once.
    #[test]
    fn many_double_stars_against_long_names_stay_fast() {
        let started = std::time::Instant::now();
        for input in [
            "**/**/**/**/**/2r6\u{18}\u{18}\u{18}0\u{4b69b}\u{0}\u{0}*\nc\u{0}&\u{0}\u{0}//////////\u{f}////////////////////k.cedroio/0/////\u{0}?///////////////////////////////////////////P///////////////////////////////////////2\u{5},0\u{4b69b}\u{0}A\u{0}\u{0}\u{0}*?\n\u{0}////P////////////////\u{0}\u{0}\u{0}?\u{0}d/eost:0",
            "**/**/**/r6\u{5},0\u{4b69b}\u{0}A\u{0}\u{0}\u{0}*?\n\n0.2)\u{0}\u{1}\u{0}\u{0}\u{1}\u{0}\u{0}\u{0}\u{0}\u{0}////0/05a/0/9/a0/a/2ua/p20/uu/zu0/a/0/a/ua/0/au0/0/0/05a/0/9/a0/a/2ua/p1/au0/0/0/05a/0/9/a0/a/2ua/p100/a/0/au0/0/0/05a/0/9/a0/a/2ua/p10/uu/zu0/a/0/a/ua/010/ua/p10/uu/zu0/a/0/a/ua/010/u/a/u0/0/a/00/a/0/au0/0/0/a/00/a/0/a/ua/p095uu/zu0/a/0/a/ua/010/ua/p10/uu/zu0/a/0/a/ua/010/u0/uu/zu0/a/0/a/ua/010/ua/p10/uu/zu0/a/0/a/ua/010/u/a/u/zu0/0/0/a/00/a/0/au0/0/0/a/00/a/0/a/ua/p10/uu/zu0/a/0/a/ua/010/ua/p10/uu/a/0/a/ua/01000/a/0/au0/0/0/05a/0/9/a0/a/2ua/p10/uu/zu0/a/0/a/ua/010/ua/p10/uu/zu0/a/0/a/ua/010/u/a/u0/0/a/0/a0/0/au0/0/0/a/00/a/0/a/ua/p095uu/zu0/a/0/a/ua/010/ua/p10/uu/zu0/a/0/a/ua/010/u0/uu/zu0/a/0/a/ua/010/ua/p10/uu/zu0/a/0/a/ua/010/u/a/u/zu0/0/0/a/00/a/0/au0/0/0/a/00/a/0/a/ua/p10/uu/zu0/a/0/010/ua/p10/uu/zu0/a/0/a/ua/010/u/a/u0/0/a/00/a\u{0}we/0",
        ] {
            let (pattern, name) = input.split_once('\n').unwrap_or((input, input));
            if let Ok(p) = pattern.parse::<RepositoryPattern>() {
                let _ = p.matches_name(name);
            }
        }
        let stars = "**/".repeat(40) + "b";
        let p: RepositoryPattern = stars.parse().unwrap();
        let long = "a/".repeat(120) + "c";
        assert!(!p.matches_name(&long));
        assert!(p.matches_name(&("a/".repeat(120) + "b")));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn tag_globs() {
        assert!(glob_match("v*", "v1.2.3"));
        assert!(glob_match("*", ""));
        assert!(glob_match("latest", "latest"));
        assert!(!glob_match("latest", "latest2"));
        assert!(glob_match("*-rc?", "1.0-rc1"));
        assert!(!glob_match("v*", "1.0"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
    }
}
