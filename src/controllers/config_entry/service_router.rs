//! ServiceRouter ↔ Consul `service-router`: field by field; header names under
//! add/set are the user's. Routes need protocol http (service-defaults or
//! proxy-defaults) and the resolver subsets they name.
use crate::resources::ServiceRouter;

super::field_mapped_kind!(ServiceRouter, consul: "service-router", controller: "servicerouter",
    depends_on: ["service-defaults", "proxy-defaults", "service-resolver"], user_keys: ["add", "set"], opaque: []);
