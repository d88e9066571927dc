//! ServiceDefaults ↔ Consul `service-defaults`: field by field. Consul refuses a
//! protocol that an existing router, splitter or L7 intention cannot use, so their
//! changes (a removal) retry it.
use crate::resources::ServiceDefaults;

super::field_mapped_kind!(ServiceDefaults, consul: "service-defaults", controller: "servicedefaults",
    depends_on: ["service-router", "service-splitter", "service-intentions", "ingress-gateway"], user_keys: [], opaque: []);
