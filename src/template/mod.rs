//! The template engine shared by the ConfigTemplate controller and `concord render`:
//! Handlebars with consul-template-style helpers ([`engine`]), the dependencies a render
//! read and the data fetched for them ([`deps`]), where that data comes from
//! ([`source`]: a trait, Consul at the edge), and the watcher that re-renders on change
//! with `wait` quiescence ([`watch`], [`quiescence`]).
//!
//! Helpers: `key`, `keyOrDefault`, `ls`, `tree`, `service` (passing instances; `tag="x"`,
//! `passing=false` for all), `services`, `toJSON`, `toJSONPretty`, `parseJSON`,
//! `base64Encode`, `base64Decode`, `join`, `split`, `indent`, `default`. Output is never
//! HTML-escaped. `key` is strict: a key that does not exist fails the render, naming the
//! key and the line; `keyOrDefault` is the optional form.
pub mod deps;
pub mod engine;
pub mod quiescence;
pub mod source;
pub mod watch;

pub use deps::{Data, Dependency, Snapshot};
pub use engine::{Engine, TemplateError};
pub use quiescence::Wait;
pub use source::{ConsulSource, DataSource};
pub use watch::{Rendered, WatchError, Watcher};

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of rendered bytes: the status hash and the rollout annotation value.
pub fn output_hash(output: &[u8]) -> String {
    let digest = Sha256::digest(output);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("sha256:{hex}")
}
