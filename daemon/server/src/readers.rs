//! The reader manager: drivers from configuration, one worker thread per reader, leases, card summaries.
