//! The command line: `validate` reports every mistake with its YAML location and exits
//! non-zero; `serve` refuses to start without credentials and names the variable to set.
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coupon-gateway"))
}

/// A routes file written for one test, removed with its directory when the test ends.
struct Written {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl std::ops::Deref for Written {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for Written {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(name: &str, text: &str) -> Written {
    let dir = std::env::temp_dir().join(format!("cgw-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.yaml");
    std::fs::write(&path, text).unwrap();
    Written { dir, path }
}

const ROUTES: &str = include_str!("../routes.yaml");

#[test]
fn validate_accepts_the_shipped_routes() {
    let out = bin().args(["validate", "routes.yaml"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK (4 vendors, 7 operations)"), "{stdout}");
}

#[test]
fn validate_prints_every_error_with_its_line_and_fails() {
    let bad = ROUTES
        .replace("items: $.data.list", "items: $.data.list[?(@.x == )]")
        .replace(
            "map: {\"0\": usable, \"1\": used, \"2\": expired}",
            "map: {\"0\": usable, \"1\": spent, \"2\": expired}",
        );
    let path = write("bad", &bad);
    let out = bin().arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = |needle: &str| ROUTES.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let p = path.display().to_string();
    assert!(
        stderr.contains(&format!("{p}:{}:", line("items: $.data.list"))),
        "{stderr}"
    );
    assert!(stderr.contains("bad JSONPath"), "{stderr}");
    assert!(
        stderr.contains("`spent` is not a canonical status"),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

#[test]
fn validate_reports_yaml_syntax_errors_with_their_line() {
    let path = write("syntax", "server:\n  listen: [1, 2\nvendors: {}\n");
    let out = bin().arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("YAML syntax error"), "{stderr}");
}

#[test]
fn serve_without_credentials_names_the_variables_and_leaks_nothing() {
    let out = bin()
        .args(["serve", "--config", "routes.yaml"])
        .env(
            "CGW_VENDORS__OP__CREDENTIALS__SECRET",
            "op-real-secret-value",
        )
        .env("CGW_SERVER__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("set CGW_VENDORS__OP__CREDENTIALS__CLIENT"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set CGW_VENDORS__ZVCMS__CREDENTIALS__GRANT_CODE"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("CGW_VENDORS__OP__CREDENTIALS__SECRET"),
        "the secret is set: {stderr}"
    );
    assert!(!stderr.contains("op-real-secret-value"), "{stderr}");
}
