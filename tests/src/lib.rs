//! End-to-end tests of cardd live in `tests/tests/`.
