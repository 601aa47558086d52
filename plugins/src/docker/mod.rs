//! The Docker side: libnetwork's remote network driver and remote IPAM driver, as one plugin
//! named `dnet` on `dnet.sock` in Docker's plugin directory, and a Docker engine client.
//!
//! - [`api`]: the request bodies of both APIs.
//! - [`driver`]: the driver itself, request in, reply out ([`driver::Driver`]).
//! - [`server`]: the HTTP server on the plugin socket ([`server::PluginServer`]).
//! - [`engine`]: the engine client ([`engine::Engine`]): ensure the Docker networks exist, and
//!   read running endpoints back after a restart.
//!
//! [`DockerPlugin::start`] ties them together the way the switch runs them.

pub mod api;
pub mod driver;
pub mod engine;
pub mod server;

use crate::backend::Backend;
use driver::{Driver, NetlinkLinks, RestoreReport};
use engine::{Engine, EngineError, Ensured, NetworkSpec};
use server::{PluginServer, ServerError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The plugin's name: `docker network create -d dnet --ipam-driver dnet`.
pub const PLUGIN_NAME: &str = "dnet";
/// Where Docker looks for plugin sockets.
pub const DEFAULT_PLUGIN_DIR: &str = "/run/docker/plugins";

/// The plugin socket in `dir`: `dir/dnet.sock`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(format!("{PLUGIN_NAME}.sock"))
}

/// How to run the plugin.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Directory of the plugin socket (`--docker-plugin-dir`).
    pub plugin_dir: PathBuf,
    /// The engine's socket; `None`: no engine client (no restore, no networks made).
    pub engine: Option<PathBuf>,
    /// Make sure a Docker network exists for every served network.
    pub ensure_networks: bool,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            plugin_dir: PathBuf::from(DEFAULT_PLUGIN_DIR),
            engine: Some(engine::engine_socket()),
            ensure_networks: true,
        }
    }
}

/// Why the plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The netlink socket for the veth work could not be opened.
    #[error("cannot open a netlink socket for the Docker plugin's veths")]
    Netlink(#[source] std::io::Error),
    /// The plugin socket could not be served.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// The running plugin (see the module docs); dropping it stops serving.
#[derive(Debug)]
pub struct DockerPlugin {
    server: PluginServer,
    /// What was taken over from the engine at start.
    pub restored: RestoreReport,
    /// The engine could not be read at start (then nothing was restored or released).
    pub engine_error: Option<EngineError>,
    /// Per served network: what making sure its Docker network exists did.
    pub ensured: Vec<(String, Result<Ensured, EngineError>)>,
}

impl DockerPlugin {
    /// Starts the plugin for `backend`'s networks, from the calling thread's network namespace
    /// (the host's): reads the engine's `dnet` networks and running endpoints and takes them
    /// over (releasing Docker allocations nobody holds any more), serves the plugin socket,
    /// then makes sure each served network has its Docker network. An unreachable engine is
    /// not fatal: the plugin serves, and the problem is in [`DockerPlugin::engine_error`].
    pub fn start(
        backend: Arc<dyn Backend>,
        opts: &DockerOptions,
    ) -> Result<DockerPlugin, StartError> {
        let links = NetlinkLinks::open().map_err(StartError::Netlink)?;
        let mut driver = Driver::new(backend.clone(), Box::new(links));
        let engine = opts.engine.as_ref().map(Engine::new).transpose();
        let (engine, mut engine_error) = match engine {
            Ok(e) => (e, None),
            Err(e) => (None, Some(e)),
        };
        let view = match engine.as_ref().map(Engine::dnet_networks) {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                engine_error = Some(e);
                None
            }
            None => None,
        };
        let restored = driver.restore(view.as_deref());
        for p in &restored.problems {
            log::warn!("docker plugin: restore: {p}");
        }
        for (net, addr, owner) in &restored.released {
            log::info!("docker plugin: released {addr} of {net} ({owner}): no endpoint holds it");
        }
        let server = PluginServer::start(&socket_path(&opts.plugin_dir), driver)?;
        let mut ensured = Vec::new();
        if let (Some(engine), true, None) = (&engine, opts.ensure_networks, &engine_error) {
            match backend.networks() {
                Ok(nets) => {
                    for n in nets {
                        let r = engine.ensure_network(&NetworkSpec {
                            name: n.name.clone(),
                            subnet: n.subnet,
                            mtu: n.mtu,
                        });
                        if let Err(e) = &r {
                            log::warn!("docker plugin: {e}");
                        }
                        ensured.push((n.name, r));
                    }
                }
                Err(e) => log::warn!("docker plugin: cannot list the served networks: {e}"),
            }
        }
        Ok(DockerPlugin {
            server,
            restored,
            engine_error,
            ensured,
        })
    }

    /// The plugin socket.
    pub fn socket(&self) -> &Path {
        self.server.socket()
    }

    /// Stops serving and removes the socket (also done on drop).
    pub fn stop(&mut self) {
        self.server.stop();
    }
}
