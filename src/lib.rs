//! concord: operates HashiCorp Consul on Kubernetes and keeps the two registries in sync.
//!
//! - [`resources`]: the concord.io/v1alpha1 types (CRDs are generated from them, [`crdgen`]).
//! - [`consul`]: the typed Consul HTTP client.
//! - [`cluster`]: which Consul an object talks to, and where its ACL tokens are kept.
//! - [`context`]: what every controller shares (clients, flags, metrics, Events).
//! - [`sync`]: catalog sync, both directions.
//! - [`controllers`]: one module per controller; [`controllers::all`] lists them.
//! - [`runtime`]: the `concord controller` process (health, metrics, leader election,
//!   shutdown); it runs the controllers it is handed.
//! - [`snapshot`]: where Consul snapshots are stored (local volume, S3-compatible), streamed.
//! - [`template`]: the Handlebars engine of ConfigTemplate and [`render`] (`concord render`).
//!
//! Floors, from the bottom; a module never imports from a floor above it
//! (tests/layering.rs checks): `resources`, `consul` → `cluster`, `snapshot`, `crdgen` →
//! `context` → `sync`, `template` → `controllers` → `runtime`, `render` → `main`.
pub mod cluster;
pub mod consul;
pub mod context;
pub mod controllers;
pub mod crdgen;
pub mod render;
pub mod resources;
pub mod runtime;
pub mod snapshot;
pub mod sync;
pub mod template;
