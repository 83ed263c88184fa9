//! For unit tests: a vendor on loopback that answers a script, over real HTTP (hyper).
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// One scripted answer: status, headers, body.
pub type Scripted = (u16, Vec<(&'static str, String)>, String);

pub fn answer(status: u16, body: &str) -> Scripted {
    (status, Vec::new(), body.to_owned())
}

/// A vendor on loopback answering its script in turn (the last answer again once the
/// script runs out), keeping what each request asked for; bound while it lives.
pub struct Vendor {
    pub url: String,
    asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Vendor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Vendor {
    pub async fn start(script: Vec<Scripted>) -> Vendor {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (script, log) = (Arc::new(script), asked.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, log) = (script.clone(), log.clone());
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let mut log = log.lock().unwrap();
                    let auth = req
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(|v| format!(" {}", v.to_str().unwrap()))
                        .unwrap_or_default();
                    log.push(format!("{} {}{auth}", req.method(), req.uri()));
                    let (status, headers, body) = &script[(log.len() - 1).min(script.len() - 1)];
                    let mut res = http::Response::builder().status(*status);
                    for (k, v) in headers {
                        res = res.header(*k, v);
                    }
                    let res = res.body(Full::new(Bytes::from(body.clone()))).unwrap();
                    std::future::ready(Ok::<_, Infallible>(res))
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Vendor { url, asked, task }
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}
