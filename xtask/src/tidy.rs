//! Tidy: the project's rules that a compiler does not check, run by `cargo xtask tidy` and as a
//! test in `cargo test`.
//!
//! * every workspace crate inherits the workspace lints;
//! * every Rust source file opens with a `//!` doc saying why it exists;
//! * no stubs (`todo!`, `unimplemented!`) and no `dbg!` outside tests;
//! * no ignored or should-panic tests: a test runs and asserts;
//! * `anyhow` only in binaries, xtask and test harnesses (libraries use `thiserror`);
//! * GBK only through `cardd_crypto::gbk`: no other crate depends on `encoding_rs`;
//! * production drivers carry the simulator only behind an optional feature;
//! * crate dependencies point down only ([`LAYERS`]); domain crates know no transport, Lua or
//!   storage engine ([`DOMAIN_FORBIDDEN`]); and no crate's modules import each other
//!   in a cycle ([`crate::cycles`]);
//! * ARCHITECTURE.md names every crate directory and every module of the daemon;
//! * no copies of the group recharge rule figures in flows (`scripts/*.lua`) or the web clients
//!   (`clients/web/**/*.js`): they read them from `group.rules` (see [`RULE_FIGURES`]);
//! * the web client (`clients/web`, not `node_modules`): every `.js` file starts with
//!   `// @ts-check` (tsc checks it), and no line of its sources is over [`WEB_COLUMNS`] columns.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Crates allowed to depend on `anyhow` (binaries and harnesses).
/// `cardd-fleet` and `cardd-host` are libraries too, but only their binaries (`src/main.rs`)
/// may use `anyhow`.
const ANYHOW_ALLOWED: &[&str] = &[
    "xtask",
    "cardd-tests",
    "cardd",
    "cardctl",
    "cardd-bench",
    "cardd-fleet",
    "cardd-host",
];

/// Drivers of real hardware: `cardd-sim` may be only an optional dependency of theirs.
const PRODUCTION_DRIVERS: &[&str] = &["cardd-pcsc", "cardd-serial", "cardd-plugin"];

/// Crates of the business domain (rules, state machines, services): they must not know the
/// transport, the scripting engine or the storage engine.
const DOMAIN_CRATES: &[&str] = &["cardd-etc", "cardd-group", "cardd-obu"];

/// What a domain crate may not depend on (normal dependencies): the JSON-RPC transport, the Lua
/// engine and its sandbox, the embedded storage engine, the async runtime.
const DOMAIN_FORBIDDEN: &[&str] = &[
    "jsonrpsee",
    "mlua",
    "cardd-script",
    "sled",
    "tokio",
    "hyper",
];

/// A domain crate's forbidden dependencies, one line each.
fn domain_problems(rel: &str, name: &str, manifest: &str) -> Vec<String> {
    if !DOMAIN_CRATES.contains(&name) {
        return Vec::new();
    }
    normal_dependencies(manifest)
        .filter_map(|dep| dep.split(['=', '.', ' ']).next())
        .filter(|dep| DOMAIN_FORBIDDEN.contains(dep))
        .map(|dep| {
            format!(
                "{rel}: the domain crate {name} depends on {dep}; keep transport, scripting and \
                 storage in the server and cardd-store"
            )
        })
        .collect()
}

/// Every workspace crate's layer: a crate's normal and build dependencies on workspace crates
/// point strictly down. The card half (reader and crypto, then the protocol, the simulator and
/// the driver kinds, then the registry), the wire contract, the journal and the Lua sandbox, the
/// domain crates (ETC, group, OBU: rules, state machines, services, storage traits), the
/// embedded storage that implements those traits on sled, the server (the composition root),
/// and on top the clients, benchmark, tests and xtask. A crate missing here is a problem: place it when it is added.
const LAYERS: &[(&str, u8)] = &[
    ("cardd-reader", 0),
    ("cardd-crypto", 0),
    ("cardd-api", 0),
    ("cardd-pg-throwaway", 0),
    ("cardd-purse", 1),
    ("cardd-sim", 1),
    ("cardd-plugin", 1),
    ("cardd-conformance", 1),
    ("cardd-replay", 1),
    ("cardd-pcsc", 2),
    ("cardd-serial", 2),
    ("cardd-drivers", 3),
    ("cardd-journal", 3),
    ("cardd-script", 3),
    ("cardd-fleet", 3),
    ("cardd-authority", 4),
    ("cardd-etc", 4),
    ("cardd-group", 4),
    ("cardd-obu", 4),
    ("cardd-store", 5),
    ("cardd-store-pg", 5),
    ("cardd-hostlink", 5),
    ("cardd", 6),
    ("cardd-host", 6),
    // Runs the layer-6 binaries as programs; depends on none of them (no libpcsclite).
    ("cardd-fleet-launch", 6),
    ("cardctl", 7),
    ("cardd-bench", 7),
    ("cardd-tests", 7),
    ("xtask", 7),
];

