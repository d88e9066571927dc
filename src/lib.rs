//! concord: operates HashiCorp Consul on Kubernetes and keeps the two registries in sync.
//!
//! - [`resources`]: the concord.io/v1alpha1 types (CRDs are generated from them, [`crdgen`]).
//! - [`consul`]: the typed Consul HTTP client.
//! - [`cluster`]: which Consul an object talks to.
//! - [`controllers`]: one module per controller.
//! - [`runtime`]: the `concord controller` process (health, metrics, shutdown).
//! - [`snapshot`]: where Consul snapshots are stored (local volume, S3-compatible), streamed.
//! - [`template`]: the Handlebars engine of ConfigTemplate and [`render`] (`concord render`).
pub mod cluster;
pub mod consul;
pub mod controllers;
pub mod crdgen;
pub mod render;
pub mod resources;
pub mod runtime;
pub mod snapshot;
pub mod sync;
pub mod template;
