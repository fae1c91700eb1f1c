//! The OpenAPI document is the server: the daemon serves the document utoipa generates from
//! the handlers, the document has a path for every route and a route for every path, and
//! each path takes exactly the methods the document gives it. (The schemathesis run of
//! `scripts/schemathesis.sh` checks the bodies and statuses against a live daemon.)

use std::collections::BTreeSet;

use christmas_ingest::http::{api_doc, api_paths};
use serde_json::Value;

use crate::daemon::Daemon;

/// A concrete path for a templated one.
fn concrete(path: &str) -> String {
    path.replace("{symbol}", "ESZ6").replace("{id}", "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_generated_and_matches_the_routes() {
    let d = Daemon::start(|_| {}).await;
    let served = d.client().get("/api/openapi.json").await.unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(
        served.text(),
        api_doc::document(),
        "the served document is not the generated one"
    );
    let doc: Value = served.json().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // Paths: the routes' and the document's are the same set (plus the page's `/`).
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let mut routed: BTreeSet<String> = api_paths().into_iter().map(String::from).collect();
    routed.insert("/".to_string());
    assert_eq!(documented, routed, "routes and documented paths differ");

    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = concrete(path);
        let methods: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        // A method no route takes: 405, JSON, and `Allow` lists the path's methods.
        let r = d
            .client()
            .request("PATCH", &url, &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(r.status, 405, "PATCH {url}: {}", r.text());
        assert_eq!(r.json().unwrap()["field"], "method", "{url}");
        let allowed: BTreeSet<String> = r
            .header("allow")
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty() && m != "HEAD")
            .collect();
        assert_eq!(allowed, methods, "{url}: Allow and the document differ");
        // Each documented method reaches a handler (not the 404 fallback), and every
        // answer but the page's and the metrics text is JSON.
        for m in &methods {
            let r = d.client().request(m, &url, &[], Vec::new()).await.unwrap();
            assert_ne!(r.status, 405, "{m} {url}");
            let documented_status = &item[m.to_lowercase()]["responses"][r.status.to_string()];
            assert!(
                documented_status.is_object(),
                "{m} {url} answered an undocumented {}: {}",
                r.status,
                r.text()
            );
            if r.status >= 400 {
                let body = r
                    .json()
                    .unwrap_or_else(|e| panic!("{m} {url}: not JSON ({e}): {}", r.text()));
                assert!(body["error"].is_string(), "{m} {url}: {body}");
            }
        }
    }

    // An unknown path is a JSON 404, a bad path parameter a JSON 400 naming it.
    let r = d.client().get("/api/nothing-here").await.unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["error"].is_string()),
        (404, true)
    );
    let r = d.client().get("/api/orders/not-a-number").await.unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["field"].as_str()),
        (400, Some("id"))
    );
    let r = d
        .client()
        .get("/api/market-data/A%00B/trades")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["field"].as_str()),
        (400, Some("symbol"))
    );
    d.shutdown().await.unwrap();
}
