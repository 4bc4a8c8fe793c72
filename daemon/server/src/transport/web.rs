//! The web teller console, the kiosk screen and the sandbox bank's payment pages (`/bank`: the
//! online-banking steps of 额度充值 in front of the embedded sandbox gateway), compiled into the
//! binary and served by the guard on `GET` (after its Host and Origin checks): nothing is loaded
//! from anywhere else, so they work on a kiosk network with no internet.
//!
//! The scripts are ES modules (`<script type="module">`): one entry module per page importing
//! the shared ones by relative path, each served as `text/javascript`.
//!
//! Every page and asset carries a strict Content-Security-Policy (scripts and styles from cardd
//! only, no inline code, connections only back to cardd), `X-Frame-Options: DENY` and
//! `frame-ancestors 'none'` (no framing, so no click-jacking), `nosniff` and no referrer.

use http::header::{self, HeaderValue};
use http::StatusCode;
use jsonrpsee::server::{HttpBody, HttpResponse};

/// One file of the web UI.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// An [`Asset`] served at `path` from `clients/web/<file>`, compiled in.
macro_rules! asset {
    ($path:literal, $content_type:expr, $file:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("../../../../clients/web/", $file)),
        }
    };
}

/// The files, by the path they are served at.
const ASSETS: &[Asset] = &[
    asset!("/", HTML, "index.html"),
    asset!("/kiosk", HTML, "kiosk.html"),
    asset!("/bank", HTML, "bank.html"),
    // The entry module of each page and the modules they import (see clients/README.md);
    // every `.js` file under clients/web must be listed here (a test checks).
    asset!("/web/console.js", JS, "console.js"),
    asset!("/web/kiosk.js", JS, "kiosk.js"),
    asset!("/web/bank.js", JS, "bank.js"),
    asset!("/web/lib/rpc.js", JS, "lib/rpc.js"),
    asset!("/web/lib/dom.js", JS, "lib/dom.js"),
    asset!("/web/lib/money.js", JS, "lib/money.js"),
    asset!("/web/lib/vocab.js", JS, "lib/vocab.js"),
    asset!("/web/lib/sim.js", JS, "lib/sim.js"),
    asset!("/web/console/ui.js", JS, "console/ui.js"),
    asset!("/web/console/readers.js", JS, "console/readers.js"),
    asset!("/web/console/etc.js", JS, "console/etc.js"),
    asset!("/web/console/group.js", JS, "console/group.js"),
    asset!("/web/console/audit.js", JS, "console/audit.js"),
    asset!("/web/console/admin.js", JS, "console/admin.js"),
    asset!("/web/sim.css", CSS, "sim.css"),
    asset!("/web/console.css", CSS, "console.css"),
    asset!("/web/kiosk.css", CSS, "kiosk.css"),
    asset!("/web/bank.css", CSS, "bank.css"),
    asset!("/web/icon.svg", SVG, "icon.svg"),
    asset!("/favicon.ico", SVG, "icon.svg"),
];

/// Longest `Host` value copied into the policy's `connect-src`.
const HOST_CHARS_MAX: usize = 64;

