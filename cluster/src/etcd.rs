//! Connecting to etcd: endpoints, TLS files, credentials, and one timeout around every request.
//!
//! The client's balanced channel waits for a ready endpoint without limit when none answers, and
//! keeps choosing a dead member among live ones, so every request goes through `Conn::call`,
//! which bounds it by the request timeout and fails over to the next endpoint.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Mutex;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use crate::error::ClusterError;
use crate::keys::DEFAULT_PREFIX;

/// TLS files, as `--etcd-cacert`, `--etcd-cert`, `--etcd-key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle that signed etcd's server certificate (`None`: the system roots are not
    /// used, so give it whenever etcd's certificate is not from a public CA).
    pub ca: Option<PathBuf>,
    /// Client certificate, for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
}

/// etcd user and password. The password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

impl Credentials {
    /// From values at hand.
    pub fn new(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The password is the first line of `path` (a password never comes from a flag, where
    /// `ps` would show it).
    pub fn from_file(user: &str, path: &std::path::Path) -> Result<Credentials, ClusterError> {
        let s = std::fs::read_to_string(path).map_err(|error| ClusterError::PasswordFile {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(Credentials::new(user, s.lines().next().unwrap_or("")))
    }

    /// The password is environment variable `var`.
    pub fn from_env(user: &str, var: &str) -> Result<Credentials, ClusterError> {
        let p = std::env::var(var).map_err(|_| ClusterError::PasswordEnv { var: var.into() })?;
        Ok(Credentials::new(user, &p))
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of every etcd member (`http://10.200.0.100:2379`); a request goes to any
    /// one that answers.
    pub endpoints: Vec<String>,
    /// Key prefix, [`DEFAULT_PREFIX`] unless `--etcd-prefix` says otherwise.
    pub prefix: String,
    /// TLS files; `None` for plain HTTP.
    pub tls: Option<TlsFiles>,
    /// User and password, for etcd with `auth enable`.
    pub credentials: Option<Credentials>,
    /// Bound on each request (and on connecting).
    pub request_timeout: Duration,
}

impl EtcdOptions {
    /// Plain-HTTP options for `endpoints` (a comma-separated list, as `--etcd` and
    /// `DNET_ETCD` take it) with the default prefix and a 5 s request timeout.
    pub fn new(endpoints: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            prefix: DEFAULT_PREFIX.into(),
            tls: None,
            credentials: None,
            request_timeout: Duration::from_secs(5),
        }
    }

    fn connect_options(&self) -> Result<ConnectOptions, ClusterError> {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(self.request_timeout)
            // A member cut off from its leader must not serve stale watches.
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        if let Some(c) = &self.credentials {
            o = o.with_user(c.user.clone(), c.password.clone());
        }
        if let Some(t) = &self.tls {
            let read = |flag: &'static str, path: &PathBuf| {
                std::fs::read(path).map_err(|error| ClusterError::TlsFile {
                    flag,
                    path: path.clone(),
                    error,
                })
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &t.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read("--etcd-cacert", ca)?));
            }
            match (&t.cert, &t.key) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(Identity::from_pem(
                        read("--etcd-cert", c)?,
                        read("--etcd-key", k)?,
                    ));
                }
                (None, None) => {}
                _ => return Err(ClusterError::TlsPair),
            }
            if let Some(e) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(ClusterError::TlsNeedsHttps {
                    endpoint: e.clone(),
                });
            }
            o = o.with_tls(tls);
        }
        Ok(o)
    }
}

/// A client pinned to one endpoint that answers, failing over to the next on trouble.
///
/// The client's own balancing over several endpoints keeps sending requests to a dead member
/// (each then fails with "connection refused"), so the list is walked here instead: connect
/// to the first endpoint that answers a probe, stay there while it answers, and on a failure
/// that says nothing reached etcd move on to the next one and retry there.
pub(crate) struct Conn {
    endpoints: Vec<String>,
    options: ConnectOptions,
    timeout: Duration,
    pinned: Mutex<(usize, Client)>,
    probe_key: String,
}

impl Conn {
    /// Connects to the first endpoint that answers, trying them in order from `start`.
    pub(crate) async fn connect(opts: &EtcdOptions, start: usize) -> Result<Conn, ClusterError> {
        if opts.endpoints.is_empty() {
            return Err(ClusterError::NoEndpoints);
        }
        let options = opts.connect_options()?;
        let probe_key = format!("{}/", crate::keys::Layout::new(&opts.prefix).prefix());
        let (i, client) = pin(
            &opts.endpoints,
            &options,
            opts.request_timeout,
            &probe_key,
            start,
        )
        .await?;
        Ok(Conn {
            endpoints: opts.endpoints.clone(),
            options,
            timeout: opts.request_timeout,
            pinned: Mutex::new((i, client)),
            probe_key,
        })
    }

