//! Snapshot storage: where a `ConsulSnapshot` lives ([`location`]) and how its bytes
//! are written, verified and read back, streamed ([`store`]). The controllers that use
//! it are `controllers::snapshot` and `controllers::snapshot_schedule`.
pub mod location;
pub mod store;

pub use location::{Location, LocationError};
pub use store::{SnapshotFile, StoreArgs, StoreError, Verified, Written};
