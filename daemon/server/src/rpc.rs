//! The JSON-RPC methods: registration, role checks, audit.
