//! The page at `/`: the files `scripts/web.sh build` writes to `web/dist`, read into memory
//! when the router is built and served with CDN-friendly headers.
//!
//! - `/assets/…` (names carry a content hash): `Cache-Control: public, max-age=31536000,
//!   immutable` and `Access-Control-Allow-Origin: *`, so a CDN may front them and the page
//!   may load them from that other origin (`web.asset_base`).
//! - `index.html` and other files: `Cache-Control: no-cache` (revalidated every time).
//! - Every file has an `ETag` (a hash of its bytes; `If-None-Match` answers 304) and is sent
//!   compressed when the build left a `.br` or `.gz` beside it and the client accepts it:
//!   compression costs nothing at request time and needs no compression crate here.
//!
//! Without a built page `/` answers a short note saying how to build it: the daemon builds
//! and runs without Node. The files are read once, at start: restart after a rebuild.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// One file, with its precompressed forms.
#[derive(Debug)]
struct Asset {
    body: Bytes,
    gzip: Option<Bytes>,
    brotli: Option<Bytes>,
    etag: HeaderValue,
    content_type: &'static str,
    immutable: bool,
}

/// The routes of the page: one per built file, or `/` with the how-to-build note.
pub fn routes(state: &AppState) -> Router<AppState> {
    let dir = state
        .config
        .web
        .dir
        .clone()
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("web/dist")).filter(|d| d.join("index.html").is_file()));
    let files = match dir
        .as_deref()
        .map(|d| load(d, state.config.web.asset_base.as_deref()))
    {
        Some(Ok(files)) if !files.is_empty() => files,
        Some(Ok(_)) | None => return Router::new().route("/", get(not_built)),
        Some(Err(e)) => {
            tracing::warn!(error = %e, dir = ?dir, "web.dir unreadable: the page is not served");
            return Router::new().route("/", get(not_built));
        }
    };
    tracing::info!(dir = ?dir, files = files.len(), "serving the page at /");
    let files = Arc::new(files);
    let mut router = Router::new();
    for path in files.keys() {
        let route = if path == "/index.html" { "/" } else { path };
        let files = files.clone();
        let key = path.clone();
        router = router.route(
            route,
            get(move |req: Request| async move { serve(&files[&key], &req) }),
        );
    }
    router
}

/// `GET /` without a build: the how-to-build note. Its annotation documents `/` whichever
/// handler serves it.
#[utoipa::path(
    get, path = "/", tag = "page",
    summary = "The web page (index.html of `web_dir`), or a note saying how to build it",
    description = "Files under /assets/ are content-hashed and served with `Cache-Control: public, max-age=31536000, immutable`; index.html with `no-cache`; all with an ETag, and br/gzip when the build left precompressed copies.",
    params(("If-None-Match" = Option<String>, Header, nullable = false, description = "an ETag from before")),
    responses(
        (status = 200, description = "HTML", body = String, content_type = "text/html"),
        (status = 304, description = "not modified (If-None-Match)"),
    ),
)]
pub(crate) async fn not_built() -> Response {
    let mut r = Html(
        "<!doctype html><title>Christmas</title><h1>Christmas</h1>\
         <p>The page is not built. Run <code>bash scripts/web.sh install &amp;&amp; bash scripts/web.sh build</code> \
         (writes <code>web/dist</code>), or point <code>--web-dir</code> / <code>CHRISTMAS_WEB_DIR</code> at a build, \
         then restart the daemon.</p><p>The API is at <a href=\"/api/openapi.json\">/api/openapi.json</a>.</p>",
    )
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Reads every file under `dir` (`.gz` / `.br` files attach to the file they compress).
/// `asset_base` (a CDN origin) is written into `index.html` in front of `./assets/`.
fn load(dir: &Path, asset_base: Option<&str>) -> std::io::Result<HashMap<String, Asset>> {
    let mut raw: HashMap<String, Vec<u8>> = HashMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let name = rel.to_string_lossy().replace('\\', "/");
                raw.insert(format!("/{name}"), std::fs::read(&path)?);
            }
        }
    }
    let mut files = HashMap::new();
    for (path, body) in &raw {
        if path.ends_with(".gz") || path.ends_with(".br") {
            continue;
        }
        let mut body = body.clone();
        let mut rewritten = false;
        if let (Some(base), "/index.html") = (asset_base, path.as_str()) {
            let html = String::from_utf8_lossy(&body).replace(
                "\"./assets/",
                &format!("\"{}/assets/", base.trim_end_matches('/')),
            );
            body = html.into_bytes();
            rewritten = true;
        }
        // A rewritten page no longer matches its precompressed copies.
        let side = |ext: &str| {
            raw.get(&format!("{path}.{ext}"))
                .filter(|_| !rewritten)
                .map(|b| Bytes::from(b.clone()))
        };
        let digest = Sha256::digest(&body);
        let etag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        files.insert(
            path.clone(),
            Asset {
                gzip: side("gz"),
                brotli: side("br"),
                etag: HeaderValue::try_from(format!("\"{etag}\""))
                    .unwrap_or(HeaderValue::from_static("\"-\"")),
                content_type: content_type(path),
                immutable: path.starts_with("/assets/"),
                body: Bytes::from(body),
            },
        );
    }
    Ok(files)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve(a: &Asset, req: &Request) -> Response {
    let headers = req.headers();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    let accepts = |coding: &str| {
        headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|c| c.split(';').next().map(str::trim) == Some(coding))
            })
    };
    let (body, coding) = match (&a.brotli, &a.gzip) {
        (Some(b), _) if accepts("br") => (b.clone(), Some("br")),
        (_, Some(g)) if accepts("gzip") => (g.clone(), Some("gzip")),
        _ => (a.body.clone(), None),
    };
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, a.etag.clone());
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let cache = if a.immutable {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if !fresh {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        if let Some(c) = coding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c));
        }
    }
    r
}
