//! ProxyDefaults ↔ Consul `proxy-defaults` (always `global`): field by field; `config`
//! is opaque and kept as written. Consul refuses a default protocol that an existing
//! router, splitter or L7 intention cannot use, so their changes retry it.
use crate::resources::ProxyDefaults;

super::field_mapped_kind!(ProxyDefaults, consul: "proxy-defaults", controller: "proxydefaults",
    depends_on: ["service-router", "service-splitter", "service-intentions"], user_keys: [], opaque: ["config"],
    name: "global");
