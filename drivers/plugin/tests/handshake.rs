//! Starting a plugin: the `hello` handshake, version negotiation, and plugins that cannot start.
//!
//! A plugin that cannot start (no such program, a plugin built for another protocol version, no
//! `hello` in time, an early exit) takes only its own readers offline: the driver instance is
//! still built, the failure is reported with what to do, and the plugin is retried with backoff.
//! Nothing is left running when the driver instance is dropped.

mod common;

use std::time::{Duration, Instant};

use cardd_plugin::{PluginError, PluginFactory, PluginOptions, PluginState, PLUGIN_DRIVER};
use cardd_reader::{
    Driver, DriverOptions, ReaderError, ReaderFactory, Supervised, SupervisedState,
};
use common::{example_options, python3, ScratchDir, TestPlugin, EXAMPLE_PLUGIN};

#[test]
fn the_handshake_reports_the_plugin_and_lists_its_reader() {
    let plugin = TestPlugin::start("hs");
    let status = plugin.factory.status();
    assert_eq!(status.state, PluginState::Running, "{status:?}");
    assert_eq!(status.plugin_name.as_deref(), Some("example"));
    assert_eq!(status.plugin_version.as_deref(), Some("1.0.0"));
    assert_eq!(
        status.protocol.as_deref(),
        Some(cardd_plugin::PROTOCOL_VERSION)
    );
    assert_eq!(status.last_error, None);
    // The example announces its test hooks, and cardd knows how to use them.
    assert_eq!(plugin.factory.features(), ["test_hooks"]);
    assert!(plugin
        .factory
        .has_feature(cardd_plugin::protocol::feature::TEST_HOOKS));
    assert_eq!(plugin.factory.plugin_reader_id("plugin:hs:r1"), Some("r1"));
    assert_eq!(plugin.factory.plugin_reader_id("plugin:other:r1"), None);
    let readers = plugin.factory.list().unwrap();
    assert_eq!(readers.len(), 1, "{readers:?}");
    let reader = &readers[0];
    assert_eq!(reader.id, "plugin:hs:r1");
    assert_eq!(reader.name, "Example plugin reader");
    assert_eq!(reader.driver, "plugin");
    assert!(reader.capabilities.contact && reader.capabilities.events);
    assert!(!reader.capabilities.contactless && !reader.capabilities.obu_channel);
}

#[test]
fn the_registry_descriptor_parses_options_and_rejects_unknown_keys() {
    assert_eq!(PLUGIN_DRIVER.name(), "plugin");
    let dir = ScratchDir::new();
    let options = serde_json::to_value(example_options("reg", &dir)).unwrap();
    let factory = PLUGIN_DRIVER
        .instantiate(&DriverOptions::new("plugin", options))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(factory.driver(), "plugin");
    assert_eq!(factory.list().unwrap()[0].id, "plugin:reg:r1");

    let typo = serde_json::json!({"name": "x", "command": "python3", "hello_timeout": 5});
    let err = PLUGIN_DRIVER
        .instantiate(&DriverOptions::new("plugin", typo))
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown field `hello_timeout`"),
        "{err}"
    );
    let bad_name = serde_json::json!({"name": "a:b", "command": "python3"});
    let err = PLUGIN_DRIVER
        .instantiate(&DriverOptions::new("plugin", bad_name))
        .unwrap_err();
    assert!(matches!(err, ReaderError::Config { .. }), "{err}");
}

#[test]
fn a_plugin_speaking_another_version_is_a_clear_error() {
    let dir = ScratchDir::new();
    let mut options = example_options("v99", &dir);
    options
        .args
        .extend(["--protocol".into(), "cardd-plugin/99".into()]);
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    let err = failed_start(&factory);
    let text = err.to_string();
    assert!(
        matches!(err, PluginError::VersionMismatch { .. }),
        "{err:?}"
    );
    assert!(
        text.contains("speaks cardd-plugin/99, but cardd speaks cardd-plugin/1"),
        "{text}"
    );
    assert!(
        text.contains("install a plugin built for cardd-plugin/1"),
        "{text}"
    );
}

#[test]
fn a_plugin_answering_with_a_version_cardd_did_not_offer_is_refused() {
    let dir = ScratchDir::new();
    let mut options = example_options("v2", &dir);
    options
        .args
        .extend(["--answer-protocol".into(), "cardd-plugin/2".into()]);
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    let err = failed_start(&factory);
    assert!(
        err.to_string()
            .contains("speaks cardd-plugin/2, but cardd speaks"),
        "{err}"
    );
}

/// The start failure of a plugin that cannot start: no readers, state `failed`, retried.
fn failed_start(factory: &PluginFactory) -> PluginError {
    assert!(factory.list().unwrap().is_empty());
    let status = Supervised::status(factory);
    assert_eq!(status.state, SupervisedState::Failed, "{status:?}");
    factory.status().last_error.expect("the failure is kept")
}

