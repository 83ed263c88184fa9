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

/// Test support for the passes' tests: the shipped routes.yaml edited, compiled as `validate`
/// compiles it, and its errors looked up with their line.
#[cfg(test)]
pub(crate) mod edited {
    use crate::config::{ConfigError, load_str};
    use crate::engine::plan::{Credentials, Plan};

    /// The plan and its warnings, or every error.
    pub type Compiled = Result<(Plan, Vec<ConfigError>), Vec<ConfigError>>;

    pub const ROUTES: &str = include_str!("../../../routes.yaml");

    /// routes.yaml with each `from` replaced by its `to` once (each must be there, in the
    /// text edited so far): the text, and the plan with its warnings or every error.
    pub fn compile(edits: &[(&str, &str)]) -> (String, Compiled) {
        let mut text = ROUTES.to_owned();
        for (from, to) in edits {
            assert!(text.contains(from), "fixture text moved: {from}");
            text = text.replacen(from, to, 1);
        }
        let compiled = load_str("routes.yaml", &text, false)
            .and_then(|loaded| Plan::compile(&loaded, Credentials::Optional));
        (text, compiled)
    }

    /// The error at `path`, checked to be shown at the first line of `text` holding `needle`.
    pub fn error_at<'e>(
        errors: &'e [ConfigError],
        path: &str,
        text: &str,
        needle: &str,
    ) -> &'e ConfigError {
        let e = errors
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path}: {errors:#?}"));
        let line = text
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line holds {needle}"))
            + 1;
        assert!(
            e.to_string().starts_with(&format!("routes.yaml:{line}:")),
            "{e} (expected at line {line})"
        );
        e
    }
}
