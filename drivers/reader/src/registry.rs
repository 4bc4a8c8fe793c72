//! Instantiating drivers by name from configuration.
//!
//! A [`Driver`] is a static descriptor: a name, a one-line summary and a constructor that turns
//! the driver's configuration table into a [`ReaderFactory`]. A [`DriverRegistry`] maps names to
//! descriptors; the `cardd-drivers` crate builds the registry of built-in drivers, so adding a
//! driver is one crate plus one line there.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::ReaderError;
use crate::reader::ReaderFactory;

/// A driver's configuration table, as the daemon's configuration file gives it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriverOptions {
    driver: String,
    value: serde_json::Value,
}

impl DriverOptions {
    /// Options for `driver` from a JSON value (the daemon converts its TOML table).
    pub fn new(driver: impl Into<String>, value: serde_json::Value) -> Self {
        DriverOptions {
            driver: driver.into(),
            value,
        }
    }

    /// Empty options for `driver`.
    pub fn empty(driver: impl Into<String>) -> Self {
        DriverOptions::new(driver, serde_json::Value::Object(Default::default()))
    }

    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    /// Deserializes the options into the driver's own typed configuration. Drivers should use
    /// `#[serde(deny_unknown_fields)]` so that a typo is an error, not a silent default.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ReaderError> {
        let value = if self.value.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            self.value.clone()
        };
        serde_json::from_value(value).map_err(|e| ReaderError::Config {
            driver: self.driver.clone(),
            detail: e.to_string(),
        })
    }
}

/// A driver as the registry knows it.
pub trait Driver: Send + Sync {
    /// The name configuration uses (`driver = "sim"`).
    fn name(&self) -> &'static str;
    /// One line for listings and docs.
    fn summary(&self) -> &'static str;
    /// Builds a configured instance.
    fn instantiate(&self, options: &DriverOptions) -> Result<Arc<dyn ReaderFactory>, ReaderError>;
    /// Checks `options` as [`Driver::instantiate`] would, without opening a device, starting a
    /// process or creating a file (`cardd check-config`). An error is what `instantiate` would
    /// refuse; the strings returned are warnings: what may be fine but deserves a look (a serial
    /// port that is not there now, a plugin program that is missing). A driver that cannot check
    /// without starting says so as a warning (the default).
    fn check(&self, options: &DriverOptions) -> Result<Vec<String>, ReaderError> {
        let _ = options;
        Ok(vec![format!(
            "the {} driver cannot check its options without starting; cardd checks them when it \
             starts",
            self.name()
        )])
    }
}

/// Drivers by name.
#[derive(Default)]
pub struct DriverRegistry {
    drivers: BTreeMap<&'static str, &'static dyn Driver>,
}

impl fmt::Debug for DriverRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.drivers.keys()).finish()
    }
}

impl DriverRegistry {
    pub fn new() -> Self {
        DriverRegistry::default()
    }

    /// Adds a driver. A second driver with the same name replaces the first, so a test can
    /// substitute its own.
    pub fn register(&mut self, driver: &'static dyn Driver) -> &mut Self {
        self.drivers.insert(driver.name(), driver);
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.drivers.keys().copied().collect()
    }

    /// The descriptor for `name`.
    pub fn get(&self, name: &str) -> Option<&'static dyn Driver> {
        self.drivers.get(name).copied()
    }

    /// Instantiates the driver `name` with `options`.
    pub fn instantiate(
        &self,
        name: &str,
        options: &DriverOptions,
    ) -> Result<Arc<dyn ReaderFactory>, ReaderError> {
        match self.get(name) {
            Some(driver) => driver.instantiate(options),
            None => Err(ReaderError::Config {
                driver: name.to_owned(),
                detail: format!("no such driver; known drivers: {}", self.names().join(", ")),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{CardReader, ReaderInfo, ReaderSelector};

    #[derive(Debug)]
    struct Empty;
    impl ReaderFactory for Empty {
        fn driver(&self) -> &str {
            "empty"
        }
        fn list(&self) -> Result<Vec<ReaderInfo>, ReaderError> {
            Ok(vec![])
        }
        fn open(&self, selector: &ReaderSelector) -> Result<Box<dyn CardReader>, ReaderError> {
            Err(ReaderError::NotFound {
                selector: selector.to_string(),
            })
        }
    }

    struct EmptyDriver;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct EmptyOptions {
        #[serde(default)]
        verbose: bool,
    }
    impl Driver for EmptyDriver {
        fn name(&self) -> &'static str {
            "empty"
        }
        fn summary(&self) -> &'static str {
            "a driver with no readers"
        }
        fn instantiate(
            &self,
            options: &DriverOptions,
        ) -> Result<Arc<dyn ReaderFactory>, ReaderError> {
            let _: EmptyOptions = options.parse()?;
            Ok(Arc::new(Empty))
        }
    }
    static EMPTY: EmptyDriver = EmptyDriver;

    #[test]
    fn instantiates_by_name_and_rejects_unknown_names_and_keys() {
        let mut reg = DriverRegistry::new();
        reg.register(&EMPTY);
        assert_eq!(reg.names(), ["empty"]);
        let f = reg
            .instantiate("empty", &DriverOptions::empty("empty"))
            .unwrap();
        assert!(f.list().unwrap().is_empty());
        let err = reg
            .instantiate("nope", &DriverOptions::empty("nope"))
            .unwrap_err();
        assert!(err.to_string().contains("known drivers: empty"), "{err}");
        let bad = DriverOptions::new("empty", serde_json::json!({"verbos": true}));
        let err = reg.instantiate("empty", &bad).unwrap_err();
        assert!(err.to_string().contains("unknown field `verbos`"), "{err}");
    }
}
