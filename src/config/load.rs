//! Loading routes.yaml with figment: the file, then `CGW_` environment overrides
//! (`CGW_VENDORS__OP__TIMEOUT_MS=800`, `__` between path segments).
//!
//! Environment values are kept as strings and converted only where the target field wants a
//! number (`extract_lossy`), so a credential such as `0012345` keeps its leading zeros.
use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Yaml};
use figment::{Figment, Provider};

use super::{Location, RoutesConfig, YamlIndex};

/// The sections of routes.yaml an environment variable may override. Other `CGW_` variables
/// (say `CGW_LOG`) belong to the process, not to the configuration.
const SECTIONS: [&str; 3] = ["server", "routes", "vendors"];

/// A configuration error, with where it was found. Values are never quoted, so an error can
/// never print a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `vendors.op.operations.list_coupons.response.items`.
    pub path: String,
    pub message: String,
    /// Where the key stands in the file, when it came from the file.
    pub location: Option<Location>,
    /// File name, or the environment variable that set the value.
    pub source: Option<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.source, &self.location) {
            (Some(src), Some(loc)) => write!(f, "{src}:{}:{}: ", loc.line, loc.column)?,
            (Some(src), None) => write!(f, "{src}: ")?,
            _ => {}
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// routes.yaml as loaded: the typed config, the index of the file it came from, and the
/// `CGW_` variables that overrode it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: RoutesConfig,
    pub index: YamlIndex,
    /// (dotted lowercase path, variable name) of each override.
    pub overrides: Vec<(String, String)>,
}

impl LoadedConfig {
    /// An error at `path`: blamed on the `CGW_` variable that set it (or a value inside it),
    /// else located in the file when the file has that key.
    pub fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let by_env = self.overrides.iter().find(|(key, _)| {
            key == path
                || key.strip_prefix(path).is_some_and(|r| r.starts_with('.'))
                || path
                    .strip_prefix(key.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        });
        match by_env {
            Some((_, var)) => ConfigError {
                path: path.to_owned(),
                message: message.into(),
                location: None,
                source: Some(var.clone()),
            },
            None => ConfigError {
                path: path.to_owned(),
                message: message.into(),
                location: self.index.locate(path),
                source: Some(self.index.file().to_owned()),
            },
        }
    }
}

/// The `CGW_` variables of the configuration's sections: (dotted lowercase path, name).
fn overrides() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter_map(|name| {
            let key = name
                .strip_prefix("CGW_")?
                .replace("__", ".")
                .to_ascii_lowercase();
            SECTIONS
                .iter()
                .any(|s| key == *s || key.starts_with(&format!("{s}.")))
                .then_some((key, name))
        })
        .collect()
}

/// Reads and loads the file at `path` with the process environment's overrides.
pub fn load_file(path: &str) -> Result<LoadedConfig, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            message: format!("cannot read the configuration file: {e}"),
            location: None,
            source: Some(path.to_owned()),
        }]
    })?;
    load_str(path, &text, true)
}

/// Loads YAML `text` (named `name` in errors); `with_env` adds the `CGW_` overrides.
pub fn load_str(name: &str, text: &str, with_env: bool) -> Result<LoadedConfig, Vec<ConfigError>> {
    let index = YamlIndex::parse(name, text).map_err(|(message, location)| {
        vec![ConfigError {
            path: String::new(),
            message,
            location,
            source: Some(name.to_owned()),
        }]
    })?;
    let mut figment = Figment::new().merge(Yaml::string(text));
    let overrides = if with_env {
        figment = figment.merge(RawEnv(environment()));
        overrides()
    } else {
        Vec::new()
    };
    match figment.extract_lossy::<RoutesConfig>() {
        Ok(config) => Ok(LoadedConfig {
            config,
            index,
            overrides,
        }),
        Err(e) => Err(e
            .into_iter()
            .map(|e| figment_error(&index, e, &overrides))
            .collect()),
    }
}

/// The environment provider: `CGW_` prefix, `__` between segments, known sections only.
pub fn environment() -> Env {
    Env::prefixed("CGW_").split("__").filter(|key| {
        // the key keeps the variable's case here; figment lowercases it afterwards
        let key = key.as_str().to_ascii_lowercase();
        SECTIONS
            .iter()
            .any(|s| key == *s || key.starts_with(&format!("{s}.")))
    })
}

/// The name of the environment variable that overrides `path`.
pub fn env_var_for(path: &str) -> String {
    format!("CGW_{}", path.replace('.', "__").to_uppercase())
}

