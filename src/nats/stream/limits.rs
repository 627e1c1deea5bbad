//! Limits both kinds convert alike: storage names, and the duplicate window a max age allows.

use std::time::Duration;

use async_nats::jetstream::stream;

use crate::settings::Storage;

/// NATS's default duplicate window (also Dapr's).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The stream storage of a `jetstreamkv.io/storage` setting.
pub fn storage_type(storage: Storage) -> stream::StorageType {
    match storage {
        Storage::File => stream::StorageType::File,
        Storage::Memory => stream::StorageType::Memory,
    }
}

/// The storage as the status and messages show it.
pub fn storage_name(s: stream::StorageType) -> &'static str {
    match s {
        stream::StorageType::File => "file",
        stream::StorageType::Memory => "memory",
    }
}

/// The duplicate window: NATS requires it to be no longer than the max age.
pub fn duplicate_window(max_age: Duration) -> Duration {
    if max_age > Duration::ZERO && max_age < DUPLICATE_WINDOW {
        max_age
    } else {
        DUPLICATE_WINDOW
    }
}
