//! `coupon-gateway serve | validate | explain`: arguments → load routes.yaml → compile the plan → serve.
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use coupon_gateway::app::reload::{self, Compile, Compiled};
use coupon_gateway::app::{AppState, Origin};
use coupon_gateway::config::{self, ConfigError};
use coupon_gateway::embedded::{self, ROUTES_YAML};
use coupon_gateway::engine::plan::{Credentials, Plan};
use coupon_gateway::sandbox::Sandbox;
use coupon_gateway::{explain, http, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "coupon-gateway",
    version,
    about = "One canonical coupon API in front of many vendors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the canonical API.
    Serve {
        /// routes.yaml to load (default ./routes.yaml; with --sandbox, the embedded one).
        #[arg(long)]
        config: Option<String>,
        /// Start the built-in sandbox vendors on loopback and point the gateway at them.
        #[arg(long)]
        sandbox: bool,
        /// Log JSON lines instead of text (the default whenever stderr is not a terminal).
        #[arg(long)]
        log_json: bool,
    },
    /// Run one vendor operation once and show every stage: the signing steps' inputs and
    /// outputs, the request as sent, the raw answer, the envelope's verdict, each page, and
    /// each item field by field. Credentials (and tokens) are shown as ***. Exits 1 when the
    /// call failed, naming the stage; 2 when the question was wrong (nothing was called).
    Explain {
        #[command(flatten)]
        opts: explain::Options,
        /// Print one JSON document (field names in docs/routes.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a routes.yaml (every JSONPath, template, step, enum map and credential name)
    /// and print each error with its location. Exits non-zero on errors.
    Validate {
        /// The file to check (default ./routes.yaml).
        path: Option<String>,
    },
}

/// mimalloc instead of glibc malloc: malloc was 26-48 % of the baseline profile
/// (docs/benchmarks.md). The `system-alloc` feature leaves the system allocator in place, for
/// heap profilers that hook malloc (`bench/run --wrap heaptrack`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: Mi = Mi;

/// mimalloc, entered by `mi_malloc` where its blocks are aligned enough already.
/// `mimalloc::MiMalloc` sends every allocation through `mi_malloc_aligned`, whose fast path
/// takes only small blocks that happen to be aligned and sends the rest (every buffer over
/// 1 KB, every block whose size is no power of two once the first free block is not aligned)
/// through a generic path that over-allocates: ~80 instructions an allocation of a cached
/// answer's path, where `mi_malloc` takes ~40 (docs/benchmarks.md, seventh session). Every block `mi_malloc` gives is aligned to
/// at least a machine word (its smallest size class is one word and every class a whole number
/// of words from an aligned start), which is what almost every Rust type asks for; anything
/// asking for more (`u128`, SIMD groups of hash tables) still goes the aligned way.
#[cfg(not(feature = "system-alloc"))]
struct Mi;

#[cfg(not(feature = "system-alloc"))]
const WORD: usize = size_of::<usize>();

#[cfg(not(feature = "system-alloc"))]
// SAFETY: every block comes from mimalloc with at least the alignment the layout asks for
// (see `Mi`), and is given back to mimalloc's `mi_free`, which takes blocks of either entry.
unsafe impl std::alloc::GlobalAlloc for Mi {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        // SAFETY: plain calls into mimalloc with a size and a power-of-two alignment
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        // SAFETY: as in `alloc`
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from mimalloc
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys as mi;
        // SAFETY: `ptr` came from mimalloc; the new block is aligned as `alloc` would align it
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// Transparent huge pages off for the process, unless the operator set mimalloc's own
/// `MIMALLOC_ALLOW_THP`: mimalloc asks for them (`madvise`) on the memory it reserves, and a
/// 2 MiB page is returned to the system only whole. With a different member every request
/// through 16 vendors, peak RSS was 163-165 MiB with them and 143-152 MiB without, for a
/// 64 MiB cache budget; a miss took 0-10 % more CPU without them, a cached answer no more
/// (docs/benchmarks.md, eleventh session; docs/operating.md says how to keep them).
#[cfg(all(target_os = "linux", not(feature = "system-alloc")))]
fn without_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: prctl(PR_SET_THP_DISABLE) takes integers and touches no memory of ours
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", not(feature = "system-alloc")))]
    without_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { path } => validate(path.as_deref().unwrap_or("routes.yaml")),
        Command::Explain { opts, json } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(explain::explain(&opts)) {
                Ok(e) => {
                    if json {
                        match serde_json::to_string_pretty(&e) {
                            Ok(text) => println!("{text}"),
                            Err(err) => eprintln!("cannot write the JSON: {err}"),
                        }
                    } else {
                        print!("{}", explain::render::text(&e));
                    }
                    if e.outcome.ok {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!(
                            "explain: the call failed at {}",
                            e.outcome.stage.unwrap_or("call")
                        );
                        ExitCode::from(1)
                    }
                }
                Err(msg) => {
                    eprintln!("error: {msg}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve {
            config,
            sandbox,
            log_json,
        } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                let tracing = telemetry::init_logging(log_json);
                let code = serve(config, sandbox).await;
                telemetry::shutdown_tracing(tracing).await;
                code
            })
        }
    }
}

fn print_errors(errors: &[ConfigError]) {
    for e in errors {
        eprintln!("error: {e}");
    }
}

