//! Flow files: metadata checks, parameter schema and validation, the registry and its reloads,
//! and the log module.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cardd_api::{Fen, Role};
use cardd_script::{
    run_flow, FlowDefinition, FlowError, FlowRegistry, LogLevel, LogModule, LogRecord, ParamKind,
    ParamValue, RunContext, ScriptError,
};
use common::{test_limits, Gate, TestCard};
use serde_json::json;

const GOOD: &str = r#"
-- 圈存: load money onto an ETC card.
return {
  name = "etc.load",
  version = "1.0.0",
  title = "圈存",
  description = "向 ETC 卡圈存",
  role = {"teller", "kiosk"},
  params = {
    record_id = { type = "string", required = true, max_len = 64, label = "充值记录号" },
    amount = { type = "amount", required = true, min = "0.01", max = "10000.00", label = "金额" },
    count = { type = "integer", min = 1, max = 100 },
    colour = { type = "enum", values = {"0", "1"} },
    flag = { type = "boolean" },
  },
  run = function(ctx, params)
    log.info("loading", { record_id = params.record_id, amount = params.amount })
    local credited = card.credit(params.amount)
    return { run_id = ctx.run_id, flow = ctx.flow, version = ctx.version, credited = credited,
             count = params.count, colour = params.colour, flag = params.flag }
  end,
}
"#;

fn good() -> FlowDefinition {
    FlowDefinition::from_source("etc_load.lua", GOOD).unwrap()
}

#[test]
fn a_good_file_is_understood() {
    let def = good();
    assert_eq!(def.name(), "etc.load");
    assert_eq!(def.version(), "1.0.0");
    assert_eq!(def.title(), "圈存");
    assert_eq!(def.description(), Some("向 ETC 卡圈存"));
    assert_eq!(def.roles(), &[Role::Teller, Role::Kiosk]);
    assert!(def.allows(Role::Kiosk) && !def.allows(Role::Admin));
    let names: Vec<&str> = def.params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["amount", "colour", "count", "flag", "record_id"]);
    assert_eq!(
        def.params()[0].kind,
        ParamKind::Amount {
            min: Fen(1),
            max: Fen(1_000_000)
        }
    );
    assert_eq!(def.source(), GOOD);
    let schema = def.params_schema();
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(schema["required"], json!(["amount", "record_id"]));
    assert_eq!(schema["properties"]["record_id"]["maxLength"], json!(64));
    assert_eq!(schema["properties"]["record_id"]["minLength"], json!(1));
    assert_eq!(schema["properties"]["amount"]["type"], json!("string"));
    assert_eq!(
        schema["properties"]["amount"]["x-cardd-amount"],
        json!({"min": "0.01", "max": "10000.00"})
    );
    assert_eq!(
        schema["properties"]["count"],
        json!({"type": "integer", "minimum": 1, "maximum": 100})
    );
    assert_eq!(schema["properties"]["colour"]["enum"], json!(["0", "1"]));
    assert_eq!(schema["properties"]["flag"]["type"], json!("boolean"));
}

#[test]
fn a_good_flow_runs_with_fen_amounts() {
    let def = Arc::new(good());
    let params = def
        .validate_params(&json!({"record_id": "R-001", "amount": "100.50", "count": 3, "colour": "1", "flag": true}))
        .unwrap();
    assert_eq!(params.get("amount"), Some(&ParamValue::Amount(Fen(10_050))));
    let card = TestCard::default();
    let records = Arc::new(Mutex::new(Vec::<LogRecord>::new()));
    let sink = records.clone();
    let log = LogModule::with_sink(move |r| sink.lock().unwrap().push(r.clone()));
    let result = run_flow(
        def,
        params,
        &[&card, &log],
        test_limits(),
        RunContext::new("run-42"),
    )
    .unwrap();
    assert_eq!(
        result,
        json!({"run_id": "run-42", "flow": "etc.load", "version": "1.0.0", "credited": 10050,
               "count": 3, "colour": "1", "flag": true})
    );
    assert_eq!(card.credits(), vec![10_050]);
    let records = records.lock().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].run_id, "run-42");
    assert_eq!(records[0].flow.as_deref(), Some("etc.load"));
    assert_eq!(records[0].level, LogLevel::Info);
    assert_eq!(records[0].message, "loading");
    assert_eq!(
        records[0].fields,
        json!({"record_id": "R-001", "amount": 10050})
    );
}

