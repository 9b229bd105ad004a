//! Who may do what: ordered `[[policy]]` rules of repository globs ×
//! subjects × actions, and the groups subjects may name.
//!
//! - A glob's `*` matches within one path component, `**` any number of
//!   whole components (also none): `team/**` matches `team/app` and
//!   `team/a/b`; `team/*` only `team/app`.
//! - Subjects: a user name, `group:NAME`, `authenticated` (any user who
//!   proved who they are) and `anonymous` (everyone: what anonymous callers
//!   may do, authenticated callers may do too).
//! - What no rule allows is denied. Rules only ever grant, so their order
//!   never changes the outcome; it is kept for `berth` to report them as
//!   written.
//! - Mirror namespaces (a repository whose first component is a registry
//!   host, `docker.io/library/alpine`) are pull-only: a rule grants `push` or
//!   `delete` in a mirror namespace only when its glob's first component is
//!   that host written literally, without a wildcard (`docker.io/**` grants
//!   preloading Docker Hub's namespace; `**` or `*.io/**` never does). This
//!   keeps a broad "admins may push everywhere" rule from letting anyone
//!   poison what every node pulls through the cache.

use std::collections::{HashMap, HashSet};

use berth_reference::{mirror_host, normalise_registry, RepositoryPattern};
use serde::Deserialize;

use crate::AuthError;

/// A set of actions (`pull`, `push`, `delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    pub const ALL: Actions = Actions(7);

    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }
    pub fn minus(self, other: Actions) -> Actions {
        Actions(self.0 & !other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// One action by its name in configs and token scopes; `*` is all of them.
    pub fn parse_one(s: &str) -> Option<Actions> {
        match s.trim() {
            "pull" => Some(Actions::PULL),
            "push" => Some(Actions::PUSH),
            "delete" => Some(Actions::DELETE),
            "*" => Some(Actions::ALL),
            _ => None,
        }
    }

    /// The names in the order the token spec writes them.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.contains(Actions::PULL) {
            v.push("pull");
        }
        if self.contains(Actions::PUSH) {
            v.push("push");
        }
        if self.contains(Actions::DELETE) {
            v.push("delete");
        }
        v
    }
}

/// A repository glob: `*` within a component, `**` across components (the
/// matching itself is `berth_reference::RepositoryPattern`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoGlob {
    pattern: RepositoryPattern,
}

impl RepoGlob {
    pub fn parse(text: &str) -> Result<RepoGlob, AuthError> {
        let t = text.trim();
        if t.starts_with('/') || t.ends_with('/') {
            return Err(AuthError::Config(format!(
                "repository glob {text:?}: components separated by single '/', none empty"
            )));
        }
        let pattern = t
            .parse::<RepositoryPattern>()
            .map_err(|e| AuthError::Config(e.to_string()))?;
        Ok(RepoGlob { pattern })
    }

    pub fn as_str(&self) -> &str {
        self.pattern.as_str()
    }

    pub fn matches(&self, repo: &str) -> bool {
        self.pattern.matches_name(repo)
    }

    /// The registry host this glob names literally as its first component
    /// (normalised: `index.docker.io` is `docker.io`), if any.
    pub fn literal_host(&self) -> Option<String> {
        self.pattern.literal_host().map(str::to_string)
    }
}

/// Who a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Group(String),
    Authenticated,
    Anonymous,
}

impl Subject {
    pub fn parse(s: &str) -> Result<Subject, AuthError> {
        let s = s.trim();
        Ok(match s {
            "anonymous" => Subject::Anonymous,
            "authenticated" => Subject::Authenticated,
            _ => match s.strip_prefix("group:") {
                Some("") => {
                    return Err(AuthError::Config(
                        "subject \"group:\" names no group".into(),
                    ))
                }
                Some(g) => Subject::Group(g.to_string()),
                None if s.is_empty() => return Err(AuthError::Config("empty subject".into())),
                None => Subject::User(s.to_string()),
            },
        })
    }
}

