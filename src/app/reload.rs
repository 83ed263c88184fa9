//! Hot reload of routes.yaml: on SIGHUP, and when the file changes (watched with `notify`,
//! debounced), the file is read, loaded with the `CGW_` environment, validated and compiled as
//! at start-up, off the runtime (`spawn_blocking`). A valid plan becomes the next
//! [`Generation`] (keeping the state of what did not change) and is swapped in atomically;
//! requests in flight finish on the generation they started with. An invalid file changes
//! nothing: the running generation stays, and every error is logged once with its location,
//! counted (`cgw_config_loads_total{result="error"}`) and shown by `GET /v1/config`.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::AppState;
use super::generation::{Generation, Kept, Origin};
use crate::config::{ConfigError, RoutesConfig};
use crate::engine::plan::{Credentials, Plan};
use crate::http::auth::Callers;

/// A configuration compiled from a file's text.
pub struct Compiled {
    pub plan: Plan,
    pub warnings: Vec<ConfigError>,
    /// The whole configuration, for the `callers:` section the plan does not keep.
    pub config: RoutesConfig,
}

/// How the file's text (named by the first argument) becomes a plan: [`compile_serving`],
/// or the sandbox's variant that points vendors at the simulators.
pub type Compile = Arc<dyn Fn(&str, &str) -> Result<Compiled, Vec<ConfigError>> + Send + Sync>;

/// As `serve` compiles: with the `CGW_` environment, every credential required.
pub fn compile_serving(name: &str, text: &str) -> Result<Compiled, Vec<ConfigError>> {
    let loaded = crate::config::load_str(name, text, true)?;
    let (plan, warnings) = Plan::compile(&loaded, Credentials::Required)?;
    Ok(Compiled {
        plan,
        warnings,
        config: loaded.config,
    })
}

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    File,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "sighup",
            Trigger::File => "file",
        }
    }
}

/// The last attempt, and the errors of the last one that failed (cleared by a success).
#[derive(Debug, Default)]
pub struct Status {
    last_attempt: Option<(jiff::Timestamp, Trigger)>,
    last_error: Option<Failed>,
}

#[derive(Debug)]
struct Failed {
    at: jiff::Timestamp,
    source: String,
    sha256: String,
    errors: Vec<ConfigError>,
}

