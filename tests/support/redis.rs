//! A real `redis-server` per test (Debian's package): loopback, a free port, no persistence,
//! its own temp dir, killed on drop; optionally with a password and TLS.
//!
//! Without `redis-server` the tests that need it print why and pass, unless `CI` is set (CI
//! installs it in .ci/run), where they fail.
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A `redis-server` of this test: loopback, no persistence, its own temp dir, killed on drop.
pub struct RedisServer {
    pub port: u16,
    /// With TLS: the port of `rediss://` (the plain port stays open for the test itself).
    pub tls_port: Option<u16>,
    pub dir: PathBuf,
    pub password: Option<String>,
    pub child: Option<Child>,
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with the openssl CLI in `dir`.
pub fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "openssl {args:?}");
    };
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext.cnf");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=cgw-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Whether `redis-server` can be run; `false` (after saying why) means "skip this test".
pub fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed, and CI must run the replica tests (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED: redis-server is not installed (apt-get install redis-server); the replica tests need a real Redis"
        );
    }
    found
}

impl RedisServer {
    /// Starts a server on a free loopback port (a port found free can be taken before
    /// redis-server binds it, so a failed start is tried again on another).
    pub async fn start(password: Option<&str>) -> RedisServer {
        Self::start_with(password, false).await
    }

    pub async fn start_with(password: Option<&str>, tls: bool) -> RedisServer {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cgw-redis-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if tls {
            make_certificates(&dir);
        }
        for _ in 0..10 {
            let mut server = RedisServer {
                port: free_port(),
                tls_port: tls.then(free_port),
                dir: dir.clone(),
                password: password.map(str::to_owned),
                child: None,
            };
            if server.spawn().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 10 ports");
    }

    /// Runs redis-server on `self.port`; true once it answers PING.
    pub async fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        if let Some(tls_port) = self.tls_port {
            cmd.args([
                "--tls-port",
                &tls_port.to_string(),
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(self.dir.join("server.crt"))
            .arg("--tls-key-file")
            .arg(self.dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(self.dir.join("ca.crt"));
        }
        let Ok(mut child) = cmd.spawn() else {
            return false;
        };
        let client = redis::Client::open(self.url_with_password()).expect("url");
        for _ in 0..200 {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: the port was taken
            }
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn url_with_password(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => self.url(),
        }
    }

    /// Kills the server (as a crash would); `restart` brings it back on the same port, empty.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        assert!(self.spawn().await, "redis-server restarts on its port");
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url_with_password())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("the test reaches its redis-server")
    }

    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut self.conn().await)
            .await
            .expect("KEYS")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
