//! ExportedServices ↔ Consul `exported-services` (named after the partition: `default`
//! on Consul CE): field by field.
use crate::resources::ExportedServices;

super::field_mapped_kind!(ExportedServices, consul: "exported-services", controller: "exportedservices",
    depends_on: [], user_keys: [], opaque: [], name: "default");
