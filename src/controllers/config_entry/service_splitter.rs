//! ServiceSplitter ↔ Consul `service-splitter`: field by field; header names under
//! add/set are the user's. Splits need protocol http (service-defaults or
//! proxy-defaults) and the resolver subsets they name.
use crate::resources::ServiceSplitter;

super::field_mapped_kind!(ServiceSplitter, consul: "service-splitter", controller: "servicesplitter",
    depends_on: ["service-defaults", "proxy-defaults", "service-resolver"], user_keys: ["add", "set"], opaque: []);
