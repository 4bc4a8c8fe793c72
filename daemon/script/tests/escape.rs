//! The T8 Lua escape suite (style-and-reliability.md §B7): every attempt must fail with the
//! expected error class and must not reach the card API.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cardd_script::pool::PREBUILT_STATES_PER_FLOW;
use cardd_script::{
    run_chunk, run_flow, FlowDefinition, FlowError, Limits, LogModule, RunContext, Sandbox,
    ScriptError,
};
use common::{flow_source, run_body, run_body_with, test_limits, TestCard};

/// A run that is stopped is stopped long before this: the bound only proves nothing hangs.
/// How quickly the watchdog and the budget act is a figure for the benchmark (a timed assertion
/// would fail on a busy machine for no fault of the code).
const HANG_GUARD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Refused,
    Runtime,
    Instructions,
    Memory,
    CallDepth,
    WallTime,
    Watchdog,
    Cancelled,
    Compile,
    BadReturn,
    Ok,
}

fn class(result: &Result<serde_json::Value, ScriptError>) -> Class {
    match result {
        Ok(_) => Class::Ok,
        Err(ScriptError::Refused { .. }) => Class::Refused,
        Err(ScriptError::Runtime { .. }) => Class::Runtime,
        Err(ScriptError::Instructions { .. }) => Class::Instructions,
        Err(ScriptError::Memory { .. }) => Class::Memory,
        Err(ScriptError::CallDepth { .. }) => Class::CallDepth,
        Err(ScriptError::WallTime { .. }) => Class::WallTime,
        Err(ScriptError::Watchdog { .. }) => Class::Watchdog,
        Err(ScriptError::Cancelled) => Class::Cancelled,
        Err(ScriptError::Compile { .. }) => Class::Compile,
        Err(ScriptError::BadReturn { .. }) => Class::BadReturn,
        Err(ScriptError::Internal { reason }) => panic!("internal error: {reason}"),
    }
}

