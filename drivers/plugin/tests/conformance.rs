//! The example Python plugin, driven through the plugin driver, passes the driver conformance
//! kit, its simulated card driven through the plugin's test hooks (PROTOCOL.md §12): what holds
//! for the built-in drivers holds for a reader behind a child process too.

mod common;

use std::sync::Arc;

use cardd_conformance::{run, Arranged, Harness, CHECKS};
use cardd_reader::ReaderFactory;
use common::TestPlugin;

struct PluginHarness {
    plugin: TestPlugin,
}

impl PluginHarness {
    fn hook(&self, command: &str) -> Result<(), String> {
        self.plugin.try_control(command).map_err(|e| e.to_string())
    }
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
    fn remove_card(&mut self) -> Result<(), String> {
        self.hook("remove")
    }
    fn insert_card(&mut self) -> Result<(), String> {
        self.hook("insert")
    }
    fn remove_during_next_command(&mut self) -> Result<Arranged, String> {
        self.hook("remove_during_next").map(|()| Arranged::Yes)
    }
    fn silence_next_command(&mut self) -> Result<Arranged, String> {
        self.hook("silent_next").map(|()| Arranged::Yes)
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
    let report = run(&mut harness)
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    assert!(report.skipped().is_empty(), "{report:?}");
    assert_eq!(report.passed(), CHECKS, "{report:?}");
    let status = harness.plugin.factory.status();
    assert_eq!(
        status.stats.starts, 1,
        "no restart during the kit: {status:?}"
    );
    assert_eq!(status.stats.malformed_messages, 0, "{status:?}");
}
