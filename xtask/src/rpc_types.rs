//! TypeScript declarations for the web client, generated from the OpenRPC document.
//!
//! `docs/openrpc.json` (written by the daemon, checked by `cardd-tests`) is the wire contract;
//! `clients/web/types/rpc.d.ts` is that contract as TypeScript: one type per named schema
//! (each method's `$defs`, `x-param-definitions` and titled results) and a `Methods` map from
//! method name to `{ params, result }`, so the web client's `call(method, params)` is checked
//! by `tsc`. The generator knows JSON Schema, not today's document: `$ref`, `oneOf`/`anyOf`/
//! `allOf`, `const`/`enum`, type lists with `null` (and `nullable`), arrays and tuples,
//! `additionalProperties`, and integer/string formats (kept as comments).
//!
//! The `rpc_types_are_fresh` test fails when the committed file is stale;
//! `UPDATE_DOCS=1 cargo test -p xtask` rewrites it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Where the declarations are written, from the project root.
pub const OUTPUT: &str = "clients/web/types/rpc.d.ts";
/// The OpenRPC document they are generated from, from the project root.
pub const INPUT: &str = "docs/openrpc.json";

/// Longest line written (the web client's own limit).
const WIDTH: usize = 100;

/// The named schemas a `$ref` of one part of one method resolves against.
type Defs<'a> = &'a Map<String, Value>;

#[derive(Default)]
struct Generator {
    /// Named types in the order first seen: (name, description, body).
    named: Vec<(String, Option<String>, String)>,
    /// Type names by base name: every distinct body gets its own name.
    by_base: BTreeMap<String, Vec<usize>>,
    /// Names being generated (a recursive reference uses the base name).
    in_progress: Vec<String>,
    /// The document's `components.schemas`, where a `$ref` not found locally is looked up.
    components: Map<String, Value>,
}

/// The declarations for the OpenRPC document `doc`.
pub fn generate(doc: &Value) -> String {
    let mut g = Generator {
        components: doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..Generator::default()
    };
    let empty = Map::new();
    let mut methods = String::new();
    for method in doc["methods"].as_array().into_iter().flatten() {
        let name = method["name"].as_str().unwrap_or_default();
        let param_defs = method["x-param-definitions"].as_object().unwrap_or(&empty);
        let mut params = Vec::new();
        for p in method["params"].as_array().into_iter().flatten() {
            let field = p["name"].as_str().unwrap_or_default();
            let required = p["required"].as_bool().unwrap_or(false);
            let schema = &p["schema"];
            let ty = g.schema(schema, param_defs, 6);
            params.push((field.to_owned(), required, description(schema, p), ty));
        }
        let params = if params.is_empty() {
            "Record<string, never>".to_owned()
        } else {
            object(&params, 4)
        };
        let result = &method["result"]["schema"];
        let result_defs = result["$defs"].as_object().unwrap_or(&empty);
        let result = g.top(result, result_defs, 4);
        let summary = method["summary"].as_str().map(str::to_owned);
        methods.push_str(&doc_comment(summary.as_deref(), 2));
        let key = format!("  {}: {{\n", quote(name));
        methods.push_str(&key);
        methods.push_str(&member("params", true, &params, 4));
        methods.push_str(&member("result", true, &result, 4));
        methods.push_str("  };\n");
    }
    let mut out = String::new();
    out.push_str(
        "// Generated from docs/openrpc.json by xtask (xtask/src/rpc_types.rs): do not edit.\n\
         // `UPDATE_DOCS=1 cargo test -p xtask` rewrites it after the API changes.\n\n",
    );
    for (name, desc, body) in &g.named {
        out.push_str(&doc_comment(desc.as_deref(), 0));
        let decl = format!("export type {name} =");
        out.push_str(&decl);
        if !body.starts_with('\n') {
            out.push(' ');
        }
        out.push_str(body);
        out.push_str(";\n\n");
    }
    out.push_str("/** Every method of the API: its named params and its result. */\n");
    out.push_str("export interface Methods {\n");
    out.push_str(&methods);
    out.push_str("}\n\n");
    out.push_str(
        "/** A method's name. */\n\
         export type Method = keyof Methods;\n\
         /** The named params of method `M`. */\n\
         export type Params<M extends Method> = Methods[M]['params'];\n\
         /** What method `M` returns. */\n\
         export type Result<M extends Method> = Methods[M]['result'];\n",
    );
    out
}