    /// Index of the endpoint in use.
    pub(crate) fn pinned(&self) -> usize {
        self.pinned.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    fn client(&self) -> (usize, Client) {
        self.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs one request under the timeout; `f` gets a handle of the client and may be called
    /// once more per other endpoint if the request did not reach etcd.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, ClusterError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let (i, client) = self.client();
        let endpoint = &self.endpoints[i];
        match bounded(endpoint, op, self.timeout, f(client)).await {
            Err(e) if self.endpoints.len() > 1 && unreached(&e) => {
                let Ok((j, client)) = pin(
                    &self.endpoints,
                    &self.options,
                    self.timeout,
                    &self.probe_key,
                    i + 1,
                )
                .await
                else {
                    return Err(e);
                };
                *self.pinned.lock().unwrap_or_else(|p| p.into_inner()) = (j, client.clone());
                log::info!(
                    "etcd: {} failed ({e}); now using {}",
                    self.endpoints[i],
                    self.endpoints[j]
                );
                bounded(&self.endpoints[j], op, self.timeout, f(client)).await
            }
            r => r,
        }
    }

    /// The error for a request that failed outside [`Conn::call`] (a stream).
    pub(crate) fn error(&self, op: &'static str, error: etcd_client::Error) -> ClusterError {
        ClusterError::Etcd {
            endpoints: self.endpoints[self.pinned()].clone(),
            op,
            error,
        }
    }

    /// The error for a stream that stopped answering.
    pub(crate) fn timeout(&self, op: &'static str, timeout: Duration) -> ClusterError {
        ClusterError::Timeout {
            endpoints: self.endpoints[self.pinned()].clone(),
            op,
            timeout,
        }
    }
}

/// Whether a failure says the request may not have reached a working member (so another
/// member is worth a try): timeouts, transport errors, "unavailable" (no connection, no
/// leader).
fn unreached(e: &ClusterError) -> bool {
    match e {
        ClusterError::Timeout { .. } => true,
        ClusterError::Etcd { error, .. } => match error {
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
            etcd_client::Error::GRpcStatus(s) => matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
            ),
            _ => false,
        },
        _ => false,
    }
}

/// Connects to the first of `endpoints` (from `start`, wrapping) that answers a probe.
async fn pin(
    endpoints: &[String],
    options: &ConnectOptions,
    timeout: Duration,
    probe_key: &str,
    start: usize,
) -> Result<(usize, Client), ClusterError> {
    let mut last = None;
    for k in 0..endpoints.len() {
        let i = (start + k) % endpoints.len();
        let ep = &endpoints[i];
        let attempt = async {
            let client = bounded(
                ep,
                "connect",
                timeout,
                Client::connect([ep.as_str()], Some(options.clone())),
            )
            .await?;
            let mut c = client.clone();
            let key = probe_key.to_string();
            bounded(ep, "probe", timeout, async move {
                c.get(key, Some(GetOptions::new().with_count_only())).await
            })
            .await?;
            Ok::<_, ClusterError>(client)
        };
        match attempt.await {
            Ok(c) => return Ok((i, c)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one endpoint"))
}

/// The view's copy of a key-value pair.
pub(crate) fn entry(kv: &etcd_client::KeyValue) -> crate::view::Entry {
    crate::view::Entry {
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

async fn bounded<T>(
    endpoints: &str,
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => Err(ClusterError::Etcd {
            endpoints: endpoints.into(),
            op,
            error,
        }),
        Err(_) => Err(ClusterError::Timeout {
            endpoints: endpoints.into(),
            op,
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_on_commas() {
        let o = EtcdOptions::new("http://a:2379, http://b:2379,,");
        assert_eq!(o.endpoints, vec!["http://a:2379", "http://b:2379"]);
        assert_eq!(o.prefix, "/dnet");
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials::new("root", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn password_sources_name_the_input() {
        let e =
            Credentials::from_file("root", std::path::Path::new("/nonexistent/pw")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
        let e = Credentials::from_env("root", "DNET_TEST_UNSET_PASSWORD_VAR").unwrap_err();
        assert!(
            e.to_string().contains("DNET_TEST_UNSET_PASSWORD_VAR"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("dnet-pw-{}", std::process::id()));
        std::fs::write(&dir, "pw1\nignored\n").unwrap();
        let c = Credentials::from_file("root", &dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(c, Credentials::new("root", "pw1"));
    }

    #[test]
    fn tls_options_are_checked_before_connecting() {
        let mut o = EtcdOptions::new("http://127.0.0.1:2379");
        o.tls = Some(TlsFiles::default());
        assert!(matches!(
            o.connect_options(),
            Err(ClusterError::TlsNeedsHttps { .. })
        ));
        o.tls = Some(TlsFiles {
            cert: Some("/x".into()),
            ..Default::default()
        });
        assert!(matches!(o.connect_options(), Err(ClusterError::TlsPair)));
        o.endpoints = vec!["https://127.0.0.1:2379".into()];
        o.tls = Some(TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        });
        let e = o.connect_options().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("reading --etcd-cacert /nonexistent/ca.pem"),
            "{e}"
        );
    }
}
