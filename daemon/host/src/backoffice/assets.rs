//! The back office's pages (`clients/web/host/`, with the site console's shared `lib/dom.js`,
//! `lib/money.js` and look), compiled into the binary: nothing is loaded from anywhere else.
//! Every `.js` file under `clients/web/host/` must be listed here, and every import of a
//! listed module must be listed too (a test checks both).

/// One file of the back office.
#[derive(Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

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
pub const ASSETS: &[Asset] = &[
    asset!("/", HTML, "host/index.html"),
    asset!("/web/host/backoffice.js", JS, "host/backoffice.js"),
    asset!("/web/host/rpc.js", JS, "host/rpc.js"),
    asset!("/web/host/ui.js", JS, "host/ui.js"),
    asset!("/web/host/pages/account.js", JS, "host/pages/account.js"),
    asset!("/web/host/pages/topups.js", JS, "host/pages/topups.js"),
    asset!("/web/host/pages/refunds.js", JS, "host/pages/refunds.js"),
    asset!("/web/host/pages/review.js", JS, "host/pages/review.js"),
    asset!("/web/host/pages/records.js", JS, "host/pages/records.js"),
    asset!(
        "/web/host/pages/operators.js",
        JS,
        "host/pages/operators.js"
    ),
    asset!("/web/host/pages/sites.js", JS, "host/pages/sites.js"),
    asset!("/web/host/pages/audit.js", JS, "host/pages/audit.js"),
    asset!("/web/lib/dom.js", JS, "lib/dom.js"),
    asset!("/web/lib/money.js", JS, "lib/money.js"),
    asset!("/web/console.css", CSS, "console.css"),
    asset!("/web/host/backoffice.css", CSS, "host/backoffice.css"),
    asset!("/web/icon.svg", SVG, "icon.svg"),
    asset!("/favicon.ico", SVG, "icon.svg"),
];

/// The file served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = match path {
        "/index.html" => "/",
        other => other,
    };
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scripts(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read clients/web/host") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                scripts(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "js") {
                let rel = path.strip_prefix(root).expect("under clients/web");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_host_module_is_served_and_every_import_resolves() {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/web");
        let mut files = Vec::new();
        scripts(&web, &web.join("host"), &mut files);
        assert!(files.len() > 3, "{files:?}");
        for file in &files {
            let served = find(&format!("/web/{file}"))
                .unwrap_or_else(|| panic!("clients/web/{file} is not in the back office's ASSETS"));
            assert_eq!(served.content_type, JS, "{file}");
        }
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let dir = a.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            for line in a.body.lines() {
                let t = line.trim_start();
                let Some(rest) = t.strip_prefix("} from '").or_else(|| {
                    t.strip_prefix("import ")
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
                    find(&target).is_some_and(|x| x.content_type == JS),
                    "{}: imports {spec} ({target}), which is not served",
                    a.path
                );
            }
        }
    }

    #[test]
    fn pages_have_no_inline_code_and_load_nothing_from_outside() {
        for a in ASSETS.iter() {
            assert!(
                !a.body.contains("http://") && !a.body.contains("https://")
                    || a.content_type == SVG,
                "{}: names an outside address",
                a.path
            );
        }
        for a in ASSETS.iter().filter(|a| a.content_type == HTML) {
            assert!(!a.body.contains("<script>"), "{}: inline script", a.path);
            assert!(!a.body.contains(" style="), "{}: inline style", a.path);
            assert!(!a.body.contains(" onclick="), "{}: inline handler", a.path);
            for line in a.body.lines().filter(|l| l.contains("<script")) {
                assert!(line.contains("type=\"module\""), "{}: {line}", a.path);
            }
        }
        assert!(find("/web/../Cargo.toml").is_none());
        assert!(find("/index.html").is_some());
    }
}