impl Generator {
    /// A method's result: a titled schema becomes a named type.
    fn top(&mut self, schema: &Value, defs: Defs, indent: usize) -> String {
        match schema["title"].as_str() {
            // An array is named by its items (schemars titles it `Array_of_…`).
            Some(title) if schema.get("$ref").is_none() && schema["type"] != "array" => {
                self.named(title, schema, defs)
            }
            _ => self.schema(schema, defs, indent),
        }
    }

    /// The type name for the schema `schema` named `base` (a `$defs` entry or a title).
    fn named(&mut self, base: &str, schema: &Value, defs: Defs) -> String {
        let base = identifier(base);
        if self.in_progress.contains(&base) {
            return base;
        }
        self.in_progress.push(base.clone());
        let body = self.schema(schema, defs, 0);
        self.in_progress.pop();
        let desc = schema["description"].as_str().map(str::to_owned);
        let variants = self.by_base.entry(base.clone()).or_default();
        if let Some(&i) = variants.iter().find(|&&i| self.named[i].2 == body) {
            return self.named[i].0.clone();
        }
        let name = match variants.len() {
            0 => base,
            n => format!("{base}{}", n + 1),
        };
        variants.push(self.named.len());
        self.named.push((name.clone(), desc, body));
        name
    }

    /// The type of `schema` at `indent` columns (objects span lines).
    fn schema(&mut self, schema: &Value, defs: Defs, indent: usize) -> String {
        let s = match schema {
            Value::Bool(true) => return "unknown".to_owned(),
            Value::Bool(false) => return "never".to_owned(),
            Value::Object(s) => s,
            _ => return "unknown".to_owned(),
        };
        // A schema with its own `$defs` (or draft-07 `definitions`: a nested document) resolves
        // its refs against them.
        let merged;
        let own = s.get("$defs").or_else(|| s.get("definitions"));
        let defs = match own.and_then(Value::as_object) {
            Some(own) if !std::ptr::eq(own, defs) => {
                let mut all = defs.clone();
                all.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
                merged = all;
                &merged
            }
            _ => defs,
        };
        let mut ty = self.bare(s, defs, indent);
        if s.get("nullable").and_then(Value::as_bool) == Some(true) && ty != "unknown" {
            ty = union(vec![ty, "null".to_owned()], indent);
        }
        ty
    }

    fn bare(&mut self, s: &Map<String, Value>, defs: Defs, indent: usize) -> String {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            let target = defs
                .get(name)
                .or_else(|| self.components.get(name))
                .cloned();
            return match target {
                Some(target) => self.named(name, &target, defs),
                None => "unknown".to_owned(),
            };
        }
        if let Some(c) = s.get("const") {
            return literal(c);
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            return union(values.iter().map(literal).collect(), indent);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(variants) = s.get(key).and_then(Value::as_array) {
                let parts = variants
                    .iter()
                    .map(|v| self.schema(v, defs, indent + 2))
                    .collect();
                let choice = union(parts, indent);
                return match self.own_shape(s, defs, indent) {
                    Some(base) => format!("{} & ({choice})", parenthesized(&base)),
                    None => choice,
                };
            }
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            let mut parts: Vec<String> = all
                .iter()
                .map(|v| parenthesized(&self.schema(v, defs, indent)))
                .collect();
            parts.extend(self.own_shape(s, defs, indent));
            return parts.join(" & ");
        }
        self.own_shape(s, defs, indent)
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// The type `s` states by `type` (and its object/array keywords), if any.
    fn own_shape(&mut self, s: &Map<String, Value>, defs: Defs, indent: usize) -> Option<String> {
        let types: Vec<&str> = match s.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ if s.contains_key("properties") => vec!["object"],
            _ if s.contains_key("items") => vec!["array"],
            _ => return None,
        };
        let parts = types
            .iter()
            .map(|t| match *t {
                "string" => "string".to_owned(),
                "integer" | "number" => "number".to_owned(),
                "boolean" => "boolean".to_owned(),
                "null" => "null".to_owned(),
                "array" => self.array(s, defs, indent),
                "object" => self.object(s, defs, indent),
                _ => "unknown".to_owned(),
            })
            .collect();
        Some(union(parts, indent))
    }

    fn array(&mut self, s: &Map<String, Value>, defs: Defs, indent: usize) -> String {
        if let Some(prefix) = s.get("prefixItems").and_then(Value::as_array) {
            let parts: Vec<String> = prefix
                .iter()
                .map(|v| self.schema(v, defs, indent))
                .collect();
            return format!("[{}]", parts.join(", "));
        }
        let item = match s.get("items") {
            Some(Value::Array(tuple)) => {
                let parts: Vec<String> =
                    tuple.iter().map(|v| self.schema(v, defs, indent)).collect();
                return format!("[{}]", parts.join(", "));
            }
            Some(items) => self.schema(items, defs, indent),
            None => "unknown".to_owned(),
        };
        if item.contains([' ', '\n', '&', '|']) {
            format!("Array<{item}>")
        } else {
            format!("{item}[]")
        }
    }

    fn object(&mut self, s: &Map<String, Value>, defs: Defs, indent: usize) -> String {
        let required: Vec<&str> = s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut fields = Vec::new();
        for (name, prop) in s
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let ty = self.schema(prop, defs, indent + 2);
            let desc = description(prop, &Value::Null);
            fields.push((name.clone(), required.contains(&name.as_str()), desc, ty));
        }
        let extra = match s.get("additionalProperties") {
            None | Some(Value::Bool(true)) if fields.is_empty() => Some("unknown".to_owned()),
            Some(Value::Bool(false)) | None | Some(Value::Bool(true)) => None,
            Some(schema) => Some(self.schema(schema, defs, indent)),
        };
        match (fields.is_empty(), extra) {
            (true, Some(value)) => format!("Record<string, {value}>"),
            (true, None) => "Record<string, never>".to_owned(),
            (false, None) => object(&fields, indent),
            (false, Some(value)) => {
                format!("{} & Record<string, {value}>", object(&fields, indent))
            }
        }
    }
}

