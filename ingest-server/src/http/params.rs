//! The path and query extractors the handlers use. axum's own ([`Path`], [`Query`]) refuse
//! a bad path or query with `400 text/plain`; these refuse with the JSON error naming the
//! field, as every other refusal does.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, MatchedPath, Path, Query};
use axum::http::request::Parts;
use axum::response::Response;

use crate::http::reply::bad_request;

/// The route's one `{name}` path parameter, percent-decoded, without a NUL byte.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Response> {
        // The parameter's name is only worked out for an error answer.
        let Path(value) = Path::<String>::from_request_parts(parts, s)
            .await
            .map_err(|e| bad_request(&param_name(parts), e.body_text()))?;
        if value.contains('\0') {
            return Err(nul_refusal(&param_name(parts)));
        }
        Ok(PathParam(value))
    }
}

/// The name between the braces of the matched route (`id` for `/api/orders/{id}`), or
/// `path` when there is none to name.
fn param_name(parts: &Parts) -> String {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    route
        .and_then(|r| r.split_once('{'))
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or_else(|| "path".to_string(), |(name, _)| name.to_string())
}

/// The query string's parameters, percent-decoded, none holding a NUL byte; the last of a
/// repeated name wins.
#[derive(Debug)]
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Response> {
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, s)
            .await
            .map_err(|e| bad_request("query", e.body_text()))?;
        for (name, value) in &params {
            no_nul(name, name)?;
            no_nul(name, value)?;
        }
        Ok(QueryParams(params))
    }
}

/// PostgreSQL text cannot hold a NUL byte: refuse it here as the client's error (400),
/// rather than let the store fail the read (503).
fn no_nul(field: &str, text: &str) -> Result<(), Response> {
    match text.contains('\0') {
        true => Err(nul_refusal(field)),
        false => Ok(()),
    }
}

fn nul_refusal(field: &str) -> Response {
    bad_request(field, "must not contain a NUL byte")
}
