//! Mesh ↔ Consul `mesh` (always `mesh`): field by field.
use crate::resources::Mesh;

super::field_mapped_kind!(Mesh, consul: "mesh", controller: "mesh", depends_on: [], user_keys: [], opaque: [],
    name: "mesh");
