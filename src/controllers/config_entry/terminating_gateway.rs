//! TerminatingGateway ↔ Consul `terminating-gateway` (named like the object): field by
//! field. Consul refuses a name an ingress gateway holds: its removal retries this one.
use crate::resources::TerminatingGateway;

super::field_mapped_kind!(TerminatingGateway, consul: "terminating-gateway", controller: "terminatinggateway",
    depends_on: ["ingress-gateway"], user_keys: [], opaque: []);
