//! Retention rules: per repository glob, which tags and manifests to keep.
//! The first rule whose `repositories` glob matches a repository applies to
//! it; repositories no rule matches keep everything. Within a rule a tag is
//! kept when any criterion that is set keeps it:
//!
//! - `keep_tags`: it matches one of these patterns (`v*`, `latest`);
//! - `keep_last = N`: it is among the N tags pushed or pulled most recently;
//! - `pulled_within = D`: it was pulled (or pushed) within D.
//!
//! A rule that sets none of the three keeps every tag. `delete_untagged`
//! also removes manifests no kept tag reaches: neither tagged, nor a child
//! of a kept index, nor a referrer (signature, SBOM) of a kept manifest,
//! and stored longer ago than the GC grace period (a multi-arch push sends
//! its children before the index that tags them). What retention removes,
//! garbage collection then frees.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use berth_reference::{glob_match, Digest, ManifestRef, RepositoryName, RepositoryPattern};
use berth_registry::Registry;
use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Debug, Clone)]
pub struct RetentionRule {
    pub repositories: Vec<RepositoryPattern>,
    pub keep_last: Option<usize>,
    pub keep_tags: Vec<String>,
    pub pulled_within: Option<Duration>,
    pub delete_untagged: bool,
}

impl RetentionRule {
    fn applies_to(&self, repo: &RepositoryName) -> bool {
        self.repositories.iter().any(|p| p.matches(repo))
    }

    fn limits_tags(&self) -> bool {
        self.keep_last.is_some() || !self.keep_tags.is_empty() || self.pulled_within.is_some()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetentionReport {
    /// `repository:tag`, removed (or, in a dry run, that would be).
    pub tags_deleted: Vec<String>,
    /// `repository@digest`, likewise.
    pub manifests_deleted: Vec<String>,
}

pub async fn apply(
    registry: &Registry,
    rules: &[RetentionRule],
    grace: Duration,
    dry_run: bool,
) -> Result<RetentionReport> {
    let mut report = RetentionReport::default();
    if rules.is_empty() {
        return Ok(report);
    }
    let now = SystemTime::now();
    for repo in registry.repositories().await? {
        let Some(rule) = rules.iter().find(|r| r.applies_to(&repo)) else {
            continue;
        };
        let mut tags = registry.tag_activity(&repo).await?;
        // Most recent activity first.
        tags.sort_by_key(|t| std::cmp::Reverse(t.pulled.unwrap_or(t.pushed).max(t.pushed)));
        let mut kept_digests: HashSet<Digest> = HashSet::new();
        for (rank, t) in tags.iter().enumerate() {
            let last = t.pulled.unwrap_or(t.pushed).max(t.pushed);
            let keep = !rule.limits_tags()
                || rule.keep_tags.iter().any(|p| glob_match(p, t.tag.as_str()))
                || rule.keep_last.is_some_and(|n| rank < n)
                || rule
                    .pulled_within
                    .is_some_and(|d| now.duration_since(last).unwrap_or_default() <= d);
            if keep {
                kept_digests.insert(t.digest.clone());
                continue;
            }
            report.tags_deleted.push(format!("{repo}:{}", t.tag));
            if !dry_run {
                registry.tag_delete(&repo, &t.tag).await?;
            }
        }
        if !rule.delete_untagged {
            continue;
        }
        // What the kept tags reach: children of indexes, and referrers.
        let revisions = registry.manifest_revisions(&repo).await?;
        let mut refs = HashMap::new();
        let mut referrers_of: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for d in &revisions {
            if let Some(r) = registry.manifest_references(&repo, d).await? {
                if let Some(subject) = &r.subject {
                    referrers_of
                        .entry(subject.clone())
                        .or_default()
                        .push(d.clone());
                }
                refs.insert(d.clone(), r);
            }
        }
        let mut reached = kept_digests.clone();
        let mut queue: Vec<Digest> = kept_digests.into_iter().collect();
        while let Some(d) = queue.pop() {
            let children = refs
                .get(&d)
                .map(|r| r.manifests.clone())
                .unwrap_or_default();
            let referrers = referrers_of.get(&d).cloned().unwrap_or_default();
            for next in children.into_iter().chain(referrers) {
                if reached.insert(next.clone()) {
                    queue.push(next);
                }
            }
        }
        for d in revisions {
            if reached.contains(&d) {
                continue;
            }
            let stored = registry.revision_stored_at(&repo, &d).await?;
            if stored.is_some_and(|at| now.duration_since(at).unwrap_or_default() < grace) {
                continue;
            }
            report.manifests_deleted.push(format!("{repo}@{d}"));
            if !dry_run {
                match registry
                    .manifest_delete(&repo, &ManifestRef::Digest(d))
                    .await
                {
                    Ok(()) | Err(berth_registry::RegistryError::ManifestUnknown(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(report)
}
