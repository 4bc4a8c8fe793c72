//! The OpenRPC document, generated from the method catalogue.
//!
//! `rpc.discover` returns it, and `docs/openrpc.json` is the committed copy: a test regenerates
//! the document and fails when the copy is stale (`UPDATE_DOCS=1 cargo test -p cardd` rewrites
//! it), so the published API never drifts from the code. The error-code table
//! (`docs/errors.md`) is generated and checked the same way.

use serde_json::{json, Value};

use crate::rpc::MethodSpec;

/// The API's version: bumped on any incompatible change.
pub const API_VERSION: &str = "1.0.0";

/// The OpenRPC 1.2 document for `specs`.
pub fn document(specs: &[MethodSpec]) -> Value {
    let mut methods: Vec<&MethodSpec> = specs.iter().collect();
    methods.sort_by_key(|m| m.name);
    let methods: Vec<Value> = methods.into_iter().map(method).collect();
    let errors: Vec<Value> = cardd_api::ErrorCode::ALL
        .iter()
        .map(|c| json!({ "code": c.code(), "message": c.name(), "data": { "meaning": c.meaning(), "action": c.action() } }))
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {
            "title": "cardd",
            "version": API_VERSION,
            "description": "JSON-RPC 2.0 over HTTP (POST /) and WebSocket (same URL) on loopback. \
                Parameters are named (a JSON object). Send the token from auth.login as \
                `Authorization: Bearer <token>`, or as `?token=` on the WebSocket upgrade. \
                Amounts are decimal yuan strings. Errors use the codes in x-error-codes."
        },
        "methods": methods,
        "x-error-codes": errors,
    })
}

fn method(spec: &MethodSpec) -> Value {
    let access = spec.access.describe();
    let mut params = Vec::new();
    if let Some(props) = spec.params.get("properties").and_then(|p| p.as_object()) {
        let required: Vec<&str> = spec
            .params
            .get("required")
            .and_then(|r| r.as_array())
            .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        for (name, schema) in props {
            params.push(json!({ "name": name, "required": required.contains(&name.as_str()), "schema": schema }));
        }
    }
    let mut m = json!({
        "name": spec.name,
        "summary": spec.summary,
        "paramStructure": "by-name",
        "params": params,
        "result": { "name": "result", "schema": spec.result },
        "x-access": access,
        "x-audited": spec.mutates,
    });
    if let Some(defs) = spec.params.get("$defs") {
        m["x-param-definitions"] = defs.clone();
    }
    if let Some((notification, unsubscribe)) = spec.subscription {
        m["x-subscription"] = json!({ "notification": notification, "unsubscribe": unsubscribe });
    }
    m
}

/// `docs/errors.md`: the error-code table.
pub fn errors_markdown() -> String {
    let mut out = String::from(
        "# cardd JSON-RPC error codes\n\n\
         Generated from `daemon/api/src/codes.rs`; a test fails when this file is stale\n\
         (`UPDATE_DOCS=1 cargo test -p cardd` rewrites it). Every error's `data` holds\n\
         `error` (the name below) and `action` (what to do next).\n\n\
         | code | name | HTTP | meaning | what to do |\n|---|---|---|---|---|\n",
    );
    for c in cardd_api::ErrorCode::ALL {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            c.code(),
            c.name(),
            c.http_status(),
            c.meaning(),
            c.action()
        ));
    }
    out
}
