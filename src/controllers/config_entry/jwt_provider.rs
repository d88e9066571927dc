//! JWTProvider ↔ Consul `jwt-provider` (named like the object): field by field.
use crate::resources::JWTProvider;

super::field_mapped_kind!(JWTProvider, consul: "jwt-provider", controller: "jwtprovider",
    depends_on: [], user_keys: [], opaque: []);