#[test]
fn log_lines_are_bounded() {
    let records = Arc::new(Mutex::new(Vec::<LogRecord>::new()));
    let sink = records.clone();
    let log = LogModule::with_sink(move |r| sink.lock().unwrap().push(r.clone()));
    let def = Arc::new(
        FlowDefinition::from_source(
            "noisy.lua",
            &common::flow_source(
                "for i = 1, 5000 do log.debug((\"x\"):rep(5000), { i = i }) end \
                 local ok, e = pcall(log.info, 42) \
                 local ok2 = pcall(log.info, \"m\", { f = 0.5 }) \
                 return { ok, ok2 }",
            ),
        )
        .unwrap(),
    );
    let params = def.validate_params(&json!(null)).unwrap();
    let result = run_flow(
        def,
        params,
        &[&log],
        test_limits(),
        RunContext::new("noisy"),
    )
    .unwrap();
    assert_eq!(result, json!([false, false]));
    let records = records.lock().unwrap();
    assert_eq!(records.len(), cardd_script::log::LOG_LINES_MAX as usize + 1);
    assert!(records[0].message.len() <= cardd_script::log::LOG_MESSAGE_BYTES_MAX);
    assert!(records.last().unwrap().message.contains("limit"));
}

/// Replaces `from` in GOOD with `to` (which must occur) and loads the result.
fn variant(from: &str, to: &str) -> Result<FlowDefinition, FlowError> {
    assert!(GOOD.contains(from), "{from}");
    FlowDefinition::from_source("variant.lua", &GOOD.replacen(from, to, 1))
}

#[test]
fn every_kind_of_bad_metadata_is_reported() {
    let cases: &[(&str, &str, &str)] = &[
        ("name = \"etc.load\",", "", "`name` is missing"),
        ("\"etc.load\"", "\"Etc.Load\"", "lower-case words"),
        ("\"etc.load\"", "\"etc load\"", "lower-case words"),
        ("\"1.0.0\"", "\"1.0\"", "must look like \"1.2.3\""),
        (
            "version = \"1.0.0\",",
            "version = 1,",
            "`version` is missing or not a string",
        ),
        (
            "title = \"圈存\",",
            "",
            "`title` must be a non-empty string",
        ),
        (
            "title = \"圈存\",",
            "title = \"\",",
            "`title` must be a non-empty string",
        ),
        (
            "{\"teller\", \"kiosk\"}",
            "{\"teller\", \"cashier\"}",
            "unknown role \"cashier\"",
        ),
        (
            "{\"teller\", \"kiosk\"}",
            "{}",
            "`role` must be a non-empty list",
        ),
        (
            "{\"teller\", \"kiosk\"}",
            "{\"teller\", \"teller\"}",
            "listed twice",
        ),
        (
            "{\"teller\", \"kiosk\"}",
            "\"teller\"",
            "`role` must be a non-empty list",
        ),
        (
            "name = \"etc.load\",",
            "name = \"etc.load\", nmae = \"x\",",
            "unknown key `nmae`",
        ),
        ("run = function", "walk = function", "`run` is missing"),
        ("run = function", "walk = function", "unknown key `walk`"),
        (
            "run = function(ctx, params)",
            "run = 42, x = function(ctx, params)",
            "`run` must be a function, not a integer",
        ),
        (
            "max_len = 64",
            "max_length = 64",
            "unknown key `max_length`",
        ),
        (
            "max_len = 64",
            "max_len = 0",
            "max_len must be an integer from 1 to 4096",
        ),
        (
            "type = \"boolean\"",
            "type = \"money\"",
            "not one of string, amount",
        ),
        (
            "flag = { type = \"boolean\" }",
            "flag = { required = true }",
            "flag.type is missing",
        ),
        ("min = \"0.01\"", "min = \"abc\"", "金额格式不正确"),
        (
            "min = \"0.01\"",
            "min = \"20000\"",
            "min is larger than max",
        ),
        ("min = \"0.01\"", "min = 1", "must be a decimal yuan string"),
        (
            "min = 1, max = 100",
            "min = 100, max = 1",
            "min is larger than max",
        ),
        (
            "values = {\"0\", \"1\"}",
            "values = {0, 1}",
            "is not a string",
        ),
        ("values = {\"0\", \"1\"}", "values = {}", "list of strings"),
        (
            "values = {\"0\", \"1\"}",
            "values = {\"0\", \"0\"}",
            "listed twice",
        ),
        (
            "required = true, max_len",
            "required = \"yes\", max_len",
            "required must be true or false",
        ),
        (
            "record_id = {",
            "RecordId = {",
            "parameter name \"RecordId\"",
        ),
        (
            "flag = { type = \"boolean\" },",
            "\"not a spec\",",
            "parameter name \"1\"",
        ),
    ];
    for (from, to, needle) in cases {
        match variant(from, to) {
            Err(FlowError::Metadata { file, problems }) => {
                assert_eq!(file, "variant.lua");
                assert!(
                    problems.iter().any(|p| p.contains(needle)),
                    "{to}: {problems:?}"
                );
            }
            Err(e @ FlowError::Script { .. }) if e.to_string().contains(needle) => {}
            other => panic!("{from} -> {to}: expected {needle:?}, got {other:?}"),
        }
    }
}