/// A property's description: its own, else its content descriptor's, with its format.
fn description(schema: &Value, descriptor: &Value) -> Option<String> {
    let text = schema["description"]
        .as_str()
        .or(descriptor["description"].as_str());
    let format = schema["format"].as_str().map(|f| format!("Format: `{f}`."));
    match (text, format) {
        (Some(t), Some(f)) => Some(format!("{t}\n{f}")),
        (Some(t), None) => Some(t.to_owned()),
        (None, f) => f,
    }
}

/// `{ name: type; … }` over lines, members at `indent + 2` and the brace at `indent`.
fn object(fields: &[(String, bool, Option<String>, String)], indent: usize) -> String {
    let mut out = String::from("{\n");
    for (name, required, desc, ty) in fields {
        out.push_str(&doc_comment(desc.as_deref(), indent + 2));
        out.push_str(&member(name, *required, ty, indent + 2));
    }
    out.push_str(&" ".repeat(indent));
    out.push('}');
    out
}

/// One `name: type;` line at `indent`.
fn member(name: &str, required: bool, ty: &str, indent: usize) -> String {
    let optional = if required { "" } else { "?" };
    let space = if ty.starts_with('\n') { "" } else { " " };
    format!(
        "{}{}{optional}:{space}{ty};\n",
        " ".repeat(indent),
        quote(name)
    )
}

/// `a | b | c` on one line when it fits, else one `| part` per line at `indent + 2`.
fn union(mut parts: Vec<String>, indent: usize) -> String {
    let mut seen = Vec::new();
    parts.retain(|p| {
        let new = !seen.contains(p);
        seen.push(p.clone());
        new
    });
    if parts.len() == 1 {
        return parts.remove(0);
    }
    let line = parts.join(" | ");
    if !line.contains('\n') && indent + line.len() + 30 <= WIDTH {
        return line;
    }
    let pad = " ".repeat(indent + 2);
    parts
        .iter()
        .map(|p| format!("\n{pad}| {}", p.trim_start_matches('\n')))
        .collect()
}

fn parenthesized(ty: &str) -> String {
    if ty.contains(" | ") || (ty.contains('\n') && ty.trim_start().starts_with('|')) {
        format!("({ty})")
    } else {
        ty.to_owned()
    }
}

/// A JSON value as a TypeScript literal type.
fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => quote_string(s),
        Value::Null => "null".to_owned(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        _ => "unknown".to_owned(),
    }
}