#[test]
fn a_missing_program_takes_only_its_readers_offline_and_is_retried() {
    let mut options = PluginOptions::new("missing", "/nonexistent/cardd-plugin");
    options.restart_backoff_initial_ms = 20;
    options.restart_backoff_max_ms = 100;
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_millis(common::WAIT_MS_MAX);
    while factory.status().stats.handshake_failures < 3 {
        assert!(Instant::now() < deadline, "{:?}", factory.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = failed_start(&factory);
    assert!(err.is_permanent(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("cannot start plugin missing"), "{text}");
    assert!(text.contains("check the `command` option"), "{text}");
    let status = Supervised::status(&factory);
    assert!(status.restarts >= 2, "{status:?}");
    assert!(status
        .last_error
        .unwrap()
        .contains("/nonexistent/cardd-plugin"));
}

#[test]
fn a_plugin_that_dies_at_start_does_not_stop_cardd_and_is_retried() {
    let mut options = PluginOptions::new("dies", python3());
    options.args = vec!["-c".into(), "import sys; sys.exit(3)".into()];
    options.restart_backoff_initial_ms = 50;
    options.restart_backoff_max_ms = 200;
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    assert!(factory.list().unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_millis(common::WAIT_MS_MAX);
    while factory.status().stats.starts < 3 {
        assert!(Instant::now() < deadline, "{:?}", factory.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = factory.status();
    assert!(
        matches!(status.last_error, Some(PluginError::Exited { ref status, .. }) if status.contains('3')),
        "{status:?}"
    );
    assert!(status.stats.handshake_failures >= 2, "{status:?}");
    let dropped = Instant::now();
    drop(factory);
    assert!(dropped.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_plugin_that_never_says_hello_is_bounded_and_killed() {
    let dir = ScratchDir::new();
    let marker = dir.0.join("alive");
    let mut options = PluginOptions::new("mute", python3());
    // Reads nothing, answers nothing, and touches a file until it is killed.
    let script = format!(
        "import time, pathlib\nwhile True:\n    pathlib.Path({:?}).touch()\n    time.sleep(0.05)\n",
        marker.display().to_string()
    );
    options.args = vec!["-c".into(), script];
    options.hello_timeout_ms = 300;
    options.request_timeout_grace_ms = 100;
    options.restart_backoff_initial_ms = 5_000;
    let started = Instant::now();
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let status = factory.status();
    match &status.last_error {
        Some(e @ PluginError::HelloTimeout { waited_ms: 400, .. }) => {
            // The log and the status say what to do about it.
            let text = e.to_string();
            assert!(text.contains("reader_added"), "{text}");
            assert!(text.contains("hello_timeout_ms"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status.stats.hangs, 1, "{status:?}");
    let status = Supervised::status(&factory);
    assert_eq!(status.state, SupervisedState::Backoff, "{status:?}");
    assert_eq!(status.backoff_ms, 5_000, "{status:?}");
    drop(factory);
    // The process is gone: the file stops being touched.
    let _ = std::fs::remove_file(&marker);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !marker.exists(),
        "the unresponsive plugin survived its driver"
    );
}

#[test]
fn the_example_plugin_is_where_the_tests_expect_it() {
    assert!(std::path::Path::new(EXAMPLE_PLUGIN).is_file());
}

/// A plugin that answers hello with the features cardd announced, then lists one reader.
const ECHO_FEATURES: &str = r#"
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    if request["method"] == "hello":
        features = request["params"].get("features")
        result = {"protocol": "cardd-plugin/1", "name": "echo", "features": features}
    elif request["method"] == "list":
        result = {"readers": [{"id": "r1"}]}
    else:
        result = {}
    sys.stdout.write(json.dumps({"id": request["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

#[test]
fn hello_carries_features_both_ways() {
    let mut options = PluginOptions::new("echo", python3());
    options.args = vec!["-c".into(), ECHO_FEATURES.into()];
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(factory.status().state, PluginState::Running);
    // What cardd announced came back as what the plugin supports.
    assert_eq!(
        factory.features(),
        cardd_plugin::protocol::HOST_FEATURES,
        "{:?}",
        factory.status()
    );
}

#[test]
fn a_plugin_without_the_test_hooks_feature_is_never_sent_them() {
    // The template as shipped for real readers: test_hooks.py deleted.
    let dir = ScratchDir::new();
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("template");
    for file in ["plugin.py", "cardd_plugin.py", "sdk_stub.py"] {
        std::fs::copy(template.join(file), dir.0.join(file)).unwrap();
    }
    let mut options = PluginOptions::new("real", python3());
    options.args = vec![dir.0.join("plugin.py").display().to_string()];
    options.hello_timeout_ms = 10_000;
    let factory = PluginFactory::new(options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(factory.list().unwrap().len(), 1, "{:?}", factory.status());
    assert!(factory.features().is_empty());
    let err = factory
        .test_hook(
            cardd_plugin::protocol::test_method::REMOVE_CARD,
            serde_json::json!({"reader": "r1"}),
        )
        .unwrap_err();
    assert!(matches!(err, ReaderError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("test_hooks"), "{err}");
    // Nothing reached the plugin, which is still up and was never confused.
    let status = factory.status();
    assert_eq!(
        (status.stats.starts, status.stats.malformed_messages),
        (1, 0)
    );
}