/// (attempt, flow body, expected class, text the error must contain)
const ATTEMPTS: &[(&str, &str, Class, &str)] = &[
    // Host access
    ("os.execute(\"id\")", "os.execute(\"id\")", Class::Refused, "os"),
    ("io.open(\"/etc/passwd\")", "io.open(\"/etc/passwd\")", Class::Refused, "io"),
    ("io.popen(\"id\")", "io.popen(\"id\")", Class::Refused, "io"),
    ("require\"os\"", "require\"os\"", Class::Refused, "require"),
    ("package.loadlib", "package.loadlib(\"libc.so.6\", \"system\")", Class::Refused, "package"),
    ("dofile", "dofile(\"/etc/passwd\")", Class::Refused, "dofile"),
    ("loadfile", "loadfile(\"/etc/passwd\")", Class::Refused, "loadfile"),
    ("rawget(_G, \"os\") stays nil", "return { os = rawget(_G, \"os\") == nil and \"absent\" }", Class::Ok, ""),
    ("print", "print(\"x\")", Class::Refused, "log.info"),
    // Bytecode
    ("load(string.dump(f))", "return load(string.dump(function() end))", Class::Refused, "load"),
    ("string.dump(f)", "return string.dump(function() end)", Class::Refused, "string.dump"),
    ("load(\"\\27Lua…\")", "return load(\"\\27LuaT\\0\\25\\147\\r\\n\\26\\n\")", Class::Refused, "load"),
    ("load(chunk, name, \"b\")", "return load(\"\\27LuaT\\0\\25\\147\\r\\n\\26\\n\", \"x\", \"b\")", Class::Refused, "load"),
    ("_G.load(chunk, name, \"b\")", "return _G[\"lo\" .. \"ad\"](\"\\27Lua\", \"x\", \"b\")", Class::Refused, "load"),
    ("string.dump through the string metatable", "return getmetatable(\"\").__index.dump(function() end)", Class::Refused, "string.dump"),
    ("rawget(string, \"dump\") stays nil", "return { dump = rawget(string, \"dump\") == nil and \"absent\" }", Class::Ok, ""),
    // Debug library and GC control
    ("debug.sethook()", "debug.sethook()", Class::Refused, "debug"),
    ("debug.getregistry", "return debug.getregistry()", Class::Refused, "debug"),
    ("collectgarbage\"stop\"", "collectgarbage\"stop\"", Class::Refused, "collectgarbage"),
    ("math.randomseed(1)", "math.randomseed(1)", Class::Refused, "randomseed"),
    // Runaway loops
    ("while true do end", "while true do end", Class::Instructions, ""),
    ("while true do end inside coroutine.wrap", "coroutine.wrap(function() while true do end end)()", Class::Instructions, ""),
    ("loop inside coroutine.resume", "local co = coroutine.create(function() while true do end end) local ok = coroutine.resume(co) return { ok = ok }", Class::Instructions, ""),
    ("while true do pcall(loop) end", "while true do pcall(function() while true do end end) end", Class::Instructions, ""),
    ("xpcall with a looping handler", "xpcall(function() while true do end end, function() while true do end end) return {}", Class::Instructions, ""),
    ("__gc finalizer (runs without hooks)", "setmetatable({}, {__gc = function() while true do end end}) return {}", Class::Refused, "__gc"),
    ("__gc hidden behind __metatable", "setmetatable({}, {__metatable = false, __gc = function() end}) return {}", Class::Refused, "__gc"),
    ("__gc added after setmetatable is inert", "local mt = {} local t = setmetatable({}, mt) mt.__gc = function() while true do end end t = nil local junk = {} for i = 1, 20000 do junk[i % 100] = {i} end return {}", Class::Ok, ""),
    ("pcall(coroutine.wrap(loop))", "while true do pcall(coroutine.wrap(function() while true do end end)) end", Class::Instructions, ""),
    ("coroutine.close running a looping __close", "local co = coroutine.create(function() local x <close> = setmetatable({}, {__close = function() while true do end end}) coroutine.yield() end) coroutine.resume(co) local ok = coroutine.close(co) return { ok = ok }", Class::Instructions, ""),
    ("__close replacing the budget error", "pcall(function() local x <close> = setmetatable({}, {__close = function() error(\"other\") end}) while true do end end) return {}", Class::Instructions, ""),
    ("error(stop) rethrown as a string", "local ok, e = pcall(function() while true do end end) error(tostring(e)) ", Class::Instructions, ""),
    // Memory and stack bombs
    ("string.rep(\"x\", 2^31)", "return string.rep(\"x\", 2^31)", Class::Refused, "string.rep"),
    ("string.rep(\"\", 2^53)", "return string.rep(\"\", 2^53)", Class::Refused, "count"),
    ("(\"x\"):rep(1e6, (\"y\"):rep(1e6))", "return (\"x\"):rep(1000, (\"y\"):rep(10000))", Class::Refused, "string.rep"),
    ("unbounded table growth", "local t = {} local i = 0 while true do i = i + 1 t[i] = string.rep(\"x\", 64) .. i end", Class::Memory, ""),
    ("unbounded growth inside pcall", "while true do pcall(function() local t = {} local i = 0 while true do i = i + 1 t[i] = {i} end end) end", Class::Memory, ""),
    ("string doubling", "local s = \"x\" while true do s = s .. s end", Class::Memory, ""),
    ("deep recursion", "local function f(n) return 1 + f(n + 1) end return { f(0) }", Class::CallDepth, ""),
    ("deep recursion inside pcall", "local function f(n) return 1 + f(n + 1) end while true do pcall(f, 0) end", Class::CallDepth, ""),
    // Slow C code
    ("(\"a\"):rep(1e6):find(\".-.-.-.-b\")", "return { (\"a\"):rep(1e6):find(\".-.-.-.-b\") }", Class::Refused, "subject"),
    ("(\"a\"):rep(60000):find(\".-.-.-.-b\")", "return { (\"a\"):rep(60000):find(\".-.-.-.-b\") }", Class::Refused, "backtrack"),
    ("gsub with backtracking pattern", "return { (\"a\"):rep(5000):gsub(\"a-a-a-b\", \"\") }", Class::Refused, "backtrack"),
    ("string.rep(\"\", \"1e15\") (count as a string)", "return string.rep(\"\", \"1e15\")", Class::Refused, "count"),
    ("table.move({}, \"1\", \"1e15\", 2)", "table.move({}, \"1\", \"1e15\", 2) return {}", Class::Refused, "table.move"),
    ("table.concat with a C __index over 1e15 items", "return { table.concat(setmetatable({}, {__index = tostring}), \"\", 1, 1e15) }", Class::Refused, "table.concat"),
    ("table.unpack({}, 1, 1e7)", "return { table.unpack({}, 1, 1e7) }", Class::Refused, "table.unpack"),
    ("table.move over 1e15 items", "table.move({}, 1, 1e15, 2) return {}", Class::Refused, "table.move"),
    ("table.insert with a lying __len", "table.insert(setmetatable({}, {__len = function() return 2^50 end}), 1, 1) return {}", Class::Refused, "__len"),
    ("__len hidden behind __metatable", "table.remove(setmetatable({}, {__len = function() return 2^50 end, __metatable = false}), 1) return {}", Class::Refused, "__len"),
    // API abuse
    ("card.credit(-1)", "card.credit(-1)", Class::Runtime, "负数"),
    ("card.credit(0.1)", "card.credit(0.1)", Class::Runtime, "floating-point"),
    ("card.credit(2^63)", "card.credit(2^63)", Class::Runtime, "floating-point"),
    ("card.credit(math.maxinteger)", "card.credit(math.maxinteger)", Class::Runtime, "金额过大"),
    ("card.credit(\"1e3\")", "card.credit(\"1e3\")", Class::Runtime, "金额格式不正确"),
    ("card.credit(\"-5\")", "card.credit(\"-5\")", Class::Runtime, "负数"),
    ("card.credit(\"10.001\")", "card.credit(\"10.001\")", Class::Runtime, "两位小数"),
    ("card.credit({})", "card.credit({})", Class::Runtime, "expected an amount"),
    ("re-entrant card call from a callback", "card.with_callback(function() card.credit(1) end)", Class::Runtime, "re-entrant"),
    ("re-entrant call swallowed by pcall", "local ok = card.with_callback(function() return pcall(card.credit, 1) end) return { ok = ok }", Class::Ok, ""),
];

