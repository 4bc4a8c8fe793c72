//! The built-in drivers, by name.
//!
//! The daemon instantiates readers from configuration through this registry. Adding a driver is
//! one crate under `drivers/` plus one `register` line here (see `docs/driver-guide.md`).
#![forbid(unsafe_code)]

use cardd_reader::DriverRegistry;

/// Every driver compiled into cardd.
pub fn registry() -> DriverRegistry {
    let mut registry = DriverRegistry::new();
    registry.register(&cardd_sim::SIM_DRIVER);
    registry.register(&cardd_pcsc::PCSC_DRIVER);
    registry.register(&cardd_serial::SERIAL_DRIVER);
    registry.register(&cardd_plugin::PLUGIN_DRIVER);
    registry.register(&cardd_replay::REPLAY_DRIVER);
    registry
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_simulated_driver_is_registered() {
        let registry = super::registry();
        assert_eq!(
            registry.names(),
            ["pcsc", "plugin", "replay", "serial", "sim"]
        );
        assert!(registry.get("sim").is_some_and(|d| !d.summary().is_empty()));
    }
}