/// The answer to `GET path` when `path` is a file of the web UI, `None` otherwise. `host` is the
/// request's `Host`, already checked against the allow-list by the guard: the page may open a
/// WebSocket back to it (and nowhere else).
pub fn asset(path: &str, host: Option<&str>) -> Option<HttpResponse> {
    let path = match path {
        "/index.html" => "/",
        // `/kiosk/demo`: the same page with the 模拟读卡器 drawer of the embedded default.
        "/kiosk/" | "/kiosk.html" | "/kiosk/demo" => "/kiosk",
        "/bank/" | "/bank.html" => "/bank",
        other => other,
    };
    let asset = ASSETS.iter().find(|a| a.path == path)?;
    let mut response = HttpResponse::new(HttpBody::from(asset.body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(host)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    let fixed = [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(response)
}

/// Scripts, styles and connections from cardd only; no inline code, no plugins, no framing, no
/// form posts elsewhere. `'self'` covers `ws:` to the same host in current browsers; the host is
/// named as well for older ones.
pub fn content_security_policy(host: Option<&str>) -> String {
    let websocket = host
        .filter(|h| h.len() <= HOST_CHARS_MAX && h.bytes().all(is_host_byte))
        .map(|h| format!(" ws://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{websocket}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'[' | b']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_are_served_with_the_policy() {
        for path in [
            "/",
            "/index.html",
            "/kiosk",
            "/bank",
            "/web/bank.js",
            "/kiosk/demo",
            "/web/lib/rpc.js",
            "/web/lib/sim.js",
            "/web/console/group.js",
            "/web/sim.css",
            "/web/console.css",
        ] {
            let response = asset(path, Some("127.0.0.1:7420")).expect(path);
            let headers = response.headers();
            let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(policy.contains("script-src 'self'"), "{policy}");
            assert!(!policy.contains("unsafe-inline"), "{policy}");
            assert!(policy.contains("ws://127.0.0.1:7420"), "{policy}");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        }
        assert!(asset("/web/../Cargo.toml", None).is_none());
        assert!(asset("/nothing", None).is_none());
    }

    #[test]
    fn every_error_code_tells_the_teller_what_to_do_in_chinese() {
        let api = ASSETS
            .iter()
            .find(|a| a.path == "/web/lib/rpc.js")
            .expect("lib/rpc.js")
            .body;
        let missing: Vec<&str> = cardd_api::ErrorCode::ALL
            .iter()
            .map(|c| c.name())
            .filter(|name| !api.contains(&format!("{name}:")))
            .collect();
        assert!(
            missing.is_empty(),
            "clients/web/lib/rpc.js has no zh-CN advice for {missing:?}"
        );
    }

    /// Every `.js` file under `dir` (not `node_modules`, not `host/`: the issuer host's back
    /// office, which `cardd-host` serves and checks), relative to `root`.
    fn scripts(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read clients/web") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if !path.ends_with("node_modules") && path != root.join("host") {
                    scripts(root, &path, out);
                }
            } else if path.extension().is_some_and(|e| e == "js") {
                let rel = path.strip_prefix(root).expect("under clients/web");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_module_is_served_as_javascript_and_every_import_resolves() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/web");
        let mut files = Vec::new();
        scripts(&root, &root, &mut files);
        assert!(files.len() > 3, "{files:?}");
        for file in &files {
            let served = ASSETS.iter().find(|a| a.path == format!("/web/{file}"));
            let served = served.unwrap_or_else(|| panic!("clients/web/{file} is not in ASSETS"));
            assert_eq!(served.content_type, JS, "{file}");
        }
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let dir = a.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            for line in a.body.lines() {
                let Some(rest) = line.trim_start().strip_prefix("} from '").or_else(|| {
                    line.trim_start()
                        .strip_prefix("import ")
                        .and_then(|l| l.split_once(" from '").map(|(_, r)| r))
                }) else {
                    continue;
                };
                let spec = rest.split('\'').next().unwrap_or(rest);
                let mut parts: Vec<&str> = dir.split('/').collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(
                    ASSETS
                        .iter()
                        .any(|x| x.path == target && x.content_type == JS),
                    "{}: imports {spec} ({target}), which is not served",
                    a.path
                );
            }
        }
        for page in ASSETS.iter().filter(|a| a.content_type == HTML) {
            for line in page.body.lines().filter(|l| l.contains("<script")) {
                assert!(line.contains("type=\"module\""), "{}: {line}", page.path);
            }
        }
    }

    #[test]
    fn a_strange_host_is_left_out_of_the_policy() {
        let policy = content_security_policy(Some("evil.example; script-src *"));
        assert!(!policy.contains("evil"), "{policy}");
    }

    #[test]
    fn pages_have_no_inline_scripts_or_styles() {
        for a in ASSETS
            .iter()
            .filter(|a| a.content_type.starts_with("text/html"))
        {
            assert!(!a.body.contains("<script>"), "{}: inline script", a.path);
            assert!(!a.body.contains(" style="), "{}: inline style", a.path);
            assert!(!a.body.contains(" onclick="), "{}: inline handler", a.path);
            assert!(
                !a.body.contains("http://") && !a.body.contains("https://"),
                "{}",
                a.path
            );
        }
    }
}
