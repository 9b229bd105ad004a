//! Where authentication and authorization sit: every request is checked
//! once, after its route and repository are known and before any handler
//! runs. Without `[auth]` the default allows everything; [`crate::access`]
//! implements [`Authorizer`] over berth-auth's users, tokens and policy
//! without touching the handlers.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use berth_reference::RepositoryName;
use http::HeaderMap;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// What a request wants to do. `repository` is `None` for `/v2/` and the catalog.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    pub repository: Option<&'a RepositoryName>,
    pub action: Action,
}

type PullFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Who a request came from, once authorized: the user (for audit lines) and
/// which repositories they may pull (for the catalog).
#[derive(Clone, Default)]
pub struct Caller {
    pub user: Option<String>,
    may_pull: Option<PullFilter>,
}

impl Caller {
    /// A caller who may read everything (no access control).
    pub fn unrestricted() -> Caller {
        Caller::default()
    }

    pub fn restricted(user: Option<String>, may_pull: PullFilter) -> Caller {
        Caller {
            user,
            may_pull: Some(may_pull),
        }
    }

    /// Whether the caller may pull `repo` (a resolved repository name).
    pub fn may_pull(&self, repo: &str) -> bool {
        self.may_pull.as_ref().is_none_or(|f| f(repo))
    }

    pub fn is_unrestricted(&self) -> bool {
        self.may_pull.is_none()
    }
}

#[async_trait]
pub trait Authorizer: Send + Sync {
    /// May the request with these headers do `access`?
    async fn authorize(&self, headers: &HeaderMap, access: &Access<'_>) -> Result<(), ApiError>;

    /// The same, knowing the client's address (rate limits, audit lines),
    /// answering who the caller is.
    async fn check(
        &self,
        _client: Option<SocketAddr>,
        headers: &HeaderMap,
        access: &Access<'_>,
    ) -> Result<Caller, ApiError> {
        self.authorize(headers, access)
            .await
            .map(|()| Caller::unrestricted())
    }

    /// Who sent these headers, anonymous allowed, without asking for any
    /// one action (the web UI shows each caller what they may pull).
    /// Credentials that are given must be good.
    async fn caller(
        &self,
        _client: Option<SocketAddr>,
        _headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        Ok(Caller::unrestricted())
    }
}

/// No authentication: every request is allowed.
pub struct AllowAll;

#[async_trait]
impl Authorizer for AllowAll {
    async fn authorize(&self, _headers: &HeaderMap, _access: &Access<'_>) -> Result<(), ApiError> {
        Ok(())
    }
}