#[test]
fn bad_files_report_their_script_errors() {
    let cases: &[(&str, &str)] = &[
        ("return 42", "must return a table"),
        ("return {", "does not compile (line 1)"),
        (
            "local x = 1\nlocal y = = 2\nreturn {}",
            "does not compile (line 2)",
        ),
        ("while true do end", "instruction budget"),
        ("card.credit(1) return {}", "attempt to index a nil value"),
        ("os.exit(1)", "refused by the sandbox: os"),
        (
            "return { name = \"a\", amount = 0.01 }",
            "non-integer number 0.01",
        ),
        (
            "return { name = function() end }",
            "`name` must not be a function",
        ),
        (
            "return { params = { x = { type = function() end } } }",
            "cannot be converted",
        ),
    ];
    for (source, needle) in cases {
        let err = FlowDefinition::from_source("bad.lua", source).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("bad.lua: "), "{text}");
        assert!(text.contains(needle), "{source}: {text}");
    }
    let params_float = GOOD.replacen("min = \"0.01\"", "min = 0.01", 1);
    let err = FlowDefinition::from_source("f.lua", &params_float).unwrap_err();
    assert!(err.to_string().contains("params.amount.min"), "{err}");
}

#[test]
fn every_bad_param_is_listed_in_zh_cn() {
    let def = good();
    let check = |input: serde_json::Value| def.validate_params(&input).unwrap_err();
    let one = |input: serde_json::Value, param: &str, needle: &str| {
        let err = check(input.clone());
        assert!(
            err.problems
                .iter()
                .any(|p| p.param == param && p.message.contains(needle)),
            "{input}: {err}"
        );
    };
    let base = |extra: serde_json::Value| {
        let mut v = json!({"record_id": "R1", "amount": "1.00"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    one(json!({"amount": "1.00"}), "record_id", "缺少必填参数");
    one(base(json!({"extra": 1})), "extra", "未知参数");
    one(base(json!({"record_id": 5})), "record_id", "应为文本");
    one(base(json!({"record_id": ""})), "record_id", "不能为空");
    one(
        base(json!({"record_id": "x".repeat(65)})),
        "record_id",
        "不能超过 64 个字符",
    );
    one(
        base(json!({"record_id": "a\u{0}b"})),
        "record_id",
        "控制字符",
    );
    one(base(json!({"amount": "10.001"})), "amount", "两位小数");
    one(base(json!({"amount": "-5"})), "amount", "负数");
    one(base(json!({"amount": "abc"})), "amount", "金额格式不正确");
    one(base(json!({"amount": "1e3"})), "amount", "金额格式不正确");
    one(base(json!({"amount": 0.1})), "amount", "文本形式");
    one(base(json!({"amount": 100})), "amount", "文本形式");
    one(
        base(json!({"amount": "0.00"})),
        "amount",
        "不能小于 0.01 元",
    );
    one(
        base(json!({"amount": "10000.01"})),
        "amount",
        "不能大于 10000.00 元",
    );
    one(base(json!({"count": 1.5})), "count", "应为整数");
    one(base(json!({"count": "3"})), "count", "应为整数");
    one(base(json!({"count": 0})), "count", "不能小于 1");
    one(base(json!({"count": 101})), "count", "不能大于 100");
    one(base(json!({"colour": "2"})), "colour", "应为以下之一：0、1");
    one(base(json!({"colour": 1})), "colour", "应为以下之一");
    one(base(json!({"flag": "true"})), "flag", "true 或 false");
    one(json!([1, 2]), "", "参数应为对象");

    // Every bad parameter at once, labels for the teller.
    let err = check(json!({"amount": "10.001", "count": 0, "colour": "x", "flag": 1, "zzz": true}));
    let params: Vec<&str> = err.problems.iter().map(|p| p.param.as_str()).collect();
    assert_eq!(
        params,
        ["amount", "colour", "count", "flag", "record_id", "zzz"]
    );
    let text = err.to_string();
    assert!(text.starts_with("参数错误："), "{text}");
    assert!(text.contains("金额：金额最多保留两位小数（分）"), "{text}");
    assert!(text.contains("充值记录号：缺少必填参数"), "{text}");

    // Optional parameters may be absent or null.
    let ok = def
        .validate_params(&json!({"record_id": "R1", "amount": "1", "count": null}))
        .unwrap();
    assert_eq!(ok.get("count"), None);
    assert_eq!(
        ok.get("record_id"),
        Some(&ParamValue::Text("R1".to_owned()))
    );
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cardd-script-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn flow_file(name: &str, version: &str, body: &str) -> String {
    format!(
        "return {{ name = \"{name}\", version = \"{version}\", title = \"t\", role = {{\"teller\"}},\n\
         run = function(ctx, params) {body} end }}\n"
    )
}

fn write(dir: &Path, file: &str, content: &str) {
    std::fs::write(dir.join(file), content).unwrap();
}

#[test]
fn a_scan_reports_bad_files_and_loads_the_rest() {
    let dir = tempdir("scan");
    write(
        &dir,
        "a.lua",
        &flow_file("city.query", "1.0.0", "return {}"),
    );
    write(&dir, "b.lua", "return { name = \"broken\" ");
    write(&dir, "c.lua", &flow_file("etc.load", "2.1.0", "return {}"));
    write(&dir, "d.lua", &flow_file("etc.load", "9.9.9", "return {}"));
    write(&dir, "e.lua", &flow_file("Bad Name", "1.0.0", "return {}"));
    write(&dir, "notes.txt", "not a flow");
    std::fs::create_dir(dir.join("sub.lua")).unwrap();
    let registry = FlowRegistry::scan(&dir).unwrap();
    let names: Vec<String> = registry
        .list()
        .iter()
        .map(|d| d.name().to_owned())
        .collect();
    assert_eq!(names, ["city.query", "etc.load"]);
    assert_eq!(registry.get("etc.load").unwrap().version(), "2.1.0");
    assert_eq!(
        registry.get("etc.load").unwrap().path(),
        Some(dir.join("c.lua").as_path())
    );
    let problems = registry.problems();
    let files: Vec<&str> = problems.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(files, ["b.lua", "d.lua", "e.lua"], "{problems:?}");
    assert!(
        problems[0].reason.contains("does not compile"),
        "{problems:?}"
    );
    assert!(
        problems[1].reason.contains("already defined by c.lua"),
        "{problems:?}"
    );
    assert!(
        problems[2].reason.contains("lower-case words"),
        "{problems:?}"
    );
    assert!(FlowRegistry::scan(&dir.join("missing")).is_err());
}

#[test]
fn reload_keeps_running_flows_on_their_version() {
    let dir = tempdir("reload");
    write(
        &dir,
        "load.lua",
        &flow_file(
            "etc.load",
            "1.0.0",
            "card.wait() return { version = ctx.version, v = 1 }",
        ),
    );
    write(
        &dir,
        "gone.lua",
        &flow_file("etc.gone", "1.0.0", "return {}"),
    );
    let registry = Arc::new(FlowRegistry::scan(&dir).unwrap());
    let v1 = registry.get("etc.load").unwrap();

    // Start a run of v1 and hold it inside card.wait().
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let card = TestCard {
        gate: Some(Arc::new(Gate {
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        })),
        ..TestCard::default()
    };
    let running = {
        let def = v1.clone();
        std::thread::spawn(move || {
            let params = def.validate_params(&json!({})).unwrap();
            run_flow(
                def,
                params,
                &[&card],
                test_limits(),
                RunContext::new("long"),
            )
        })
    };
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    // Unchanged files keep their Arc.
    let report = registry.reload_if_changed().unwrap();
    assert!(report.added.is_empty() && report.updated.is_empty() && report.removed.is_empty());
    assert!(Arc::ptr_eq(&v1, &registry.get("etc.load").unwrap()));

    // Edit, add, remove; then reload while v1 is still running.
    write(
        &dir,
        "load.lua",
        &flow_file(
            "etc.load",
            "1.1.0",
            "return { version = ctx.version, v = 2 }",
        ),
    );
    write(&dir, "new.lua", &flow_file("etc.new", "1.0.0", "return {}"));
    std::fs::remove_file(dir.join("gone.lua")).unwrap();
    let report = registry.reload_if_changed().unwrap();
    assert_eq!(report.added, ["etc.new"]);
    assert_eq!(report.updated, ["etc.load"]);
    assert_eq!(report.removed, ["etc.gone"]);
    let v2 = registry.get("etc.load").unwrap();
    assert_eq!(v2.version(), "1.1.0");

    release_tx.send(()).unwrap();
    let result = running.join().unwrap().unwrap();
    assert_eq!(result, json!({"version": "1.0.0", "v": 1}));

    let params = v2.validate_params(&json!({})).unwrap();
    let result = run_flow(
        v2,
        params,
        &[&TestCard::default()],
        test_limits(),
        RunContext::new("new"),
    )
    .unwrap();
    assert_eq!(result, json!({"version": "1.1.0", "v": 2}));

    // A bad edit removes the flow and says why, instead of keeping a stale version.
    write(&dir, "new.lua", "return {");
    let report = registry.reload_if_changed().unwrap();
    assert_eq!(report.removed, ["etc.new"]);
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].file, "new.lua");
    assert!(registry.get("etc.new").is_none());
}

#[test]
fn modules_cannot_shadow_sandbox_globals() {
    struct Named(&'static str);
    impl cardd_script::LuaModule for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn register(
            &self,
            lua: &cardd_script::mlua::Lua,
            _: &RunContext,
        ) -> cardd_script::mlua::Result<()> {
            cardd_script::install_module(lua, self.0, lua.create_table()?)
        }
    }
    let def =
        Arc::new(FlowDefinition::from_source("m.lua", &common::flow_source("return {}")).unwrap());
    for (modules, needle) in [
        (vec![Named("string")], "shadow"),
        (vec![Named("os")], "shadow"),
        (vec![Named("Card")], "identifier"),
        (vec![Named("card"), Named("card")], "twice"),
    ] {
        let refs: Vec<&dyn cardd_script::LuaModule> = modules
            .iter()
            .map(|m| m as &dyn cardd_script::LuaModule)
            .collect();
        let params = def.validate_params(&json!(null)).unwrap();
        match run_flow(
            def.clone(),
            params,
            &refs,
            test_limits(),
            RunContext::new("m"),
        ) {
            Err(ScriptError::Refused { reason }) if reason.contains(needle) => {}
            other => panic!("{needle}: {other:?}"),
        }
    }
}
