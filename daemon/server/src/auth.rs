//! Operators, password hashing, sessions with idle timeout, and login throttling.