fn quote_string(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A property or method name: bare when it is an identifier, quoted otherwise.
fn quote(name: &str) -> String {
    let ident = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ident {
        name.to_owned()
    } else {
        quote_string(name)
    }
}

/// A schema name as a TypeScript identifier.
fn identifier(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `/** … */` at `indent`, wrapped to the width; empty without text.
fn doc_comment(text: Option<&str>, indent: usize) -> String {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return String::new();
    };
    let text = text.replace("*/", "*\\/");
    let pad = " ".repeat(indent);
    let room = WIDTH.saturating_sub(indent + 3).max(40);
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > room {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    if lines.len() == 1 && indent + lines[0].chars().count() + 7 <= WIDTH {
        return format!("{pad}/** {} */\n", lines[0]);
    }
    let mut out = format!("{pad}/**\n");
    for l in lines {
        if l.is_empty() {
            let _ = writeln!(out, "{pad} *");
        } else {
            let _ = writeln!(out, "{pad} * {l}");
        }
    }
    let _ = writeln!(out, "{pad} */");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rpc_types_are_fresh() {
        let root = crate::project_root();
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join(INPUT)).expect("read docs/openrpc.json"),
        )
        .expect("docs/openrpc.json is JSON");
        let fresh = generate(&doc);
        let path = root.join(OUTPUT);
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::create_dir_all(path.parent().expect("types dir")).expect("mkdir");
            std::fs::write(&path, &fresh).expect("write rpc.d.ts");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "{OUTPUT} is stale: run UPDATE_DOCS=1 cargo test -p xtask"
        );
        let long: Vec<&str> = fresh
            .lines()
            .filter(|l| l.chars().count() > WIDTH)
            .collect();
        assert!(long.is_empty(), "lines over {WIDTH} columns: {long:?}");
    }

    fn one_method(params: Value, result: Value, param_defs: Value) -> String {
        generate(&json!({"methods": [{
            "name": "x.y", "params": params, "result": {"name": "result", "schema": result},
            "x-param-definitions": param_defs,
        }]}))
    }

    #[test]
    fn schemas_become_types() {
        let out = one_method(
            json!([
                {"name": "id", "required": true, "schema": {"type": "string"}},
                {"name": "v", "schema": {"$ref": "#/$defs/V"}},
            ]),
            json!({
                "title": "Out", "type": "object", "required": ["a"],
                "properties": {
                    "a": {"type": ["integer", "null"], "format": "uint64"},
                    "b": {"oneOf": [{"const": "x"}, {"type": "array", "items": {"$ref": "#/$defs/K"}}]},
                    "c": {"type": "object", "additionalProperties": {"type": "boolean"}},
                    "d": {"anyOf": [{"$ref": "#/$defs/K"}, {"type": "null"}]},
                    "e": true,
                },
                "$defs": {"K": {"enum": ["p", "q"], "type": "string"}},
            }),
            json!({"V": {"type": "string", "nullable": true, "description": "A v."}}),
        );
        for want in [
            "export type V = string | null;",
            "/** A v. */",
            "export type K = 'p' | 'q';",
            "export type Out = {",
            "  a: number | null;",
            "Format: `uint64`.",
            "  b?: 'x' | K[];",
            "  c?: Record<string, boolean>;",
            "  d?: K | null;",
            "  e?: unknown;",
            "  'x.y': {",
            "      id: string;",
            "      v?: V;",
            "    result: Out;",
        ] {
            assert!(out.contains(want), "{want} missing from:\n{out}");
        }
    }

    #[test]
    fn refs_to_components_and_definitions_resolve() {
        let doc = json!({
            "components": {"schemas": {"C": {"type": "boolean"}}},
            "methods": [{"name": "a", "params": [
                {"name": "p", "required": true, "schema": {"$ref": "#/components/schemas/C"}},
            ], "result": {"name": "result", "schema": {
                "type": "array", "items": {"$ref": "#/definitions/D"},
                "definitions": {"D": {"type": "string", "format": "date"}},
            }}}],
        });
        let out = generate(&doc);
        assert!(out.contains("export type C = boolean;"), "{out}");
        assert!(out.contains("export type D = string;"), "{out}");
        assert!(out.contains("      p: C;"), "{out}");
        assert!(out.contains("    result: D[];"), "{out}");
    }

    #[test]
    fn the_same_name_for_different_schemas_gets_two_types() {
        let doc = json!({"methods": [
            {"name": "a", "params": [], "result": {"name": "result", "schema":
                {"$ref": "#/$defs/T", "$defs": {"T": {"type": "string"}}}}},
            {"name": "b", "params": [], "result": {"name": "result", "schema":
                {"$ref": "#/$defs/T", "$defs": {"T": {"type": "integer"}}}}},
            {"name": "c", "params": [], "result": {"name": "result", "schema":
                {"$ref": "#/$defs/T", "$defs": {"T": {"type": "string"}}}}},
        ]});
        let out = generate(&doc);
        assert!(out.contains("export type T = string;"), "{out}");
        assert!(out.contains("export type T2 = number;"), "{out}");
        assert_eq!(out.matches("result: T;").count(), 2, "{out}");
    }
}
