//! The one place where daemon errors become JSON-RPC errors.
