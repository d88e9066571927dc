//! IngressGateway ↔ Consul `ingress-gateway` (named like the object): field by field.
//! An HTTP-like listener needs its services' protocol from service-defaults or
//! proxy-defaults: a change there retries a refused gateway; so does the removal of a
//! terminating gateway that held the name.
use crate::resources::IngressGateway;

super::field_mapped_kind!(IngressGateway, consul: "ingress-gateway", controller: "ingressgateway",
    depends_on: ["service-defaults", "proxy-defaults", "terminating-gateway"], user_keys: ["add", "set"], opaque: []);
