//! The embedded default: the shipped routes.yaml, compiled into the binary, wired to the
//! built-in sandbox vendors (`coupon-gateway serve --sandbox`, the tests and the benchmarks).
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::AppState;
use crate::config::{ConfigError, LoadedConfig, load_str};
use crate::engine::plan::{Credentials, Plan};
use crate::sandbox::{Sandbox, sandbox_credentials};

/// routes.yaml as shipped.
pub const ROUTES_YAML: &str = include_str!("../routes.yaml");

/// Points every vendor the sandbox simulates at its simulator, with the sandbox credentials.
/// Vendors the sandbox does not know are left as they are.
pub fn point_at_sandbox(loaded: &mut LoadedConfig, sandbox: &Sandbox) {
    for (id, sim) in sandbox.vendors() {
        if let Some(v) = loaded.config.vendors.get_mut(id) {
            v.base_url = sim.base_url();
            for (vendor, name, value) in sandbox_credentials() {
                if vendor == id {
                    v.credentials
                        .insert(name.to_owned(), Some(value.to_owned()));
                }
            }
        }
    }
}

/// Compiles `routes` (YAML text) against `sandbox`, with or without `CGW_` overrides.
pub fn sandbox_plan(
    name: &str,
    routes: &str,
    sandbox: &Sandbox,
    with_env: bool,
) -> Result<Plan, Vec<ConfigError>> {
    let mut loaded = load_str(name, routes, with_env)?;
    point_at_sandbox(&mut loaded, sandbox);
    Plan::compile(&loaded, Credentials::Required).map(|(plan, _)| plan)
}

/// A gateway serving on a loopback port, stopped when dropped or with [`Running::stop`].
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a gateway for `plan` on `listener`.
pub fn start(plan: Plan, listener: TcpListener) -> Running {
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let state = AppState::new(plan);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::http::server::serve(
        listener,
        state.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        addr,
        state,
        stop: Some(tx),
        task: Some(task),
    }
}
