//! A JSON-RPC method as a type: its name, its params and its result, so that the daemon's
//! handlers and every Rust client (`cardctl`, tests, benchmarks) are compiled against the same
//! definition and cannot drift apart.
//!
//! Each method of the API has one unit type here or in its family's module
//! (`cardd_api::etc::Recharge`, …) implementing [`Method`]. A client calls
//! `client.call::<etc::Recharge>(&params)`; the daemon registers the handler under
//! [`Method::NAME`] and deserialises [`Method::Params`].

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One method of the API.
pub trait Method {
    /// The JSON-RPC method name, e.g. `"etc.recharge"`.
    const NAME: &'static str;
    /// The params object (by name). Methods without params use [`NoParams`].
    type Params: Serialize + DeserializeOwned + JsonSchema;
    /// The result.
    type Result: Serialize + DeserializeOwned + JsonSchema;
}

/// The params of a method that takes none: `{}` (or absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Declares a [`Method`]: `method!(Recharge, "etc.recharge", RechargeParams => RechargeRecordView);`
#[macro_export]
macro_rules! method {
    ($(#[$meta:meta])* $name:ident, $wire:literal, $params:ty => $result:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl $crate::method::Method for $name {
            const NAME: &'static str = $wire;
            type Params = $params;
            type Result = $result;
        }
    };
}
