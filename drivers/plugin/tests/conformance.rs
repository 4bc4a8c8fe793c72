//! The example Python plugin, driven through the plugin driver, passes the driver conformance
//! kit: what holds for the built-in drivers holds for a reader behind a child process too.

// The tests drive the example plugin's test hooks over a Unix socket.
#![cfg(unix)]

mod common;

use std::sync::Arc;

use cardd_conformance::{run, Harness};
use cardd_reader::ReaderFactory;
use common::TestPlugin;

struct PluginHarness {
    plugin: TestPlugin,
}

impl Harness for PluginHarness {
    fn name(&self) -> String {
        "plugin (examples/example_plugin.py)".into()
    }
    fn factory(&self) -> Arc<dyn ReaderFactory> {
        self.plugin.dyn_factory()
    }
    fn reader_id(&self) -> String {
        self.plugin.reader_id()
    }
    fn remove_card(&mut self) {
        self.plugin.control("remove");
    }
    fn insert_card(&mut self) {
        self.plugin.control("insert");
    }
    fn remove_during_next_command(&mut self) -> bool {
        self.plugin.control("remove_during_next");
        true
    }
    fn silence_next_command(&mut self) -> bool {
        self.plugin.control("silent_next");
        true
    }
}

#[test]
fn the_example_plugin_conforms() {
    let mut harness = PluginHarness {
        plugin: TestPlugin::start("conf"),
    };
    // A busy machine may need the supervisor's retry to start the interpreter: the kit checks
    // a plugin that is up, so wait (bounded) for its reader to be listed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while harness.plugin.factory.status().readers == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the example plugin did not start: {:?}",
            harness.plugin.factory.status()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let report = run(&mut harness).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("conformance report: {report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.passed.len(), 8, "{report:?}");
    let status = harness.plugin.factory.status();
    assert_eq!(
        status.stats.starts, 1,
        "no restart during the kit: {status:?}"
    );
    assert_eq!(status.stats.malformed_messages, 0, "{status:?}");
}
