//! concord: operates HashiCorp Consul on Kubernetes and keeps the two registries in sync.
pub mod consul;
pub mod crdgen;
pub mod resources;
pub mod runtime;
