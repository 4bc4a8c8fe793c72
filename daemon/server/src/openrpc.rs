//! The OpenRPC document, generated from the method catalogue.
