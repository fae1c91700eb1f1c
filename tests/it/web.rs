//! The page at `/`: a built directory served with CDN-friendly headers (hashed assets
//! immutable, the HTML revalidated, ETags, precompressed copies), the asset base written
//! into the HTML, nginx caching `/assets/`, and a note when nothing is built.

use christmas_tests::HttpClient;

use crate::daemon::Daemon;

/// A fake build: index.html referencing a hashed script, and the script's gzip copy.
fn fake_dist() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(christmas_tests::unique_name("christmas-web"));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><script type=\"module\" crossorigin src=\"./assets/index-Ab12Cd34.js\"></script>",
    )
    .unwrap();
    let js = "console.log('christmas');\n".repeat(50);
    std::fs::write(dir.join("assets/index-Ab12Cd34.js"), &js).unwrap();
    let gz = std::process::Command::new("gzip")
        .args(["-k", "-9"])
        .arg(dir.join("assets/index-Ab12Cd34.js"))
        .status()
        .unwrap();
    assert!(gz.success());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_cache_headers_etags_and_compression() {
    let dist = fake_dist();
    let dir = dist.display().to_string();
    let d = Daemon::start(|c| c.web.dir = Some(dir)).await;
    let c = d.client();
    let index = c.get("/").await.unwrap();
    assert_eq!(index.status, 200);
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    assert!(index
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let etag = index.header("etag").unwrap().to_string();
    let again = c
        .request("GET", "/", &[("If-None-Match", etag.as_str())], Vec::new())
        .await
        .unwrap();
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    let asset = c
        .request(
            "GET",
            "/assets/index-Ab12Cd34.js",
            &[("Accept-Encoding", "gzip, deflate")],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(asset.status, 200);
    assert_eq!(
        asset.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(asset.header("content-encoding"), Some("gzip"));
    let on_disk = std::fs::read(dist.join("assets/index-Ab12Cd34.js.gz")).unwrap();
    assert_eq!(asset.body.to_vec(), on_disk);
    let plain = c.get("/assets/index-Ab12Cd34.js").await.unwrap();
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.text().starts_with("console.log"));
    assert_eq!(c.get("/assets/nothing.js").await.unwrap().status, 404);
    d.shutdown().await.unwrap();

    // From a CDN: the HTML names the other origin.
    let dir = dist.display().to_string();
    let d = Daemon::start(|c| {
        c.web.dir = Some(dir);
        c.web.asset_base = Some("https://cdn.example.com/".into());
    })
    .await;
    let html = d.client().get("/").await.unwrap().text();
    assert!(
        html.contains("src=\"https://cdn.example.com/assets/index-Ab12Cd34.js\""),
        "{html}"
    );
    d.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dist);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_build_the_root_says_how_to_make_one() {
    let d = Daemon::start(|c| c.web.dir = Some("/nonexistent/christmas-web".into())).await;
    let r = d.client().get("/").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("scripts/web.sh"), "{}", r.text());
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_caches_the_hashed_assets() {
    let dist = fake_dist();
    let dir = dist.display().to_string();
    let d = Daemon::start(|c| c.web.dir = Some(dir)).await;
    let conf = format!("{}/../deploy/nginx", env!("CARGO_MANIFEST_DIR"));
    let nginx = christmas_tests::Nginx::start(std::path::Path::new(&conf), &[d.addr().to_string()])
        .unwrap();
    let c = HttpClient::new(nginx.addr());
    let first = c.get("/assets/index-Ab12Cd34.js").await.unwrap();
    assert_eq!(first.status, 200, "{}", nginx.error_log());
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = c.get("/assets/index-Ab12Cd34.js").await.unwrap();
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    let page = c.get("/").await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    drop(nginx);
    d.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dist);
}
