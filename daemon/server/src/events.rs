//! The event bus: reader and card events to WebSocket subscribers and to polling clients.
