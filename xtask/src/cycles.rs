//! Import cycles between the modules of a crate, for tidy.
//!
//! A module graph with a cycle has no order in which its parts can be read, tested or replaced
//! one at a time: the daemon's server once had eleven modules in one cycle because each method
//! set reached into the service locator that registered it. The rule is simple: within a crate,
//! the sibling modules of every directory (the crate root's `src/`, and each module directory)
//! form a graph with an edge A → B when A's non-test code or comments name B (`crate::B`,
//! `super::B`, or `use crate::{…, B, …}`), and that graph must have no cycle.
//!
//! The scan is textual (no macro expansion), which is what a reader sees too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

/// A directory's modules: name → the files that make up the module.
fn modules_of(dir: &Path) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut mods: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        if path.is_dir() {
            let mut files = Vec::new();
            collect_rs(&path, &mut files)?;
            mods.entry(name).or_default().extend(files);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if !matches!(stem, "lib" | "main" | "mod") {
                mods.entry(stem.to_owned()).or_default().push(path);
            }
        }
    }
    Ok(mods)
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The identifiers `text` names right after `prefix` (`crate::`, `super::`), including each
/// name of a `prefix{a, b::c, d}` group.
fn named_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let ident = |s: &'a str| {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    };
    let mut out = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        let rest = &text[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        start = true;
                        continue;
                    }
                    _ => {}
                }
                if start && !c.is_whitespace() {
                    start = false;
                    if depth == 0 {
                        out.push(ident(&group[j..]));
                    }
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out
}

/// Code outside `#[cfg(test)]` items (everything before the first one, as the crate's style
/// keeps tests at the end of a file). Comments count: an intra-doc link (`[`crate::x`]`) is a
/// reference a reader follows, and a plain comment naming a module says the two belong together.
fn non_test_code(text: &str) -> String {
    text.split("#[cfg(test)]").next().unwrap_or("").to_owned()
}

/// The edges between the modules of one directory. `root` is true for a crate's `src/`, where
/// siblings are named as `crate::x`; in a module directory they are `super::x` (from its
/// sub-module files) or `crate::<dir>::x`.
fn edges(
    mods: &BTreeMap<String, Vec<PathBuf>>,
    prefixes: &[String],
) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, files) in mods {
        let set = out.entry(name.clone()).or_default();
        for file in files {
            let code = non_test_code(&fs::read_to_string(file)?);
            for prefix in prefixes {
                for target in named_after(&code, prefix) {
                    if target != name && mods.contains_key(target) {
                        set.insert(target.to_owned());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Strongly connected components with more than one module (Tarjan).
pub fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Every module cycle in the crate whose sources are in `src`, one line each.
pub fn crate_cycles(src: &Path, label: &str) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut dirs = vec![(src.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, path)) = dirs.pop() {
        let mods = modules_of(&dir)?;
        let mut prefixes = vec![format!("crate::{}", join_path(&path))];
        if !path.is_empty() {
            prefixes.push("super::".to_owned());
        }
        let graph = edges(&mods, &prefixes)?;
        for cycle in cycles(&graph) {
            problems.push(format!(
                "{label}: modules {} import each other in a cycle{}; move what they share \
                 into a module below them",
                cycle.join(", "),
                if path.is_empty() {
                    String::new()
                } else {
                    format!(" (in `{}`)", path.join("::"))
                }
            ));
        }
        for name in mods.keys() {
            let sub = dir.join(name);
            if sub.is_dir() {
                let mut p = path.clone();
                p.push(name.clone());
                dirs.push((sub, p));
            }
        }
    }
    Ok(problems)
}

fn join_path(path: &[String]) -> String {
    path.iter().map(|p| format!("{p}::")).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    #[test]
    fn a_cycle_is_found_and_a_chain_is_not() {
        assert!(super::cycles(&graph(&[("a", "b"), ("b", "c")])).is_empty());
        assert_eq!(
            super::cycles(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
            vec![vec!["a".to_string(), "b".into(), "c".into()]]
        );
        assert_eq!(super::cycles(&graph(&[("x", "y"), ("y", "x")])).len(), 1);
    }

    #[test]
    fn names_are_read_from_paths_and_groups() {
        let text = "use crate::{a, b::{c, d}, e::f};\nlet x = crate::g::h();\nuse crate::i;";
        assert_eq!(
            super::named_after(text, "crate::"),
            ["a", "b", "e", "g", "i"]
        );
        assert_eq!(super::named_after("super::{x, y}", "super::"), ["x", "y"]);
    }

    #[test]
    fn test_code_is_not_an_edge_and_doc_links_are() {
        let code =
            super::non_test_code("use crate::a; //! [`crate::b`]\n#[cfg(test)]\nuse crate::c;");
        assert_eq!(super::named_after(&code, "crate::"), ["a", "b"]);
    }
}