/// One `[[policy]]` table as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub repositories: Vec<String>,
    pub subjects: Vec<String>,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    repositories: Vec<RepoGlob>,
    subjects: Vec<Subject>,
    actions: Actions,
}

/// Who is asking, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal<'a> {
    Anonymous,
    User(&'a str),
}

/// The rules and groups of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    groups: HashMap<String, HashSet<String>>,
}

impl Policy {
    pub fn new(
        rules: &[RuleConfig],
        groups: &HashMap<String, Vec<String>>,
    ) -> Result<Policy, AuthError> {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let n = i + 1;
            let ctx = |e: AuthError| AuthError::Config(format!("[[policy]] #{n}: {e}"));
            let repositories = r
                .repositories
                .iter()
                .map(|g| RepoGlob::parse(g))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ctx)?;
            let subjects = r
                .subjects
                .iter()
                .map(|s| Subject::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ctx)?;
            for s in &subjects {
                if let Subject::Group(g) = s {
                    if !groups.contains_key(g) {
                        return Err(AuthError::Config(format!(
                            "[[policy]] #{n}: group {g:?} is not defined in [auth] groups"
                        )));
                    }
                }
            }
            let mut actions = Actions::NONE;
            for a in &r.actions {
                actions = actions.union(Actions::parse_one(a).ok_or_else(|| {
                    AuthError::Config(format!(
                        "[[policy]] #{n}: unknown action {a:?} (pull, push, delete)"
                    ))
                })?);
            }
            if repositories.is_empty() || subjects.is_empty() || actions.is_empty() {
                return Err(AuthError::Config(format!(
                    "[[policy]] #{n}: repositories, subjects and actions must each name at least one"
                )));
            }
            out.push(Rule {
                repositories,
                subjects,
                actions,
            });
        }
        Ok(Policy {
            rules: out,
            groups: groups
                .iter()
                .map(|(g, users)| (g.clone(), users.iter().cloned().collect()))
                .collect(),
        })
    }

    fn applies(&self, subject: &Subject, who: &Principal<'_>) -> bool {
        match (subject, who) {
            (Subject::Anonymous, _) => true,
            (_, Principal::Anonymous) => false,
            (Subject::Authenticated, Principal::User(_)) => true,
            (Subject::User(u), Principal::User(name)) => u == name,
            (Subject::Group(g), Principal::User(name)) => {
                self.groups.get(g).is_some_and(|m| m.contains(*name))
            }
        }
    }

    /// What `who` may do in `repo` (a resolved repository name).
    pub fn rights(&self, who: &Principal<'_>, repo: &str) -> Actions {
        let mirror_host = repo
            .split_once('/')
            .map(|(first, _)| first)
            .filter(|first| mirror_host(first).is_some())
            .map(normalise_registry);
        let mut granted = Actions::NONE;
        for rule in &self.rules {
            if !rule.subjects.iter().any(|s| self.applies(s, who)) {
                continue;
            }
            for glob in &rule.repositories {
                if !glob.matches(repo) {
                    continue;
                }
                let mut actions = rule.actions;
                if let Some(host) = &mirror_host {
                    if glob.literal_host().as_deref() != Some(host.as_str()) {
                        actions = actions.intersect(Actions::PULL);
                    }
                }
                granted = granted.union(actions);
            }
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(s: &str) -> RepoGlob {
        RepoGlob::parse(s).unwrap()
    }

    #[test]
    fn globs_within_and_across_components() {
        assert!(glob("team/**").matches("team/app"));
        assert!(glob("team/**").matches("team/a/b/c"));
        assert!(!glob("team/**").matches("teams/app"));
        assert!(glob("team/*").matches("team/app"));
        assert!(!glob("team/*").matches("team/a/b"));
        assert!(glob("**").matches("x"));
        assert!(glob("**").matches("docker.io/library/alpine"));
        assert!(glob("a/**/z").matches("a/z"));
        assert!(glob("a/**/z").matches("a/b/c/z"));
        assert!(!glob("a/**/z").matches("a/b/c"));
        assert!(glob("app-*").matches("app-1"));
        assert!(!glob("app-*").matches("app-1/x"));
        assert!(glob("*-svc/*").matches("pay-svc/api"));
        assert!(!glob("team").matches("team/app"));
        assert!(RepoGlob::parse("team/a**").is_err());
        assert!(RepoGlob::parse("").is_err());
        assert!(RepoGlob::parse("a//b").is_err());
    }

    fn rule(repos: &[&str], subjects: &[&str], actions: &[&str]) -> RuleConfig {
        RuleConfig {
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn product_policy() -> Policy {
        let groups = HashMap::from([
            ("admins".to_string(), vec!["alice".to_string()]),
            (
                "devs".to_string(),
                vec!["bob".to_string(), "carol".to_string()],
            ),
        ]);
        Policy::new(
            &[
                rule(
                    &["team/**"],
                    &["alice", "group:devs"],
                    &["pull", "push", "delete"],
                ),
                rule(
                    &["docker.io/**", "registry.k8s.io/**"],
                    &["anonymous"],
                    &["pull"],
                ),
                rule(&["**"], &["group:admins"], &["pull", "push", "delete"]),
                rule(&["docker.io/**"], &["alice"], &["push"]),
                rule(&["public/*"], &["authenticated"], &["pull"]),
            ],
            &groups,
        )
        .unwrap()
    }

    #[test]
    fn subjects_groups_and_default_deny() {
        let p = product_policy();
        let bob = Principal::User("bob");
        let dave = Principal::User("dave");
        assert_eq!(p.rights(&bob, "team/app"), Actions::ALL);
        assert_eq!(p.rights(&dave, "team/app"), Actions::NONE);
        assert_eq!(p.rights(&Principal::Anonymous, "team/app"), Actions::NONE);
        assert_eq!(p.rights(&dave, "public/x"), Actions::PULL);
        assert_eq!(p.rights(&Principal::Anonymous, "public/x"), Actions::NONE);
        // What anonymous may do, users may do.
        assert_eq!(p.rights(&dave, "docker.io/library/alpine"), Actions::PULL);
        assert_eq!(
            p.rights(&Principal::Anonymous, "registry.k8s.io/pause"),
            Actions::PULL
        );
        assert_eq!(
            p.rights(&Principal::Anonymous, "quay.io/x/y"),
            Actions::NONE
        );
    }

    #[test]
    fn mirror_namespaces_need_a_literal_host_for_push() {
        let p = product_policy();
        let alice = Principal::User("alice");
        // `**` gives admins everything locally...
        assert_eq!(p.rights(&alice, "anything/else"), Actions::ALL);
        // ...but only pull in mirror namespaces, except where a rule names the host.
        assert_eq!(p.rights(&alice, "quay.io/x/y"), Actions::PULL);
        assert_eq!(
            p.rights(&alice, "docker.io/library/alpine"),
            Actions::PULL.union(Actions::PUSH)
        );
        let p = Policy::new(
            &[rule(&["*.io/**", "index.docker.io/**"], &["x"], &["push"])],
            &HashMap::new(),
        )
        .unwrap();
        let x = Principal::User("x");
        assert_eq!(p.rights(&x, "quay.io/a/b"), Actions::NONE);
        // index.docker.io is Docker Hub's alias: the same namespace.
        assert_eq!(p.rights(&x, "docker.io/library/a"), Actions::PUSH);
    }

    #[test]
    fn config_errors_are_clear() {
        let e = Policy::new(&[rule(&["a"], &["group:nope"], &["pull"])], &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("#1"), "{e}");
        let e = Policy::new(&[rule(&["a"], &["x"], &["write"])], &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("write"), "{e}");
        assert!(Policy::new(&[rule(&[], &["x"], &["pull"])], &HashMap::new()).is_err());
    }
}
