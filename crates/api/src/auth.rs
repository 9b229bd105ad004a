//! Where authentication and authorization sit: every request is checked
//! once, after its route and repository are known and before any handler
//! runs. Today's default allows everything; a token or htpasswd authorizer
//! implements [`Authorizer`] without touching the handlers.

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

/// What a request wants to do. `repository` is `None` for `/v2/` and the catalog.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    pub repository: Option<&'a RepositoryName>,
    pub action: Action,
}

#[async_trait]
pub trait Authorizer: Send + Sync {
    async fn authorize(&self, headers: &HeaderMap, access: &Access<'_>) -> Result<(), ApiError>;
}

/// No authentication: every request is allowed.
pub struct AllowAll;

#[async_trait]
impl Authorizer for AllowAll {
    async fn authorize(&self, _headers: &HeaderMap, _access: &Access<'_>) -> Result<(), ApiError> {
        Ok(())
    }
}
