//! The auth extractor: a handler names the scope it needs in its signature
//! (`_: Authorized<Ingest>`, or `key: Authorized<Orders>` to read `key.account`), and a
//! request without a key for that scope is refused with 401 or 403 before the handler runs.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

use crate::auth::{self, Access, Scope};
use crate::http::reply::{closing, error};
use crate::state::AppState;

/// A [`Scope`] as a type, so a handler's signature can say which one it needs.
pub trait RequiredScope {
    /// The scope the request's key must have.
    const SCOPE: Scope;
}

/// [`Scope::Ingest`]: `POST /api/ticks`.
#[derive(Debug)]
pub struct Ingest;

/// [`Scope::Orders`]: the order endpoints.
#[derive(Debug)]
pub struct Orders;

/// [`Scope::Read`]: market-data reads (checked only when `auth_reads` is on).
#[derive(Debug)]
pub struct Read;

impl RequiredScope for Ingest {
    const SCOPE: Scope = Scope::Ingest;
}

impl RequiredScope for Orders {
    const SCOPE: Scope = Scope::Orders;
}

impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}

/// A request allowed to act in scope `S`, and the account it acts for.
#[derive(Debug)]
pub struct Authorized<S> {
    /// The key's name; `default` when no key is needed.
    pub account: String,
    scope: PhantomData<S>,
}

impl<S: RequiredScope> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        let account = account(s, parts, S::SCOPE)?;
        Ok(Authorized {
            account,
            scope: PhantomData,
        })
    }
}

/// The account (key name) the request acts for, or the 401/403 reply; that reply closes
/// the connection, as it comes before the body is read.
fn account(s: &AppState, parts: &Parts, scope: Scope) -> Result<String, Response> {
    if !s.config.needs_key(scope) {
        return Ok("default".to_string());
    }
    let header = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match auth::check(&s.config.api_keys, header, scope) {
        Access::Allowed(name) => Ok(name.unwrap_or_else(|| "default".to_string())),
        Access::Unauthenticated => {
            let mut reply = error(
                StatusCode::UNAUTHORIZED,
                Some("authorization"),
                "missing or unknown API key (Authorization: Bearer <key>)",
            );
            // RFC 6750: a 401 names the scheme, and says so when a token was given but is
            // unknown.
            let challenge = match header.and_then(auth::bearer_token) {
                Some(_) => r#"Bearer error="invalid_token""#,
                None => "Bearer",
            };
            reply
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            Err(closing(reply))
        }
        Access::Forbidden(name) => Err(closing(error(
            StatusCode::FORBIDDEN,
            Some("authorization"),
            format!("key {name:?} lacks the {} scope", scope.as_str()),
        ))),
    }
}
