//! A real HTTP/1.1 client for the tests and the bench: hyper's own client (already built for
//! axum), wrapped in the few calls they make, so no test speaks HTTP by hand.

use std::fmt::Display;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A client of one server (`http://ADDR`), optionally sending a bearer key.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    bearer: Option<String>,
    /// Each request on its own connection, closed after the answer.
    close: bool,
}

/// An answer: status, headers and the whole body.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, read to its end.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("a JSON body (status {}): {}", self.status, self.text()))
    }

    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

impl HttpClient {
    /// A client of `addr` that opens a connection per request and asks the server to close
    /// it (`connection: close`), as clients that come and go do.
    pub fn new(addr: impl Display) -> HttpClient {
        HttpClient::build(addr, true)
    }

    /// A client of `addr` that keeps its connections open and reuses them.
    pub fn keep_alive(addr: impl Display) -> HttpClient {
        HttpClient::build(addr, false)
    }

    fn build(addr: impl Display, close: bool) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        if close {
            builder.pool_max_idle_per_host(0);
        }
        HttpClient {
            client: builder.build(connector),
            base: format!("http://{addr}"),
            bearer: None,
            close,
        }
    }

    /// The same client, sending `authorization: Bearer KEY` with every request.
    pub fn bearer(mut self, key: &str) -> HttpClient {
        self.bearer = Some(format!("Bearer {key}"));
        self
    }

    /// `method path` with `headers` and `body`; an error only when no answer came.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse> {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes())?)
            .uri(format!("{}{path}", self.base));
        if self.close {
            req = req.header("connection", "close");
        }
        if let Some(b) = &self.bearer {
            req = req.header("authorization", b.as_str());
        }
        for (k, v) in headers {
            req = req.header(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        let req = req.body(Full::new(body.into()))?;
        let answer = self
            .client
            .request(req)
            .await
            .with_context(|| format!("{method} {}{path}", self.base))?;
        let (head, body) = answer.into_parts();
        let body = body
            .collect()
            .await
            .with_context(|| format!("the body of {method} {path}"))?
            .to_bytes();
        Ok(HttpResponse {
            status: head.status.as_u16(),
            headers: head.headers,
            body,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<HttpResponse> {
        self.request("GET", path, &[], Bytes::new()).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<HttpResponse> {
        self.request("DELETE", path, &[], Bytes::new()).await
    }

    /// `POST path` with `json` as an `application/json` body.
    pub async fn post_json(&self, path: &str, json: &serde_json::Value) -> Result<HttpResponse> {
        self.post_body(path, "application/json", json.to_string())
            .await
    }

    /// `POST path` with `body` of `content_type`.
    pub async fn post_body(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse> {
        self.request("POST", path, &[("content-type", content_type)], body)
            .await
    }
}
