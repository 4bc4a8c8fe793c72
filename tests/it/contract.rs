//! The method types of `cardd_api` are the daemon's: every one names a method of the OpenRPC
//! document (`docs/openrpc.json`, kept current by `daemon_api`) with exactly the params and
//! result schemas the daemon registers, so a client compiled against `cardd_api` sends what the
//! daemon reads and reads what it answers.

use cardd_api::method::{Method, Subscription};
use cardd_api::{
    audit, auth, card, events, flows, journal, operators, reader, readers, sim, system,
};
use schemars::JsonSchema;
use serde_json::{json, Value};

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openrpc.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openrpc.json"))
        .expect("OpenRPC JSON")
}

fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("schema")
}

/// The params of the method `name` as the document lists them, from a params type's schema.
fn params_of<P: JsonSchema>() -> (Vec<Value>, Option<Value>) {
    let schema = schema_of::<P>();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let params = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, s)| json!({ "name": name, "required": required.contains(&name.as_str()), "schema": s }))
        .collect();
    (params, schema.get("$defs").cloned())
}

fn check<P: JsonSchema, R: JsonSchema>(doc: &Value, name: &str) {
    let method = doc["methods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not a method of the daemon"));
    let (params, defs) = params_of::<P>();
    assert_eq!(method["params"], Value::Array(params), "{name}: params");
    assert_eq!(
        method.get("x-param-definitions").cloned(),
        defs,
        "{name}: param definitions"
    );
    assert_eq!(
        method["result"]["schema"],
        schema_of::<R>(),
        "{name}: result"
    );
}

fn method<M: Method>(doc: &Value) {
    check::<M::Params, M::Result>(doc, M::NAME);
}

fn subscription<S: Subscription>(doc: &Value) {
    check::<S::Params, S::Item>(doc, S::NAME);
}

#[test]
fn the_api_method_types_are_the_daemons() {
    let doc = document();
    method::<system::VersionInfo>(&doc);
    method::<system::GetVocabulary>(&doc);
    method::<auth::Login>(&doc);
    method::<auth::Logout>(&doc);
    method::<auth::Whoami>(&doc);
    method::<auth::ChangePassword>(&doc);
    method::<operators::List>(&doc);
    method::<operators::Create>(&doc);
    method::<operators::SetDisabled>(&doc);
    method::<operators::SetRole>(&doc);
    method::<operators::ResetPassword>(&doc);
    method::<audit::List>(&doc);
    method::<audit::Verify>(&doc);
    method::<readers::List>(&doc);
    method::<readers::Lease>(&doc);
    method::<readers::Renew>(&doc);
    method::<readers::Release>(&doc);
    method::<reader::Transmit>(&doc);
    method::<card::Summary>(&doc);
    method::<card::Balance>(&doc);
    method::<events::Poll>(&doc);
    subscription::<events::Subscribe>(&doc);
    method::<flows::List>(&doc);
    method::<flows::Start>(&doc);
    method::<flows::Get>(&doc);
    method::<flows::Events>(&doc);
    method::<flows::AnswerPrompt>(&doc);
    method::<flows::Cancel>(&doc);
    subscription::<flows::Subscribe>(&doc);
    method::<journal::Open>(&doc);
    method::<journal::LostCards>(&doc);
    method::<journal::ProposeLostCard>(&doc);
    method::<journal::ConfirmLostCard>(&doc);
    method::<journal::ClearWatch>(&doc);
    method::<journal::Resolve>(&doc);
    method::<sim::Readers>(&doc);
    method::<sim::Insert>(&doc);
    method::<sim::Remove>(&doc);
    method::<sim::Swap>(&doc);
    method::<sim::PullDuringNextLoad>(&doc);
    // rpc.discover answers the document itself.
    assert!(doc["methods"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["name"] == <system::Discover as Method>::NAME));
}
