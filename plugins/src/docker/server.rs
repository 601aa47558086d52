//! The plugin socket: HTTP/1.1 on a unix socket, served by hyper on a current-thread tokio
//! runtime on its own thread. Requests are handed to one plain thread that owns the
//! [`Driver`] and does the blocking work (netlink, backend calls that may wait on etcd), so no
//! blocking call runs on the runtime and no lock is shared. That thread is spawned by
//! [`PluginServer::start`]'s caller, so it lives in the caller's network namespace: the host's,
//! where the bridges are.

use super::driver::{Driver, Reply};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Largest request body accepted (libnetwork's are a few hundred bytes).
const MAX_BODY: usize = 1 << 20;
/// Content type of plugin API answers.
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// Why the plugin socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The plugin directory or socket could not be made.
    #[error("cannot serve the Docker plugin socket {path}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another process answers on the socket.
    #[error("another dnet Docker plugin answers on {path}: stop it first, or use another plugin directory")]
    AlreadyServing {
        /// The socket.
        path: PathBuf,
    },
    /// A thread could not be started.
    #[error("cannot start the Docker plugin's threads")]
    Thread(#[source] io::Error),
}

type Job = (String, Vec<u8>, tokio::sync::oneshot::Sender<Reply>);

/// The running plugin socket; dropping it stops serving and removes the socket file.
#[derive(Debug)]
pub struct PluginServer {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
}

impl PluginServer {
    /// Serves `driver` on `socket` (its directory is created if missing). A stale socket file
    /// nobody answers on is replaced; a live one is [`ServerError::AlreadyServing`].
    pub fn start(socket: &Path, driver: Driver) -> Result<PluginServer, ServerError> {
        let sock_err = |source| ServerError::Socket {
            path: socket.to_path_buf(),
            source,
        };
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).map_err(sock_err)?;
        }
        if socket.exists() {
            if UnixStream::connect(socket).is_ok() {
                return Err(ServerError::AlreadyServing {
                    path: socket.to_path_buf(),
                });
            }
            std::fs::remove_file(socket).map_err(sock_err)?;
        }
        let listener = UnixListener::bind(socket).map_err(sock_err)?;
        listener.set_nonblocking(true).map_err(sock_err)?;

        let (tx, rx) = mpsc::channel::<Job>();
        let dispatcher = std::thread::Builder::new()
            .name("dnet-docker".into())
            .spawn(move || {
                let mut driver = driver;
                for (method, body, reply) in rx {
                    // A bug in one request must not stop the plugin for every later one.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        driver.handle(&method, &body)
                    }))
                    .unwrap_or_else(|_| Reply {
                        status: 500,
                        body: json!({ "Err": format!("dnet: {method}: internal error (see the switch's log)") }),
                    });
                    let _ = reply.send(r);
                }
            })
            .map_err(ServerError::Thread)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let http = std::thread::Builder::new()
            .name("dnet-docker-http".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("docker plugin: cannot start its runtime: {e}");
                        return;
                    }
                };
                rt.block_on(serve(listener, tx, stop_rx));
            })
            .map_err(ServerError::Thread)?;
        Ok(PluginServer {
            socket: socket.to_path_buf(),
            stop: Some(stop_tx),
            http: Some(http),
            dispatcher: Some(dispatcher),
        })
    }

    /// The socket served.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops serving (in-flight requests are dropped), waits for the threads, and removes the
    /// socket file.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
        if let Some(h) = self.dispatcher.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: UnixListener,
    jobs: mpsc::Sender<Job>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("docker plugin: cannot watch its socket: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        log::warn!("docker plugin: accept: {e}");
                        continue;
                    }
                };
                let jobs = jobs.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, jobs.clone()));
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                    {
                        log::debug!("docker plugin: connection: {e}");
                    }
                });
            }
        }
    }
}

fn reply(status: u16, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = CONTENT_TYPE.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(
    req: Request<Incoming>,
    jobs: mpsc::Sender<Job>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.uri().path().to_string();
    if req.method() != hyper::Method::POST {
        return Ok(reply(
            405,
            &json!({ "Err": format!("dnet: {} {method}: the plugin API takes POST", req.method()) }),
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => {
            return Ok(reply(
                413,
                &json!({ "Err": format!("dnet: {method}: unreadable body ({e}); the limit is {MAX_BODY} bytes") }),
            ))
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if jobs.send((method.clone(), body, tx)).is_err() {
        return Ok(reply(
            503,
            &json!({ "Err": "dnet: the plugin is stopping" }),
        ));
    }
    Ok(match rx.await {
        Ok(r) => reply(r.status, &r.body),
        Err(_) => reply(
            500,
            &json!({ "Err": format!("dnet: {method}: the driver thread ended") }),
        ),
    })
}
