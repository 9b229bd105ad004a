//! `GET /v2/_catalog` and `GET /v2/<name>/tags/list`, with `n`/`last`
//! pagination and an RFC 8288 `Link` header to the next page.

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use berth_registry::Page;
use http::{header, HeaderMap};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{set_header, ApiState, Ctx};

fn page_params(query: &HashMap<String, String>) -> Result<(Option<usize>, Option<&str>), ApiError> {
    let n = match query.get("n") {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::PageSizeInvalid(n.clone()))?,
        ),
        None => None,
    };
    Ok((
        n,
        query
            .get("last")
            .map(String::as_str)
            .filter(|l| !l.is_empty()),
    ))
}

/// `{"repositories": [...]}`, serialized straight from the page (building a
/// `serde_json::Value` first copied every name once more: with 10,000 tags
/// that was most of a listing's time).
#[derive(serde::Serialize)]
struct CatalogBody<'a> {
    repositories: &'a [String],
}

/// `{"name": ..., "tags": [...]}`, keys in the order they always had.
#[derive(serde::Serialize)]
struct TagsBody<'a> {
    name: &'a str,
    tags: &'a [String],
}

fn json_with_link(
    body: &impl serde::Serialize,
    page: &Page,
    path: &str,
    n: Option<usize>,
) -> Response {
    let body = match serde_json::to_string(body) {
        Ok(b) => b,
        // Strings and lists of strings always serialize.
        Err(e) => {
            tracing::error!(error = %e, "serializing a listing");
            return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut headers = HeaderMap::new();
    set_header(&mut headers, header::CONTENT_TYPE, "application/json");
    if let (Some(last), Some(n)) = (&page.next_last, n) {
        set_header(
            &mut headers,
            header::LINK,
            format!("<{path}?n={n}&last={last}>; rel=\"next\""),
        );
    }
    (headers, body).into_response()
}

/// How many repositories a filtered catalog looks at per storage page.
const FILTER_PAGE: usize = 1000;

pub async fn catalog(
    state: &ApiState,
    query: &HashMap<String, String>,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let (n, last) = page_params(query)?;
    let page = if caller.is_unrestricted() {
        state.registry.catalog(n, last).await?
    } else {
        filtered_catalog(state, n, last, caller).await?
    };
    let body = CatalogBody {
        repositories: &page.items,
    };
    Ok(json_with_link(&body, &page, "/v2/_catalog", n))
}

/// A page of only the repositories `caller` may pull: storage pages are
/// read until `n` such names (and one more, to know a next page exists)
/// were found or the catalog ends.
async fn filtered_catalog(
    state: &ApiState,
    n: Option<usize>,
    last: Option<&str>,
    caller: &Caller,
) -> Result<Page, ApiError> {
    let want = n.unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut cursor = last.map(str::to_string);
    let mut more = false;
    loop {
        let page = state
            .registry
            .catalog(Some(FILTER_PAGE), cursor.as_deref())
            .await?;
        for name in page.items {
            if caller.may_pull(&name) {
                if items.len() == want {
                    more = true;
                    break;
                }
                items.push(name);
            }
        }
        if more || page.next_last.is_none() {
            break;
        }
        cursor = page.next_last;
    }
    let next_last = if more { items.last().cloned() } else { None };
    Ok(Page { items, next_last })
}

pub async fn tags(ctx: &Ctx) -> Result<Response, ApiError> {
    let (n, last) = page_params(&ctx.query)?;
    let page = ctx.registry().tags_list(&ctx.repo, n, last).await?;
    let body = TagsBody {
        name: ctx.repo.as_str(),
        tags: &page.items,
    };
    let path = format!("/v2/{}/tags/list", ctx.repo);
    Ok(json_with_link(&body, &page, &path, n))
}
