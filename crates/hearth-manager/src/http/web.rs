//! The web console: the single-page app built in `web/` and embedded in the binary at build
//! time (see `build.rs`), served at `/`. A file is served by its path; any other page path
//! gets `index.html`, so the app's own routes (`/vms/web1`) load on a refresh. API paths
//! never fall back to the page: an unknown one stays the API's JSON 404.

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use include_dir::{include_dir, Dir};

use crate::error::ApiError;

static WEB: Dir<'static> = include_dir!("$HEARTH_WEB_DIR");

/// What the page may load: only its own files and API, styles inline (the editor and the
/// terminal set them), nothing framed.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

/// The router's fallback: a console file, the console's page, or the API's 404 / 405.
pub async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let api = [
        "/v1/",
        "/docs",
        "/openapi.json",
        "/metrics",
        "/healthz",
        "/readyz",
        "/hearth.",
    ]
    .iter()
    .any(|p| path.starts_with(p));
    if api {
        return ApiError::NotFound(format!("no route for {method} {path}")).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return super::method_not_allowed(method, uri).await;
    }
    let rel = path.trim_start_matches('/');
    if let Some(file) = WEB.get_file(rel).filter(|_| !rel.is_empty()) {
        let mime = mime_guess::from_path(rel).first_or_octet_stream();
        // Vite names what it puts under assets/ by content hash: they never change.
        let cache = if rel.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return (
            [
                (header::CONTENT_TYPE, mime.as_ref()),
                (header::CACHE_CONTROL, cache),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            file.contents(),
        )
            .into_response();
    }
    // A missing file with an extension is a 404; anything else is one of the app's pages.
    if rel
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
    {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    index()
}

fn index() -> Response {
    let Some(page) = WEB.get_file("index.html") else {
        return ApiError::NotFound("the web console is not in this build".into()).into_response();
    };
    let mut resp = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        page.contents(),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}