fn validate(path: &str) -> ExitCode {
    let loaded = match config::load_file(path) {
        Ok(l) => l,
        Err(errors) => {
            print_errors(&errors);
            eprintln!("{path}: {} error(s)", errors.len());
            return ExitCode::from(1);
        }
    };
    if let Err(errors) = http::auth::Callers::from_config(&loaded.config) {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!("{path}: {} error(s)", errors.len());
        return ExitCode::from(1);
    }
    match Plan::compile(&loaded, Credentials::Optional) {
        Ok((plan, warnings)) => {
            for w in &warnings {
                eprintln!("note: {w}");
            }
            let ops: usize = plan.vendors.iter().map(|v| v.operations.len()).sum();
            println!(
                "{path}: OK ({} vendors, {ops} operations)",
                plan.vendors.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            eprintln!("{path}: {} error(s)", errors.len());
            ExitCode::from(1)
        }
    }
}

async fn serve(config_path: Option<String>, sandbox: bool) -> ExitCode {
    let path = config_path
        .clone()
        .unwrap_or_else(|| "routes.yaml".to_owned());
    let sandbox_handle = if sandbox {
        match Sandbox::start().await {
            Ok(sb) => Some(Arc::new(sb)),
            Err(e) => {
                eprintln!("cannot start the sandbox vendors: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    // how a file's text becomes a plan, at start-up and on every reload
    let compile: Compile = match &sandbox_handle {
        Some(sb) => {
            let sb = Arc::clone(sb);
            Arc::new(move |name: &str, text: &str| {
                // the demo listens on loopback unless told otherwise
                let text = if std::env::var_os("CGW_SERVER__LISTEN").is_none() {
                    text.replace("listen: 0.0.0.0:8080", "listen: 127.0.0.1:8080")
                } else {
                    text.to_owned()
                };
                let mut loaded = config::load_str(name, &text, true)?;
                embedded::point_at_sandbox(&mut loaded, &sb);
                let (plan, warnings) = Plan::compile(&loaded, Credentials::Required)?;
                Ok(Compiled {
                    plan,
                    warnings,
                    config: loaded.config,
                })
            })
        }
        None => Arc::new(reload::compile_serving),
    };
    // the sandbox demo without --config runs the embedded file, which never changes
    let (name, text) = match (&config_path, sandbox) {
        (None, true) => ("routes.yaml (embedded)".to_owned(), ROUTES_YAML.to_owned()),
        _ => match std::fs::read_to_string(&path) {
            Ok(t) => (path.clone(), t),
            Err(e) => {
                telemetry::record_config_load(None);
                eprintln!("error: {path}: cannot read the configuration file: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let compiled = match compile(&name, &text) {
        Ok(c) => {
            telemetry::record_config_load(Some(&text));
            for w in &c.warnings {
                tracing::warn!("{w}");
            }
            c
        }
        Err(errors) => {
            telemetry::record_config_load(None);
            print_errors(&errors);
            return ExitCode::from(1);
        }
    };
    let callers = match http::auth::Callers::from_config(&compiled.config) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(1);
        }
    };
    let plan = compiled.plan;
    let listen = plan.server.listen.clone();
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e} (set CGW_SERVER__LISTEN to another address)");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    let state = AppState::with_origin(plan, Origin::of_text(&name, &text));
    state.set_callers(callers);
    // SIGHUP and changes of the file reload it (not the embedded demo file); in place before
    // the line below says the gateway serves
    let reloader = if config_path.is_some() || !sandbox {
        Some(reload::spawn(state.clone(), path, compile))
    } else {
        reload::ignore_hangups();
        None
    };
    tracing::info!(%addr, vendors = state.generation().plan.vendors.len(), "coupon-gateway serving");
    if let Some(sb) = &sandbox_handle {
        for (id, sim) in sb.vendors() {
            tracing::info!(vendor = id, url = %sim.base_url(), "sandbox vendor");
        }
        println!("coupon-gateway is serving on http://{addr} with the sandbox vendors. Try:\n");
        println!(
            "curl -s http://{addr}/v1/coupons/query -H 'content-type: application/json' -d '{}'\n",
            coupon_gateway::sandbox::demo_query()
        );
    }
    http::server::serve(listener, state, shutdown_signal()).await;
    if let Some(r) = reloader {
        r.abort();
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(all(test, not(feature = "system-alloc")))]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Mi;

    /// Every block is aligned as its layout asks, whichever entry it takes, and keeps its bytes
    /// when it grows or shrinks.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [
                1, 3, 7, 8, 12, 24, 40, 48, 100, 1000, 1025, 8192, 13_412, 70_000,
            ] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is freed with its own layout
                unsafe {
                    let zeroed = Mi.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} aligned {align}");
                    assert!((0..size).all(|i| *zeroed.add(i) == 0));
                    Mi.dealloc(zeroed, layout);

                    let mut p = Mi.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{size} aligned {align}");
                    for i in 0..size {
                        *p.add(i) = i as u8;
                    }
                    for new_size in [size / 2 + 1, size * 3] {
                        let q = Mi.realloc(p, layout, new_size);
                        assert_eq!(
                            q as usize % align,
                            0,
                            "{size} -> {new_size} aligned {align}"
                        );
                        let kept = size.min(new_size);
                        assert!(
                            (0..kept).all(|i| *q.add(i) == i as u8),
                            "{size} -> {new_size}"
                        );
                        Mi.dealloc(q, Layout::from_size_align(new_size, align).unwrap());
                        // the next round grows or shrinks a fresh block
                        p = Mi.alloc(layout);
                        for i in 0..size {
                            *p.add(i) = i as u8;
                        }
                    }
                    Mi.dealloc(p, layout);
                }
            }
        }
    }
}
