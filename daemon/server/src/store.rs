//! The daemon's sled database and the durable flush that closes sled's fsync gap.
