//! Property tests: amount arguments agree with `cardd_api::Fen`, conversions round-trip and
//! refuse fractions, the pattern estimate and parameter validation never panic.

use cardd_api::money::AMOUNT_FEN_MAX;
use cardd_api::Fen;
use cardd_script::mlua::{Lua, Value};
use cardd_script::{fen_arg, json_to_lua, lua_to_json, FlowDefinition, JsonLimits, Limits};
use proptest::prelude::*;
use serde_json::json;

fn json_data() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(serde_json::Value::Bool),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(|n| json!(n)),
        "[a-z圈存0-9 ]{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn integer_amounts_are_fen_within_bounds(n in any::<i64>()) {
        let accepted = fen_arg(Value::Integer(n)).ok();
        prop_assert_eq!(accepted, (0..=AMOUNT_FEN_MAX).contains(&n).then_some(n));
    }

    #[test]
    fn float_amounts_are_always_refused(x in any::<f64>()) {
        prop_assert!(fen_arg(Value::Number(x)).is_err());
    }

    #[test]
    fn string_amounts_agree_with_fen_parse_yuan(text in "[-+0-9.eE ]{0,14}") {
        let lua = Lua::new();
        let value = Value::String(lua.create_string(&text).unwrap());
        let ours = fen_arg(value).ok();
        let theirs = Fen::parse_yuan(&text).ok().map(|Fen(f)| f);
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn json_round_trips_through_lua(data in json_data()) {
        let lua = Lua::new();
        let limits = JsonLimits::from_limits(&Limits::default());
        let value = json_to_lua(&lua, &data, &limits).unwrap();
        prop_assert_eq!(lua_to_json(&lua, &value, &limits).unwrap(), data);
    }

    #[test]
    fn fractional_numbers_never_cross(x in any::<f64>().prop_filter("fractional", |x| x.fract() != 0.0 || !x.is_finite())) {
        let lua = Lua::new();
        let limits = JsonLimits::from_limits(&Limits::default());
        prop_assert!(lua_to_json(&lua, &Value::Number(x), &limits).is_err());
    }

    #[test]
    fn pattern_estimate_never_panics_and_grows_with_the_subject(
        pattern in prop::collection::vec(any::<u8>(), 0..64),
        len in 0usize..100_000,
    ) {
        let small = cardd_script::sandbox::pattern_steps_estimate(len, &pattern, true);
        let large = cardd_script::sandbox::pattern_steps_estimate(len + 1, &pattern, true);
        prop_assert!(small >= 1.0);
        prop_assert!(large >= small);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn param_validation_never_panics(input in json_data()) {
        let def = FlowDefinition::from_source(
            "p.lua",
            "return { name = \"p.q\", version = \"1.0.0\", title = \"t\", role = {\"teller\"}, \
             params = { a = { type = \"amount\", required = true }, s = { type = \"string\" }, \
             n = { type = \"integer\", min = 0, max = 9 } }, run = function() return {} end }",
        )
        .unwrap();
        let _ = def.validate_params(&input);
    }
}
