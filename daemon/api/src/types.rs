//! Request and response types of the JSON-RPC API (filled in by the daemon issue).