fn layer_of(name: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// The workspace crates `manifest` names in its `[dependencies]` and `[build-dependencies]`.
fn workspace_dependencies(manifest: &str) -> Vec<&str> {
    manifest
        .split("\n[")
        .filter(|t| t.starts_with("dependencies]") || t.starts_with("build-dependencies]"))
        .flat_map(|t| t.lines().skip(1))
        .filter_map(|l| l.split(['=', '.', ' ']).next())
        .filter(|n| layer_of(n).is_some())
        .collect()
}

/// The lines of a manifest's `[dependencies]` table.
fn normal_dependencies(manifest: &str) -> impl Iterator<Item = &str> {
    manifest
        .split("\n[")
        .filter(|table| table.starts_with("dependencies]"))
        .flat_map(|table| table.lines().skip(1))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "node_modules" | "fuzz") {
                rust_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn manifests(root: &Path) -> Result<Vec<PathBuf>> {
    let text = fs::read_to_string(root.join("Cargo.toml"))?;
    let mut out = Vec::new();
    let mut in_members = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("members") {
            in_members = true;
            continue;
        }
        if in_members {
            if line.starts_with(']') {
                break;
            }
            let member = line.trim_matches(|c| c == '"' || c == ',' || c == ' ');
            if !member.is_empty() {
                out.push(root.join(member).join("Cargo.toml"));
            }
        }
    }
    Ok(out)
}

/// Figures of the group recharge rules that flows and web clients must not copy: the card
/// balance ceiling in words and in fen. They read `group.rules()` / the `group.rules` method.
const RULE_FIGURES: &[&str] = &["1000元", "100000"];

/// The rule figures `text` copies, as whole numbers (`1000000` is not `100000`).
fn copied_rule_figures(text: &str) -> Vec<&'static str> {
    let digit_at = |i: Option<usize>| {
        i.and_then(|i| text.as_bytes().get(i))
            .is_some_and(u8::is_ascii_digit)
    };
    RULE_FIGURES
        .iter()
        .copied()
        .filter(|f| {
            text.match_indices(f)
                .any(|(i, _)| !digit_at(i.checked_sub(1)) && !digit_at(Some(i + f.len())))
        })
        .collect()
}

/// The files under `dir` with extension `ext`, in subdirectories too (not `node_modules`),
/// sorted.
fn files_with(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if !path.ends_with("node_modules") {
                files_with(&path, ext, out)?;
            }
        } else if path.extension().and_then(|e| e.to_str()) == Some(ext) {
            out.push(path);
        }
    }
    Ok(())
}

/// Flows and web clients that copy a rule figure.
fn rule_copies(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (dir, ext) in [("scripts", "lua"), ("clients/web", "js")] {
        let mut files = Vec::new();
        files_with(&root.join(dir), ext, &mut files)?;
        for file in files {
            let text = fs::read_to_string(&file)?;
            for figure in copied_rule_figures(&text) {
                problems.push(format!(
                    "{}: copies the rule figure `{figure}`; read it from group.rules instead",
                    file.strip_prefix(root).unwrap_or(&file).display()
                ));
            }
        }
    }
    Ok(problems)
}

/// Widest line of the web client's sources, in characters.
const WEB_COLUMNS: usize = 100;

