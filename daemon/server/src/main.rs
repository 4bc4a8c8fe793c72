//! The `cardd` binary: parses the command line, sets up logging and runs the daemon.

fn main() {}
