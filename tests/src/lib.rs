//! End-to-end tests of cardd live in `tests/it/` (one test binary, `it`).
