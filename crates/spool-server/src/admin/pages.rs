//! The dashboard's pages: one HTML document for every page path, a script
//! that draws each page from the JSON API, and a style sheet, all built
//! into the binary (no Node, no build step, no network). The script polls
//! the API about once a second while its tab is visible; charts read the
//! metrics history, which is sampled every 5 s, and refresh at that pace.

use http::{HeaderValue, StatusCode, header};
use spool_metrics::http::{Response, plain, response};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The document for a page path; the script reads the path and draws it.
pub(super) fn page(_path: &str) -> Response {
    let mut answer = response(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML);
    answer
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer
}

/// `/assets/app.js` and `/assets/app.css`.
pub(super) fn asset(path: &str) -> Response {
    let (content_type, body) = match path {
        "/assets/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/assets/app.css" => ("text/css; charset=utf-8", APP_CSS),
        other => return plain(StatusCode::NOT_FOUND, &format!("no asset {other}")),
    };
    let mut answer = response(StatusCode::OK, content_type, body);
    answer
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer
}
