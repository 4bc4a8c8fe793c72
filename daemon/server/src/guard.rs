//! The HTTP guard in front of JSON-RPC: Host and Origin allow-lists, CORS, private-network preflight, /health, token extraction, per-connection rate limits.
