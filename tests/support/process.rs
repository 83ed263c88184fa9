//! The built gateway as a child process on a routes.yaml file pointing at sandbox vendors that
//! run in the test (so the test can count what reaches them), with the sandbox credentials in
//! the environment as an operator would set them.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use coupon_gateway::embedded::ROUTES_YAML;
use coupon_gateway::sandbox::{Sandbox, sandbox_credentials};

/// The shipped routes.yaml with every simulated vendor's `base_url` pointing at `sb`.
pub fn sandbox_routes(sb: &Sandbox) -> String {
    let urls: Vec<(&str, String)> = sb
        .vendors()
        .iter()
        .map(|(id, sim)| (*id, sim.base_url()))
        .collect();
    let mut vendor: Option<&str> = None;
    let mut out = String::with_capacity(ROUTES_YAML.len());
    for line in ROUTES_YAML.lines() {
        // a vendor's key: two spaces, its id, a colon
        if let Some(id) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !id.starts_with(' ')
        {
            vendor = urls.iter().find(|(v, _)| *v == id).map(|(v, _)| *v);
        }
        match (vendor, line.strip_prefix("    base_url: ")) {
            (Some(v), Some(_)) => {
                let url = &urls.iter().find(|(id, _)| *id == v).unwrap().1;
                out.push_str(&format!("    base_url: {url}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `CGW_VENDORS__<ID>__CREDENTIALS__<NAME>` of every sandbox credential.
pub fn credential_env() -> Vec<(String, String)> {
    sandbox_credentials()
        .into_iter()
        .map(|(v, n, value)| {
            (
                format!(
                    "CGW_VENDORS__{}__CREDENTIALS__{}",
                    v.to_uppercase(),
                    n.to_uppercase()
                ),
                value.to_owned(),
            )
        })
        .collect()
}

/// A fresh directory under the system temp dir, removed by [`TempDir`]'s drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cgw-{what}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces `path`'s content at once (write beside it, then rename), as editors and
/// Kubernetes do, so that a reader never sees half a file.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename it into place");
}

/// A running gateway process and everything it logged (JSON lines on stderr).
pub struct GatewayProcess {
    child: Child,
    pub addr: String,
    stderr: Arc<Mutex<String>>,
}

impl GatewayProcess {
    /// `coupon-gateway serve --config <config>` on a free loopback port, with the sandbox
    /// credentials and `env`; returns once it says it serves.
    pub async fn start(config: &Path, env: &[(&str, &str)]) -> GatewayProcess {
        let config = config.as_os_str();
        GatewayProcess::start_args(&["serve".as_ref(), "--config".as_ref(), config], env).await
    }

    /// `coupon-gateway ARGS…` (a `serve` of some kind), as [`start`](Self::start) runs it.
    pub async fn start_args(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> GatewayProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coupon-gateway"));
        cmd.args(args)
            .env("CGW_SERVER__LISTEN", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in credential_env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the gateway starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let into = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in lines.lines().map_while(Result::ok) {
                if line.contains("coupon-gateway serving")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line.clone());
                }
                let mut all = into.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let line = super::within("the gateway says it serves", rx)
            .await
            .unwrap_or_else(|_| panic!("the gateway exited:\n{}", stderr.lock().unwrap()));
        let addr = line
            .split("\"addr\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no address in {line}"))
            .to_owned();
        GatewayProcess {
            child,
            addr,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`HUP`, `KILL`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "SIG{signal} sent");
    }

    /// Everything logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) for the process to exit, as after SIGKILL.
    pub async fn exited(&mut self) {
        super::until("the gateway process exits", || {
            let gone = self.child.try_wait().ok().flatten().is_some();
            async move { gone }
        })
        .await;
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The family names and types of docs/operating.md's catalogue tables.
pub fn metric_catalogue() -> Vec<(String, String)> {
    let doc = include_str!("../../docs/operating.md");
    let section = doc
        .split("## Metric catalogue")
        .nth(1)
        .unwrap()
        .split("### The queries that matter")
        .next()
        .unwrap();
    let mut out = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 3
            && cells[1].starts_with('`')
            && ["counter", "gauge", "histogram"].contains(&cells[2])
        {
            out.push((cells[1].trim_matches('`').to_owned(), cells[2].to_owned()));
        }
    }
    assert!(out.len() >= 35, "the catalogue parsed: {out:?}");
    out
}
