//! Listings (tags, catalog): single pages as the spec's `n`/`last` ask for
//! them, and whole listings following `Link: rel="next"` with a loop guard.

use berth_reference::RepositoryName;
use reqwest::Method;
use url::Url;

use crate::auth::Scope;
use crate::error::UpstreamError;

use super::request::{check, read_bounded, with_code};
use super::{header_str, UpstreamClient, MAX_JSON_BODY, MAX_PAGES};

/// One page of a listing, and where the next one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// The `Link: <…>; rel="next"` target, when there is more.
    pub next: Option<Url>,
}

/// Parse a `Link` header for its `rel="next"` target.
pub(crate) fn parse_link_next(value: &str) -> Option<&str> {
    // Each link is `<uri>; params`; URIs may contain commas, so scan by '<' '>'.
    let mut rest = value;
    for _ in 0..64 {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let uri = &rest[open + 1..close];
        let after = &rest[close + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return Some(uri);
        }
        rest = after;
    }
    None
}

impl UpstreamClient {
    /// One page of `/v2/<name>/tags/list` (`n`, `last` as in the spec), or
    /// the page at `next` from a previous answer.
    pub async fn tags_page(
        &self,
        repo: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, UpstreamError> {
        let mut url = self.repo_url(repo, "tags/list")?;
        set_page_query(&mut url, n, last);
        self.list_page(url, vec![Scope::pull(&self.remote_name(repo))], "tags")
            .await
    }

    /// All tags of a repository, following `Link` pagination; `page_size`
    /// is the `n` asked for per page (the upstream's default when `None`).
    pub async fn tags_list(
        &self,
        repo: &RepositoryName,
        page_size: Option<usize>,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut url = self.repo_url(repo, "tags/list")?;
        set_page_query(&mut url, page_size, None);
        self.list_all(url, vec![Scope::pull(&self.remote_name(repo))], "tags")
            .await
    }

    /// One page of `/v2/_catalog`.
    pub async fn catalog_page(
        &self,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, UpstreamError> {
        let mut url = self.url("v2/_catalog")?;
        set_page_query(&mut url, n, last);
        self.list_page(url, vec![Scope::catalog()], "repositories")
            .await
    }

    /// Every repository in the upstream's catalog, following `Link`
    /// pagination; `page_size` as for [`UpstreamClient::tags_list`].
    pub async fn catalog(&self, page_size: Option<usize>) -> Result<Vec<String>, UpstreamError> {
        let mut url = self.url("v2/_catalog")?;
        set_page_query(&mut url, page_size, None);
        self.list_all(url, vec![Scope::catalog()], "repositories")
            .await
    }

    async fn list_all(
        &self,
        first: Url,
        scopes: Vec<Scope>,
        field: &str,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut out = Vec::new();
        let mut url = first;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            if !seen.insert(url.clone()) {
                return Err(UpstreamError::Protocol(format!(
                    "pagination loops back to {url}"
                )));
            }
            let page = self.list_page(url, scopes.clone(), field).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => url = next,
                None => return Ok(out),
            }
        }
        Err(UpstreamError::Protocol(format!(
            "more than {MAX_PAGES} pages of {field}"
        )))
    }

    /// Fetch one listing page from `url`.
    pub(crate) async fn list_page(
        &self,
        url: Url,
        scopes: Vec<Scope>,
        field: &str,
    ) -> Result<Page, UpstreamError> {
        let what = format!("GET {}", url.path());
        let req = self.req(Method::GET, url, scopes);
        let resp = self.execute(req).await?;
        let resp = check(resp, &what).await.map_err(|e| {
            if field == "tags" {
                with_code(e, "NAME_UNKNOWN")
            } else {
                e
            }
        })?;
        let next = header_str(resp.headers(), "link")
            .and_then(parse_link_next)
            .map(|l| resp.url().join(l))
            .transpose()
            .map_err(|e| UpstreamError::Protocol(format!("{what}: bad Link header: {e}")))?;
        let body = read_bounded(resp, MAX_JSON_BODY).await?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Protocol(format!("{what}: {e}")))?;
        let items = match v.get(field) {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        UpstreamError::Protocol(format!("{what}: {field} holds a non-string"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(UpstreamError::Protocol(format!(
                    "{what}: {field} is not a list"
                )))
            }
        };
        Ok(Page { items, next })
    }
}

fn set_page_query(url: &mut Url, n: Option<usize>, last: Option<&str>) {
    if n.is_none() && last.is_none() {
        return;
    }
    let mut q = url.query_pairs_mut();
    if let Some(n) = n {
        q.append_pair("n", &n.to_string());
    }
    if let Some(l) = last {
        q.append_pair("last", l);
    }
}
