//! ServiceResolver ↔ Consul `service-resolver`: field by field; subset names and
//! failover keys are the user's. Consul refuses dropping a subset that a router or
//! splitter still names, so their changes retry it.
use crate::resources::ServiceResolver;

super::field_mapped_kind!(ServiceResolver, consul: "service-resolver", controller: "serviceresolver",
    depends_on: ["service-router", "service-splitter"], user_keys: ["subsets", "failover"], opaque: []);
