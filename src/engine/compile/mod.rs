//! The compiler of one vendor's configuration, in passes:
//!
//! - [`policy`]: server and vendor settings within their bounds, credentials present, and an
//!   operation's effect, identity and cache consistent with its route;
//! - [`request`]: the request and its signing steps (shared by operations and token
//!   endpoints), names resolved through a [`scope::OpScope`];
//! - [`response`]: the envelope, paging and field mapping.
//!
//! Each pass reports every mistake it finds, with its YAML location, into one [`Cx`];
//! `engine::plan` runs the passes and assembles the plan.
pub mod policy;
pub mod request;
pub mod response;
pub mod scope;

use super::extract::{Condition, JsonPath};
use super::template::{Scope, Template};
use crate::config::{ConditionConfig, ConfigError, LoadedConfig};

/// Where errors of one part of routes.yaml go.
pub struct Cx<'a> {
    pub loaded: &'a LoadedConfig,
    /// Dotted path of the part being compiled, e.g. `vendors.op.operations.list_coupons`.
    pub path: String,
    pub errors: Vec<ConfigError>,
}

impl<'a> Cx<'a> {
    pub fn new(loaded: &'a LoadedConfig, path: String) -> Cx<'a> {
        Cx {
            loaded,
            path,
            errors: Vec::new(),
        }
    }

    /// Records a mistake at `sub` below this part (`""` for the part itself).
    pub fn err(&mut self, sub: &str, message: impl Into<String>) {
        let path = match (self.path.is_empty(), sub.is_empty()) {
            (_, true) => self.path.clone(),
            (true, false) => sub.to_owned(),
            (false, false) => format!("{}.{sub}", self.path),
        };
        self.errors.push(self.loaded.error(&path, message));
    }

    pub fn template(&mut self, source: &str, scope: &dyn Scope, at: &str) -> Option<Template> {
        Template::compile(source, scope)
            .map_err(|e| self.err(at, e))
            .ok()
    }

    pub fn path(&mut self, source: &str, at: &str) -> Option<JsonPath> {
        JsonPath::compile(source).map_err(|e| self.err(at, e)).ok()
    }

    pub fn conditions(&mut self, list: &[ConditionConfig], at: &str) -> Vec<Condition> {
        list.iter()
            .enumerate()
            .filter_map(|(i, c)| {
                Condition::compile(&c.path, &c.one_of, c.present)
                    .map_err(|e| self.err(&format!("{at}.{i}"), e))
                    .ok()
            })
            .collect()
    }
}

/// `a, b, c`, or `none`.
pub fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