/// Distinct errors in their order: a mistake reached by two paths is reported once.
fn distinct(errors: Vec<ConfigError>) -> Vec<ConfigError> {
    let mut out: Vec<ConfigError> = Vec::with_capacity(errors.len());
    for e in errors {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

impl AppState {
    /// Loads `text` (the file `source` as read) and, when it is valid, makes it the current
    /// generation. Blocking (it compiles): call it off the runtime. On failure the running
    /// generation stays and the errors are returned (and logged, counted and kept for
    /// `GET /v1/config`).
    pub fn reload(
        &self,
        source: &str,
        text: &str,
        compile: &Compile,
        trigger: Trigger,
    ) -> Result<Kept, Vec<ConfigError>> {
        let now = jiff::Timestamp::now();
        let origin = Origin::of_text(source, text);
        let compiled = compile(source, text).and_then(|c| {
            // `callers:` is part of the file: a mistake there refuses the whole reload
            match Callers::from_config(&c.config) {
                Ok(callers) => Ok((c, callers)),
                Err(messages) => Err(messages
                    .into_iter()
                    .map(|message| ConfigError {
                        path: "callers".to_owned(),
                        message,
                        location: None,
                        source: Some(source.to_owned()),
                    })
                    .collect()),
            }
        });
        let mut status = self.config_status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_attempt = Some((now, trigger));
        let (compiled, callers) = match compiled {
            Ok(c) => c,
            Err(errors) => {
                let errors = distinct(errors);
                crate::telemetry::record_config_load(None);
                tracing::error!(
                    trigger = trigger.as_str(),
                    source,
                    errors = errors.len(),
                    "configuration reload refused; the running configuration stays"
                );
                for e in &errors {
                    tracing::error!(error = %e, "configuration error");
                }
                status.last_error = Some(Failed {
                    at: now,
                    source: source.to_owned(),
                    sha256: origin.sha256,
                    errors: errors.clone(),
                });
                return Err(errors);
            }
        };
        for w in &compiled.warnings {
            tracing::warn!("{w}");
        }
        if format!("{:?}", compiled.plan.server) != format!("{:?}", self.server) {
            tracing::warn!(
                "the `server:` section changed; it applies at the next start (this process keeps the one it started with)"
            );
        }
        // series of vendors and operations new in this file exist at 0 from here
        crate::telemetry::register(&compiled.plan);
        let current = self.generation();
        let (next, kept) = Generation::build(
            compiled.plan,
            origin,
            &self.answers,
            self.shared.as_ref(),
            Some(&current),
        );
        let version = next.origin.version().to_owned();
        let vendors = next.plan.vendors.len();
        self.swap_generation(next);
        self.set_callers(callers);
        crate::telemetry::record_config_load(Some(text));
        status.last_error = None;
        tracing::info!(
            trigger = trigger.as_str(),
            source,
            version,
            vendors,
            kept_guards = ?kept.guards,
            kept_caches = ?kept.caches,
            "configuration reloaded"
        );
        Ok(kept)
    }

    /// `GET /v1/config`: which configuration runs and how the last reload went. Only ids,
    /// hashes and times: never a credential or any other configured value.
    pub fn config_json(&self) -> Value {
        let generation = self.generation();
        let origin = &generation.origin;
        let status = self.config_status.lock().unwrap_or_else(|e| e.into_inner());
        let vendors: Vec<Value> = generation
            .plan
            .vendors
            .iter()
            .map(|v| json!({"id": v.id, "operations": v.operations}))
            .collect();
        json!({
            "version": origin.version(),
            "sha256": origin.sha256,
            "source": origin.source,
            "loaded_at": origin.loaded_at.map(|t| t.to_string()),
            "vendors": vendors,
            "last_attempt_at": status.last_attempt.map(|(t, _)| t.to_string()),
            "last_attempt_trigger": status.last_attempt.map(|(_, t)| t.as_str()),
            "last_error": status.last_error.as_ref().map(|f| json!({
                "at": f.at.to_string(),
                "source": f.source,
                "sha256": f.sha256,
                "errors": f.errors.iter().map(error_json).collect::<Vec<_>>(),
            })),
        })
    }
}

fn error_json(e: &ConfigError) -> Value {
    json!({
        "path": e.path,
        "message": e.message,
        "source": e.source,
        "line": e.location.as_ref().map(|l| l.line),
        "column": e.location.as_ref().map(|l| l.column),
        "text": e.to_string(),
    })
}

/// Reloads `path` on SIGHUP and when it changes, until the process ends. The watch is on the
/// file's directory, so that editors' and Kubernetes' replace-by-rename updates are seen; an
/// event whose file reads the same as the last attempt is ignored. The signal handler and the
/// watch are in place when this returns.
pub fn spawn(state: Arc<AppState>, path: String, compile: Compile) -> tokio::task::JoinHandle<()> {
    let (tx, changed) = tokio::sync::mpsc::channel::<()>(1);
    let name = Path::new(&path).file_name().map(|n| n.to_owned());
    // notify's thread delivers the events; a full channel already has a reload due. Only
    // changes of this file count (its name, or Kubernetes' `..data` swap of a mounted
    // ConfigMap): other files of the directory may change all the time (a log), and opening
    // the file is an event too (inotify IN_OPEN), which each read would bring again.
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|f| {
                Some(f) == name.as_deref() || f.to_string_lossy().starts_with("..")
            })
        });
        if ours && !matches!(event.kind, notify::EventKind::Access(_)) {
            let _ = tx.try_send(());
        }
    });
    let dir = watched_dir(&path);
    let watcher = match watcher {
        Ok(mut w) => {
            match notify::Watcher::watch(&mut w, &dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => tracing::info!(path, "watching the configuration file"),
                Err(e) => {
                    tracing::warn!(path, error = %e, "cannot watch the configuration file; SIGHUP still reloads")
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; SIGHUP still reloads");
            None
        }
    };
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hup: Option<()> = None;
    tokio::spawn(async move {
        // dropping the watcher ends the watch: it lives as long as this task
        let _watcher = watcher;
        run(state, path, compile, changed, hup).await
    })
}

/// The directory watched for the file `path`: its parent, or `.` for a bare file name
/// (`--config routes.yaml`), whose parent is the empty path.
fn watched_dir(path: &str) -> PathBuf {
    match Path::new(path).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Without a file to reload (the embedded demo configuration), SIGHUP is answered with a log
/// line instead of its default action, which would end the process.
pub fn ignore_hangups() {
    #[cfg(unix)]
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: the embedded routes.yaml never changes; nothing to reload");
            }
        });
    }
}

/// How long the directory must stay quiet before a change is acted on: a save is often a
/// truncate then a write, or several renames.
const DEBOUNCE: Duration = Duration::from_millis(200);

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

async fn run(
    state: Arc<AppState>,
    path: String,
    compile: Compile,
    mut changed: tokio::sync::mpsc::Receiver<()>,
    #[allow(unused_mut)] mut hup: Hangup,
) {
    let mut last_sha = state.generation().origin.sha256.clone();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = async {
            let _ = &hup;
            std::future::pending::<Option<()>>().await
        };
        let trigger = tokio::select! {
            Some(()) = hangup => Trigger::Signal,
            Some(()) = changed.recv() => {
                // act once the directory is quiet: a save is often several events
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changed.recv()).await {}
                Trigger::File
            }
            else => return,
        };
        let (st, p, c, last) = (
            Arc::clone(&state),
            path.clone(),
            Arc::clone(&compile),
            last_sha.clone(),
        );
        let attempted = tokio::task::spawn_blocking(move || attempt(&st, &p, &c, trigger, &last));
        if let Ok(Some(sha)) = attempted.await {
            last_sha = sha;
        }
    }
}