/// Runs `def` with `card` and `log`.
fn run_def(
    def: &Arc<FlowDefinition>,
    card: &TestCard,
    ctx: RunContext,
) -> Result<serde_json::Value, ScriptError> {
    let params = def.validate_params(&serde_json::Value::Null).unwrap();
    let log = LogModule::new();
    run_flow(def.clone(), params, &[card, &log], test_limits(), ctx)
}

/// Waits (bounded) until `def` has a state built ahead of its next run.
fn wait_for_prebuilt(def: &FlowDefinition) {
    let give_up = Instant::now() + HANG_GUARD;
    while def.ready_states() == 0 {
        assert!(Instant::now() < give_up, "no state was pre-built");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Each attempt runs twice: in a state built for the run, then in one built ahead of it.
#[test]
fn every_escape_attempt_fails_with_its_class() {
    let mut failures = Vec::new();
    println!("| attempt | result |");
    println!("|---|---|");
    for (attempt, body, expected, needle) in ATTEMPTS {
        let def = Arc::new(FlowDefinition::from_source("test.lua", &flow_source(body)).unwrap());
        for state in ["built for the run", "pre-built"] {
            if state == "pre-built" {
                wait_for_prebuilt(&def);
            }
            let card = TestCard::default();
            let result = run_def(&def, &card, RunContext::new("escape"));
            let got = class(&result);
            let text = match &result {
                Ok(v) => format!("ok {v}"),
                Err(e) => e.to_string(),
            };
            if state != "pre-built" {
                println!("| `{attempt}` | {got:?}: {} |", text.replace('\n', " "));
            }
            if got != *expected || !text.contains(needle) {
                failures.push(format!(
                    "{attempt} ({state}): expected {expected:?} containing {needle:?}, got {got:?}: {text}"
                ));
            }
            if !card.credits().is_empty() {
                failures.push(format!(
                    "{attempt} ({state}): reached the card: {:?}",
                    card.credits()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn good_credits_pass_fen_arg() {
    let card = TestCard::default();
    let result = run_body_with(
        "return { card.credit(100), card.credit(\"1.00\"), card.credit(\"0.01\") }",
        &card,
        test_limits(),
        RunContext::new("credits"),
    );
    assert_eq!(result.unwrap(), serde_json::json!([100, 100, 1]));
    assert_eq!(card.credits(), vec![100, 100, 1]);
}

#[test]
fn binary_chunks_are_refused_by_our_loader() {
    let bytecode = "\x1bLuaT\x00\x19\u{93}\r\n\x1a\nreturn {}";
    let err = FlowDefinition::from_source("evil.lua", bytecode).unwrap_err();
    assert!(
        matches!(&err, FlowError::Script { source: ScriptError::Refused { reason }, .. } if reason.contains("binary")),
        "{err}"
    );
    let result = run_chunk(
        "evil.lua",
        bytecode,
        &[],
        test_limits(),
        RunContext::new("b"),
    );
    assert!(
        matches!(result, Err(ScriptError::Refused { .. })),
        "{result:?}"
    );
    // A real binary file on disk (not UTF-8 either).
    let dir = tempdir("binary");
    let path = dir.join("evil.lua");
    std::fs::write(&path, b"\x1bLuaT\x00\x19\x93\r\n\x1a\n\xff\xfe").unwrap();
    let err = FlowDefinition::load(&path).unwrap_err();
    assert!(
        matches!(
            &err,
            FlowError::Script {
                source: ScriptError::Refused { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn string_metatable_changes_do_not_leak_into_the_next_run() {
    let first = run_body("getmetatable(\"\").__index.rep = nil string.upper = nil return {}");
    assert!(first.is_ok(), "{first:?}");
    let second = run_body("return { (\"x\"):rep(3), string.upper(\"a\") }");
    assert_eq!(second.unwrap(), serde_json::json!(["xxx", "A"]));
}

#[test]
fn math_random_is_deterministic_per_seed() {
    let body =
        "return { math.random(1, 1000000), math.random(1, 1000000), math.random(1, 1000000) }";
    let card = TestCard::default();
    let run = |seed: u64| {
        run_body_with(
            body,
            &card,
            test_limits(),
            RunContext::new("r").with_seed(seed),
        )
        .unwrap()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn the_watchdog_fails_a_stuck_run_closed() {
    // `card.block_ms` stands in for a C function hooks cannot interrupt. After it returns, the
    // flow tries to credit the card: the call must be refused, because the run was abandoned.
    let card = TestCard::default();
    let limits = Limits {
        wall_ms_max: 100,
        watchdog_grace_ms: 50,
        ..test_limits()
    };
    let started = Instant::now();
    let result = run_body_with(
        "card.block_ms(600) card.credit(100) return {}",
        &card,
        limits,
        RunContext::new("stuck"),
    );
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(ScriptError::Watchdog { wall_ms_max: 100 })),
        "{result:?}"
    );
    assert!(elapsed < HANG_GUARD, "watchdog took {elapsed:?}");
    // Let the stuck thread wake up and try its credit: refused, through the shared flag.
    let refused = card.wait_for_refusal(Duration::from_secs(10));
    assert!(
        refused.iter().any(|r| r.contains("watchdog")),
        "{refused:?}"
    );
    assert!(
        card.credits().is_empty(),
        "a failed-closed run reached the card"
    );
    assert!(
        card.credits().is_empty(),
        "a failed-closed run reached the card"
    );
}

#[test]
fn the_watchdog_gives_up_on_slow_c_code_at_the_deadline() {
    // With the pattern estimate switched off, a backtracking find runs in C where the hook never
    // fires. The run's owner must still hear at the deadline (+ grace) that the run is given up
    // on, while the C call finishes on its own; the run's outcome is then the watchdog's, and
    // its credit after the find is refused.
    let limits = Limits {
        wall_ms_max: 100,
        watchdog_grace_ms: 50,
        pattern_steps_max: u64::MAX,
        ..test_limits()
    };
    let card = TestCard::default();
    let (told, given_up) = std::sync::mpsc::channel();
    let started = Instant::now();
    let ctx = RunContext::new("slow-c").on_given_up(move |error| {
        let _ = told.send((started.elapsed(), error));
    });
    let result = run_body_with(
        "local s = (\"a\"):rep(170) local r = { s:find(\".-.-.-b\") } card.credit(1) return r",
        &card,
        limits,
        ctx,
    );
    let returned = started.elapsed();
    let (at, error) = given_up
        .recv_timeout(Duration::from_secs(60))
        .expect("the watchdog gave up on the run");
    assert!(matches!(error, ScriptError::Watchdog { .. }), "{error:?}");
    assert!(at < HANG_GUARD, "watchdog took {at:?}");
    assert!(
        at <= returned,
        "told at {at:?}, after the run returned at {returned:?}"
    );
    assert!(
        matches!(result, Err(ScriptError::Watchdog { .. })),
        "{result:?}"
    );
    assert!(card.credits().is_empty(), "a given-up run reached the card");
}

#[test]
fn cancellation_stops_lua_and_blocked_calls() {
    for body in [
        "while true do end",
        "card.block_ms(2000) card.credit(1) return {}",
    ] {
        let card = TestCard::default();
        let (told, given_up) = std::sync::mpsc::channel();
        let ctx = RunContext::new("cancel").on_given_up(move |error| {
            let _ = told.send((Instant::now(), error));
        });
        let handle = ctx.cancel_handle();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            handle.cancel()
        });
        let limits = Limits {
            instructions_max: u64::MAX,
            ..test_limits()
        };
        let started = Instant::now();
        let result = run_body_with(body, &card, limits, ctx);
        assert!(
            matches!(result, Err(ScriptError::Cancelled)),
            "{body}: {result:?}"
        );
        assert!(
            started.elapsed() < HANG_GUARD,
            "{body}: {:?}",
            started.elapsed()
        );
        assert!(canceller.join().unwrap());
        let returned = Instant::now();
        if body.contains("block_ms") {
            // Stuck in a call: the owner heard after the grace, before the call came back.
            let (at, error) = given_up
                .recv_timeout(Duration::from_secs(10))
                .expect("the watchdog gave up on the cancelled run");
            assert!(matches!(error, ScriptError::Cancelled), "{error:?}");
            assert!(at < returned, "told only when the run returned");
        }
        if body.contains("credit") {
            let refused = card.wait_for_refusal(Duration::from_secs(10));
            assert!(
                refused.iter().any(|r| r.contains("cancelled")),
                "{refused:?}"
            );
        }
        assert!(card.credits().is_empty());
    }
}

#[test]
fn a_runaway_loop_is_stopped_by_its_wall_time_budget() {
    let limits = Limits {
        wall_ms_max: 200,
        instructions_max: u64::MAX,
        ..Limits::default()
    };
    let started = Instant::now();
    let result = run_body_with(
        "while true do end",
        &TestCard::default(),
        limits,
        RunContext::new("wall"),
    );
    let elapsed = started.elapsed();
    println!(
        "runaway loop with wall_ms_max = 200 stopped after {} ms",
        elapsed.as_millis()
    );
    assert!(
        matches!(result, Err(ScriptError::WallTime { wall_ms_max: 200 })),
        "{result:?}"
    );
    assert!(elapsed < HANG_GUARD, "stopped after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(200),
        "stopped early: {elapsed:?}"
    );
}

#[test]
fn measure_instruction_rate_and_sandbox_cost() {
    for (what, body) in [
        ("while true do end", "while true do end"),
        (
            "local i = 0 while true do i = i + 1 end",
            "local i = 0 while true do i = i + 1 end",
        ),
    ] {
        let limits = Limits {
            instructions_max: 20_000_000,
            wall_ms_max: 60_000,
            ..Limits::default()
        };
        let started = Instant::now();
        let result = run_body_with(body, &TestCard::default(), limits, RunContext::new("rate"));
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(ScriptError::Instructions { .. })),
            "{result:?}"
        );
        println!(
            "instruction rate ({what}): {:.0} M instructions/s (20 M in {} ms)",
            20.0 / elapsed.as_secs_f64(),
            elapsed.as_millis()
        );
    }
    let rounds: u32 = 200;
    let ctx = RunContext::new("cost");
    let started = Instant::now();
    for _ in 0..rounds {
        let sandbox = Sandbox::new(&Limits::default(), &ctx).unwrap();
        drop(sandbox);
    }
    println!(
        "sandbox creation: {} µs each (average of {rounds})",
        started.elapsed().as_micros() / u128::from(rounds)
    );
    let started = Instant::now();
    for _ in 0..rounds {
        run_chunk(
            "x.lua",
            "return 1",
            &[],
            Limits::default(),
            RunContext::new("c"),
        )
        .unwrap();
    }
    println!(
        "whole run of `return 1` (sandbox, thread, result): {} µs each (average of {rounds})",
        started.elapsed().as_micros() / u128::from(rounds)
    );
}

#[test]
fn pattern_estimate_calibration() {
    // Prints how long patterns near the limit actually take, for the report; asserts only that
    // the default limit refuses the catastrophic case and admits ordinary ones.
    let limits = Limits {
        instructions_max: u64::MAX,
        wall_ms_max: 60_000,
        ..Limits::default()
    };
    for (subject, pattern) in [
        (2000usize, "a-b"),
        (3000, "a-b"),
        (300, ".-.-b"),
        (150, ".-.-.-b"),
        (60, ".-.-.-.-b"),
    ] {
        let est = cardd_script::sandbox::pattern_steps_estimate(subject, pattern.as_bytes(), true);
        let src = format!("local s = (\"a\"):rep({subject}) return {{ s:find(\"{pattern}\") }}");
        let started = Instant::now();
        let result = run_chunk("p.lua", &src, &[], limits.clone(), RunContext::new("p"));
        println!(
            "pattern {pattern:?} on {subject} bytes: estimate {est:.2e} steps, {} ({} ms)",
            if result.is_ok() { "ran" } else { "refused" },
            started.elapsed().as_millis()
        );
    }
    let ok = run_chunk(
        "p.lua",
        "return { (\"12.34\"):match(\"^(%d+)%.(%d%d)$\") }",
        &[],
        limits.clone(),
        RunContext::new("p"),
    );
    assert_eq!(ok.unwrap(), serde_json::json!(["12", "34"]));
    let ok = run_chunk(
        "p.lua",
        "return { ((\" a \"):rep(500)):gsub(\"%s+\", \"\") }",
        &[],
        limits,
        RunContext::new("p"),
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn results_are_bounded_and_integral() {
    for (body, needle) in [
        ("return 42", "return a table"),
        ("return nil", "returned nothing"),
        ("return { amount = 0.1 }", "non-integer"),
        ("return { f = function() end }", "function"),
        (
            "local t = {} for i = 1, 100000 do t[i] = i end return t",
            "larger than",
        ),
        (
            "local t = {} for i = 1, 1000 do t = {t} end return t",
            "deeper",
        ),
        ("local t = {} t.t = t return t", "deeper"),
    ] {
        let result = run_body(body);
        match &result {
            Err(ScriptError::BadReturn { reason }) if reason.contains(needle) => {}
            other => panic!("{body}: {other:?}"),
        }
    }
    assert_eq!(
        run_body("return { n = 10 // 3, m = 10 / 2 }").unwrap(),
        serde_json::json!({"n": 3, "m": 5})
    );
}

#[test]
fn runtime_errors_keep_a_bounded_message_and_traceback() {
    match run_body("local function inner() error(\"boom \" .. string.rep(\"x\", 5000)) end inner()")
    {
        Err(ScriptError::Runtime { message, traceback }) => {
            assert!(message.starts_with("test.lua:4: boom"), "{message}");
            assert!(message.len() <= cardd_script::error::ERROR_MESSAGE_BYTES_MAX);
            assert!(traceback.contains("stack traceback"), "{traceback}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn params_are_refused_for_another_definition() {
    let a =
        Arc::new(FlowDefinition::from_source("a.lua", &common::flow_source("return {}")).unwrap());
    let b = Arc::new(
        FlowDefinition::from_source("b.lua", &common::flow_source("return { changed = true }"))
            .unwrap(),
    );
    let params = a.validate_params(&serde_json::Value::Null).unwrap();
    let result = cardd_script::run_flow(b, params, &[], test_limits(), RunContext::new("x"));
    assert!(
        matches!(result, Err(ScriptError::Refused { .. })),
        "{result:?}"
    );
}

fn tempdir(tag: &str) -> std::path::PathBuf {
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

/// Runs of one flow version load its bytecode into states built ahead of time: each state serves
/// one run, so nothing one run changes reaches the next, and each run gets its own seed.
#[test]
fn runs_of_one_version_share_no_state() {
    let source = flow_source(
        "local seen = { leaked = leaked, rep = (\"x\"):rep(2), upper = string.upper and \"kept\",\n\
         r = math.random(1, 1000000) }\n\
         leaked = \"yes\" getmetatable(\"\").__index.rep = nil string.upper = nil\n\
         return seen",
    );
    let def = Arc::new(FlowDefinition::from_source("test.lua", &source).unwrap());
    let mut draws = Vec::new();
    for i in 0..6 {
        if i > 0 {
            wait_for_prebuilt(&def);
        }
        let card = TestCard::default();
        let got = run_def(&def, &card, RunContext::new(format!("share-{}", i % 2))).unwrap();
        assert_eq!(got["rep"], "xx", "run {i}: {got}");
        assert_eq!(got["upper"], "kept", "run {i}: {got}");
        assert!(got.get("leaked").is_none(), "run {i}: {got}");
        draws.push(got["r"].clone());
        assert!(def.ready_states() <= PREBUILT_STATES_PER_FLOW);
    }
    // The seed follows the run id, whether the state was built before or during the run.
    for pair in draws.chunks(2).collect::<Vec<_>>().windows(2) {
        assert_eq!(pair[0], pair[1], "{draws:?}");
    }
}

/// A flow's bytecode keeps its debug information: errors name the file and line of the source.
#[test]
fn errors_from_loaded_bytecode_name_the_source_line() {
    let def = Arc::new(
        FlowDefinition::from_source("lines.lua", &flow_source("local x = 1\nerror(\"boom\")"))
            .unwrap(),
    );
    for i in 0..3 {
        if i > 0 {
            wait_for_prebuilt(&def);
        }
        let err = run_def(&def, &TestCard::default(), RunContext::new("l")).unwrap_err();
        // The body starts on the flow table's fourth line.
        assert!(err.to_string().contains("lines.lua:5: boom"), "{err}");
    }
}