/// The web client's own rules: `// @ts-check` first in every script, lines that fit.
fn web_problems(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let web = root.join("clients/web");
    for ext in ["js", "ts", "html", "css", "json"] {
        let mut files = Vec::new();
        files_with(&web, ext, &mut files)?;
        for file in files {
            let rel = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            if rel.ends_with("package-lock.json") {
                continue;
            }
            let text = fs::read_to_string(&file)?;
            if ext == "js" && !text.starts_with("// @ts-check\n") {
                problems.push(format!(
                    "{rel}: start the file with `// @ts-check` (tsc checks it)"
                ));
            }
            for (i, line) in text.lines().enumerate() {
                if line.chars().count() > WEB_COLUMNS {
                    problems.push(format!(
                        "{rel}:{}: line over {WEB_COLUMNS} columns; wrap it",
                        i + 1
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// What ARCHITECTURE.md must name to match the tree: every workspace crate's directory, and
/// every module of the daemon (the crate whose map changes most), as `` `dir` `` and
/// `` `name.rs` `` or `` `name/` ``.
fn architecture_problems(root: &Path) -> Result<Vec<String>> {
    let map =
        fs::read_to_string(root.join("ARCHITECTURE.md")).context("reading ARCHITECTURE.md")?;
    let mut problems = Vec::new();
    for manifest in manifests(root)? {
        let dir = manifest
            .parent()
            .and_then(|d| d.strip_prefix(root).ok())
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        if !map.contains(&format!("`{dir}`")) {
            problems.push(format!(
                "ARCHITECTURE.md does not name the crate directory `{dir}`; add it to the code map"
            ));
        }
    }
    let server = root.join("daemon/server/src");
    if server.is_dir() {
        let mut names: Vec<String> = fs::read_dir(&server)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() {
                    Some(format!("{name}/"))
                } else {
                    name.ends_with(".rs").then_some(name)
                }
            })
            .filter(|n| n != "lib.rs" && n != "main.rs")
            .collect();
        names.sort();
        for name in names {
            if !map.contains(&format!("`{name}`")) {
                problems.push(format!(
                    "ARCHITECTURE.md does not name daemon/server/src/{name}; add it to the \
                     daemon's code map"
                ));
            }
        }
    }
    Ok(problems)
}

fn is_test_path(path: &Path) -> bool {
    path.components()
        .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "benches")
}

/// Returns one line per problem found.
pub fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for manifest in manifests(root)? {
        let text = fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let rel = manifest
            .strip_prefix(root)
            .unwrap_or(&manifest)
            .display()
            .to_string();
        if !text.contains("[lints]\nworkspace = true") {
            problems.push(format!(
                "{rel}: add `[lints]\\nworkspace = true` so the crate keeps the workspace lints"
            ));
        }
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .map(|n| n.trim_end_matches('"').to_owned())
            .unwrap_or_default();
        if text.contains("\nanyhow") && !ANYHOW_ALLOWED.contains(&name.as_str()) {
            problems.push(format!(
                "{rel}: library crate {name} depends on anyhow; use thiserror in libraries"
            ));
        }
        match layer_of(&name) {
            None => problems.push(format!(
                "{rel}: the crate {name} has no layer in xtask's LAYERS; place it so its \
                 dependencies point down"
            )),
            Some(own) => {
                for dep in workspace_dependencies(&text) {
                    if layer_of(dep).is_some_and(|l| l >= own) && dep != name {
                        problems.push(format!(
                            "{rel}: {name} (layer {own}) depends on {dep} (layer {}); \
                             dependencies point down only",
                            layer_of(dep).unwrap_or_default()
                        ));
                    }
                }
            }
        }
        let src = manifest.with_file_name("src");
        if src.is_dir() {
            problems.extend(crate::cycles::crate_cycles(&src, &rel)?);
        }
        problems.extend(domain_problems(&rel, &name, &text));
        if text.contains("\nencoding_rs") && name != "cardd-crypto" {
            problems.push(format!(
                "{rel}: {name} depends on encoding_rs; encode card text with cardd_crypto::gbk"
            ));
        }
        if PRODUCTION_DRIVERS.contains(&name.as_str())
            && normal_dependencies(&text)
                .any(|l| l.starts_with("cardd-sim") && !l.contains("optional = true"))
        {
            problems.push(format!(
                "{rel}: the production driver {name} depends on cardd-sim; make it a \
                 dev-dependency or optional behind an off-by-default feature"
            ));
        }
    }
    let mut files = Vec::new();
    for dir in ["daemon", "drivers", "clients", "tests", "bench", "xtask"] {
        let d = root.join(dir);
        if d.is_dir() {
            rust_files(&d, &mut files)?;
        }
    }
    let stub_todo = concat!("todo", "!(");
    let stub_unimpl = concat!("unimplemented", "!(");
    let dbg = concat!("dbg", "!(");
    let ignore = concat!("#[", "ignore");
    let should_panic = concat!("#[", "should_panic");
    for file in files {
        let text = fs::read_to_string(&file)?;
        let rel = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!(
                "{rel}: start the file with a `//!` doc saying why it exists"
            ));
        }
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        if !is_test_path(&file) {
            for needle in [stub_todo, stub_unimpl, dbg] {
                if code.contains(needle) {
                    problems.push(format!("{rel}: `{needle}` left in non-test code"));
                }
            }
        }
        for needle in [ignore, should_panic] {
            if text.contains(needle) {
                problems.push(format!(
                    "{rel}: `{needle}]` test; tests run and assert instead"
                ));
            }
        }
    }
    problems.extend(rule_copies(root)?);
    problems.extend(architecture_problems(root)?);
    problems.extend(web_problems(root)?);
    Ok(problems)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tree_is_tidy() {
        let problems = super::check(&crate::project_root()).unwrap();
        assert!(
            problems.is_empty(),
            "tidy problems:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn a_copied_rule_figure_is_found() {
        assert_eq!(
            super::copied_rule_figures("error('充值后卡内金额不能超过1000元')"),
            ["1000元"]
        );
        assert_eq!(
            super::copied_rule_figures("const MAX = 100000;"),
            ["100000"]
        );
        assert!(super::copied_rule_figures("rules.card_balance_max_yuan + '元'").is_empty());
        assert!(super::copied_rule_figures("n % 1000000; 11000元").is_empty());
    }

    #[test]
    fn a_domain_crate_may_not_know_transport_lua_or_storage() {
        let manifest = "[package]\nname = \"cardd-etc\"\n\n[dependencies]\ncardd-journal.workspace = true\n\
                        jsonrpsee.workspace = true\nsled = \"0.34\"\n\n[dev-dependencies]\nmlua = \"1\"\n";
        let problems =
            super::domain_problems("daemon/domain/etc/Cargo.toml", "cardd-etc", manifest);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("jsonrpsee") && problems[1].contains("sled"));
        assert!(super::domain_problems("x", "cardd", manifest).is_empty());
    }

    #[test]
    fn web_scripts_are_checked_in_subdirectories_too() {
        let root = std::env::temp_dir().join(format!("xtask-tidy-web-{}", std::process::id()));
        let dir = root.join("clients/web/console");
        std::fs::create_dir_all(root.join("clients/web/node_modules/x")).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.js"),
            format!("const MAX = 100000;\n{}\n", "x".repeat(101)),
        )
        .unwrap();
        std::fs::write(dir.join("b.js"), "// @ts-check\nexport const ok = 1;\n").unwrap();
        std::fs::write(root.join("clients/web/node_modules/x/c.js"), "100000").unwrap();
        let mut problems = super::rule_copies(&root).unwrap();
        problems.extend(super::web_problems(&root).unwrap());
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("clients/web/console/a.js: copies"),
            "{problems:?}"
        );
        assert!(problems[1].contains("`// @ts-check`"), "{problems:?}");
        assert!(
            problems[2].starts_with("clients/web/console/a.js:2: line over"),
            "{problems:?}"
        );
    }

    #[test]
    fn workspace_dependencies_are_read_with_their_layers() {
        let manifest =
            "[package]\nname = \"cardd-purse\"\n\n[dependencies]\ncardd.workspace = true\n\
                        cardd-reader = { workspace = true }\nserde = \"1\"\n\n[dev-dependencies]\n\
                        cardd-tests.workspace = true\n";
        assert_eq!(
            super::workspace_dependencies(manifest),
            ["cardd", "cardd-reader"]
        );
        // The server is above the purse: that dependency would point up.
        assert!(super::layer_of("cardd") > super::layer_of("cardd-purse"));
        assert!(super::layer_of("cardd-reader") < super::layer_of("cardd-purse"));
    }
}