fn figment_error(
    index: &YamlIndex,
    e: figment::Error,
    overrides: &[(String, String)],
) -> ConfigError {
    let mut path = e.path.join(".");
    // an unknown key is reported at its parent by some figment paths; point at the key itself
    if let figment::error::Kind::UnknownField(name, _) = &e.kind
        && path.rsplit('.').next() != Some(name.as_str())
    {
        path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
    }
    // the environment wins every merge, so a set variable for this key is where the value
    // came from (figment's metadata does not survive the string-keeping provider below)
    let var = overrides
        .iter()
        .find(|(key, _)| *key == path)
        .map(|(_, v)| v.clone());
    let from_env = var.is_some();
    // figment's own text may quote the offending value ("found string `s3cr3t`"); keep the
    // kind of mistake, drop the value, so no error can ever print a credential.
    let message = match &e.kind {
        Kind::InvalidType(actual, expected) => {
            format!(
                "invalid type: found {}, expected {expected}",
                kind_of(actual)
            )
        }
        Kind::InvalidValue(actual, expected) => {
            format!(
                "invalid value: found {}, expected {expected}",
                kind_of(actual)
            )
        }
        Kind::Message(m) => redact_value(m),
        // the field is in the path already: name it once, with the nearest known one
        Kind::UnknownField(name, known) => format!(
            "unknown field{}",
            crate::canonical::strict::hint(name, known)
        ),
        other => other.to_string(),
    };
    if from_env {
        ConfigError {
            message,
            location: None,
            source: var,
            path,
        }
    } else {
        ConfigError {
            message,
            location: index.locate(&path),
            source: Some(index.file().to_owned()),
            path,
        }
    }
}

/// The kind of a value figment found, without the value itself.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual::*;
    match actual {
        Bool(_) => "a boolean",
        Unsigned(_) | Signed(_) => "an integer",
        Float(_) => "a float",
        Char(_) | Str(_) => "a string",
        Bytes(_) => "bytes",
        Unit | Option => "nothing",
        Seq => "a sequence",
        Map => "a mapping",
        _ => "a value of another kind",
    }
}

/// Replaces every backquoted value in figment's message with `…`.
fn redact_value(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("`…`");
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

/// figment's `Env` parses values ("0012345" would become the number 12345); this provider
/// hands every value over as the string it is, and `extract_lossy` converts where needed.
struct RawEnv(Env);

impl Provider for RawEnv {
    fn metadata(&self) -> figment::Metadata {
        self.0.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.0
            .iter()
            .fold(Figment::new(), |f, (k, v)| {
                f.merge(Serialized::default(k.as_str(), v))
            })
            .data()
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's large Error
mod tests {
    use super::*;
    use figment::Jail;

    const YAML: &str = "server:\n  listen: 127.0.0.1:1\nvendors:\n  op:\n    base_url: http://op.invalid\n    timeout_ms: 800\n    credentials:\n      client: ~\n";

    #[test]
    fn environment_overrides_keep_strings_and_convert_numbers() {
        Jail::expect_with(|jail| {
            jail.set_env("CGW_VENDORS__OP__TIMEOUT_MS", "1200");
            jail.set_env("CGW_VENDORS__OP__CREDENTIALS__CLIENT", "0012345");
            jail.set_env("CGW_SERVER__LISTEN", "127.0.0.1:18080");
            jail.set_env("CGW_LOG", "debug"); // not a config section: ignored
            let loaded = load_str("routes.yaml", YAML, true).unwrap();
            let op = &loaded.config.vendors["op"];
            assert_eq!(op.timeout_ms, 1200);
            assert_eq!(op.credentials["client"].as_deref(), Some("0012345"));
            assert_eq!(loaded.config.server.listen, "127.0.0.1:18080");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_file_line_or_the_variable_and_never_the_value() {
        let bad = YAML.replace("timeout_ms: 800", "timeout_ms: s3cr3t");
        let errs = load_str("routes.yaml", &bad, false).unwrap_err();
        let text = errs[0].to_string();
        assert!(text.starts_with("routes.yaml:6:"), "{text}");
        assert!(text.contains("vendors.op.timeout_ms"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");

        Jail::expect_with(|jail| {
            jail.set_env("CGW_VENDORS__OP__TIMEOUT_MS", "hunter2");
            let errs = load_str("routes.yaml", YAML, true).unwrap_err();
            let text = errs[0].to_string();
            assert!(text.contains("CGW_VENDORS__OP__TIMEOUT_MS"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let bad = YAML.replace(
            "    timeout_ms: 800\n",
            "    timeout_ms: 800\n    timout: 1\n",
        );
        let errs = load_str("routes.yaml", &bad, false).unwrap_err();
        let text = errs[0].to_string();
        assert!(text.contains("timout"), "{text}");
        assert!(text.starts_with("routes.yaml:"), "{text}");
    }

    #[test]
    fn a_mistake_in_an_override_is_blamed_on_its_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("CGW_VENDORS__OP__TIMEOUT_MS", "0");
            let loaded = load_str("routes.yaml", YAML, true).unwrap();
            // as the compiler reports a value out of range
            let e = loaded.error("vendors.op.timeout_ms", "must be between 1 and 600000");
            assert_eq!(
                e.to_string(),
                "CGW_VENDORS__OP__TIMEOUT_MS: vendors.op.timeout_ms: must be between 1 and 600000"
            );
            // a key the variable does not touch stays on its line
            let e = loaded.error("vendors.op.base_url", "x");
            assert!(e.to_string().starts_with("routes.yaml:5:"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("CGW_VENDORS__OP__TIMEOUTMS", "5");
            let errs = load_str("routes.yaml", YAML, true).unwrap_err();
            assert_eq!(
                errs[0].to_string(),
                "CGW_VENDORS__OP__TIMEOUTMS: vendors.op.timeoutms: unknown field (did you mean `timeout_ms`?)"
            );
            Ok(())
        });
    }

    #[test]
    fn env_var_names_follow_the_path() {
        assert_eq!(
            env_var_for("vendors.op.credentials.secret"),
            "CGW_VENDORS__OP__CREDENTIALS__SECRET"
        );
    }
}
