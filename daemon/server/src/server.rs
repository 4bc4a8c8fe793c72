//! `run(config, listener, shutdown)`: the daemon's entry point, bounded everywhere, with graceful drain.