/// One reload: reads the file and reloads it. Returns the hash of what was attempted (`None`:
/// nothing was).
fn attempt(
    state: &AppState,
    path: &str,
    compile: &Compile,
    trigger: Trigger,
    last_sha: &str,
) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        // a file being replaced may be missing for a moment: its arrival is another event
        Err(e) if trigger == Trigger::File && e.kind() == std::io::ErrorKind::NotFound => {
            return None;
        }
        Err(e) => {
            let error = ConfigError {
                path: String::new(),
                message: format!("cannot read the configuration file: {e}"),
                location: None,
                source: Some(path.to_owned()),
            };
            let failing: Compile = Arc::new(move |_, _| Err(vec![error.clone()]));
            let _ = state.reload(path, "", &failing, trigger);
            return None;
        }
    };
    let sha = Origin::of_text(path, &text).sha256;
    if trigger == Trigger::File && sha == last_sha {
        tracing::debug!(
            path,
            "the configuration file reads as before; nothing to reload"
        );
        return None;
    }
    let _ = state.reload(path, &text, compile, trigger);
    Some(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::Credentials;

    fn compile() -> Compile {
        Arc::new(|name, text| {
            let loaded = crate::config::load_str(name, text, false)?;
            let (plan, warnings) = Plan::compile(&loaded, Credentials::Optional)?;
            Ok(Compiled {
                plan,
                warnings,
                config: loaded.config,
            })
        })
    }

    fn state() -> Arc<AppState> {
        let compiled = compile()("routes.yaml", crate::embedded::ROUTES_YAML).unwrap();
        AppState::new(compiled.plan)
    }

    /// A path of this test's own under the temporary directory, removed when dropped.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> TempPath {
            TempPath(
                std::env::temp_dir().join(format!("cgw-reload-{}-{name}.yaml", std::process::id())),
            )
        }
        fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn the_watched_directory_is_the_file_s_or_the_current_one() {
        assert_eq!(watched_dir("routes.yaml"), Path::new("."));
        assert_eq!(watched_dir("conf/routes.yaml"), Path::new("conf"));
        assert_eq!(watched_dir("/etc/cgw/routes.yaml"), Path::new("/etc/cgw"));
    }

    #[tokio::test]
    async fn a_missing_file_is_awaited_after_a_file_event_and_an_error_on_sighup() {
        let state = state();
        let missing = TempPath::new("missing");
        // a file being replaced is missing for a moment: nothing is attempted or reported
        assert_eq!(
            attempt(&state, missing.as_str(), &compile(), Trigger::File, ""),
            None
        );
        let status = state.config_json();
        assert_eq!(status["last_attempt_at"], Value::Null, "{status}");
        assert_eq!(status["last_error"], Value::Null, "{status}");
        // asked for by a signal, a file that cannot be read is a failed reload
        assert_eq!(
            attempt(&state, missing.as_str(), &compile(), Trigger::Signal, ""),
            None
        );
        let status = state.config_json();
        assert_eq!(status["last_attempt_trigger"], "sighup", "{status}");
        let message = status["last_error"]["errors"][0]["message"].as_str();
        assert!(
            message.is_some_and(|m| m.starts_with("cannot read the configuration file")),
            "{status}"
        );
    }

    #[tokio::test]
    async fn a_file_event_on_unchanged_bytes_is_ignored_but_sighup_reloads_them() {
        let state = state();
        let file = TempPath::new("unchanged");
        let text = crate::embedded::ROUTES_YAML;
        std::fs::write(&file.0, text).unwrap();
        let sha = Origin::of_text(file.as_str(), text).sha256;
        assert_eq!(
            attempt(&state, file.as_str(), &compile(), Trigger::File, &sha),
            None
        );
        assert_eq!(state.config_json()["last_attempt_at"], Value::Null);
        // a signal is an explicit request: the same bytes are reloaded
        assert_eq!(
            attempt(&state, file.as_str(), &compile(), Trigger::Signal, &sha),
            Some(sha.clone())
        );
        let status = state.config_json();
        assert_eq!(status["last_attempt_trigger"], "sighup", "{status}");
        assert_eq!(status["sha256"], sha.as_str(), "{status}");
        assert_eq!(status["last_error"], Value::Null, "{status}");
        // a changed file is reloaded on its event
        let changed = text.replacen("    timeout_ms: 800\n", "    timeout_ms: 900\n", 1);
        assert_ne!(
            changed, text,
            "the embedded routes.yaml has a timeout_ms: 800"
        );
        std::fs::write(&file.0, &changed).unwrap();
        let new_sha = attempt(&state, file.as_str(), &compile(), Trigger::File, &sha);
        assert_eq!(
            new_sha,
            Some(Origin::of_text(file.as_str(), &changed).sha256)
        );
        assert_eq!(state.config_json()["last_attempt_trigger"], "file");
    }
}
