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

/// The result of a method that only says it was done: `ok` and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Done {
    pub ok: bool,
    /// A message to show the operator.
    pub message: String,
}

/// A subscription of the API (WebSocket only): the method that subscribes, the one that
/// unsubscribes, the notification method and what each notification carries.
pub trait Subscription {
    /// The subscribing method, e.g. `"events.subscribe"`.
    const NAME: &'static str;
    /// The notification method, e.g. `"events.event"`.
    const NOTIFICATION: &'static str;
    /// The unsubscribing method, e.g. `"events.unsubscribe"`.
    const UNSUBSCRIBE: &'static str;
    /// The params of the subscribing method.
    type Params: Serialize + DeserializeOwned + JsonSchema;
    /// One notification.
    type Item: Serialize + DeserializeOwned + JsonSchema;
}

/// Declares a [`Subscription`]:
/// `subscription!(Events, "events.subscribe", "events.event", "events.unsubscribe", NoParams => Event);`
#[macro_export]
macro_rules! subscription {
    ($(#[$meta:meta])* $name:ident, $wire:literal, $notification:literal, $unsubscribe:literal, $params:ty => $item:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl $crate::method::Subscription for $name {
            const NAME: &'static str = $wire;
            const NOTIFICATION: &'static str = $notification;
            const UNSUBSCRIBE: &'static str = $unsubscribe;
            type Params = $params;
            type Item = $item;
        }
    };
}

/// Leaves a secret-bearing params type out of debug output: `Name(..)`.
macro_rules! redacted_debug {
    ($t:ty, $name:literal) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!($name, "(..)"))
            }
        }
    };
}
pub(crate) use redacted_debug;
