//! `dnetctl network create | list | show | delete | leave`: the fleet's networks in etcd.
//!
//! These are fleet-wide administration and talk to etcd directly (crate `dnet_cluster`'s
//! `Admin`). What belongs to one host (its member record, its allocations) is written only by
//! that host's switch; `leave` is the exception that cleans up after a host that is gone.

use crate::switch_cmds::{human_secs, table};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use dnet_cluster::{
    Admin, Credentials, Encap, EtcdOptions, NetworkInfo, NetworkRecord, NetworkSpec, Settings,
    TlsFiles, DEFAULT_HOST_PREFIX,
};
use ipnet::Ipv4Net;
use std::io::Write;
use std::path::PathBuf;

/// The environment variable `--etcd` defaults to (as for dnet-switch).
const ETCD_ENV: &str = "DNET_ETCD";
/// The environment variable with the password of `--etcd-user`, unless
/// `--etcd-password-file` is given.
const PASSWORD_ENV: &str = "DNET_ETCD_PASSWORD";
/// Smallest MTU a network may set (the IPv4 minimum reassembly size, as dnet-switch's).
const MIN_MTU: u32 = 576;

/// How to reach etcd (every `network` command).
#[derive(Debug, Args)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated (every member) [default: $DNET_ETCD].
    #[arg(long, value_name = "URLS", global = true)]
    etcd: Option<String>,
    /// Key prefix of dnet's records [default: /dnet].
    #[arg(long, value_name = "PREFIX", global = true)]
    etcd_prefix: Option<String>,
    /// CA certificate (PEM) that signed etcd's certificate; turns on TLS (https:// URLs).
    #[arg(long, value_name = "FILE", global = true)]
    etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM), for etcd's --client-cert-auth; with --etcd-key.
    #[arg(long, value_name = "FILE", global = true, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of --etcd-cert.
    #[arg(long, value_name = "FILE", global = true, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd user; the password is the first line of --etcd-password-file, else
    /// $DNET_ETCD_PASSWORD (never a flag).
    #[arg(long, value_name = "NAME", global = true)]
    etcd_user: Option<String>,
    /// File whose first line is the password of --etcd-user.
    #[arg(long, value_name = "FILE", global = true, requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(short, long, global = true)]
    json: bool,
}

impl EtcdArgs {
    fn options(&self) -> anyhow::Result<EtcdOptions> {
        let urls = match &self.etcd {
            Some(u) => u.clone(),
            None => std::env::var(ETCD_ENV).map_err(|_| {
                anyhow!("no etcd given: pass --etcd http://HOST:2379[,...] or set {ETCD_ENV}")
            })?,
        };
        let mut o = EtcdOptions::new(&urls);
        if let Some(bad) = o
            .endpoints
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            bail!(
                "--etcd {urls}: {bad:?} is not an etcd client URL: use http://HOST:PORT (https:// with --etcd-cacert)"
            );
        }
        if let Some(p) = &self.etcd_prefix {
            o.prefix = p.clone();
        }
        if self.etcd_cacert.is_some() || self.etcd_cert.is_some() {
            o.tls = Some(TlsFiles {
                ca: self.etcd_cacert.clone(),
                cert: self.etcd_cert.clone(),
                key: self.etcd_key.clone(),
            });
        } else if let Some(u) = o.endpoints.iter().find(|u| u.starts_with("https://")) {
            bail!("--etcd {u}: https needs the CA that signed etcd's certificate: add --etcd-cacert FILE");
        }
        o.credentials = match (&self.etcd_user, &self.etcd_password_file) {
            (None, _) => None,
            (Some(u), Some(f)) => Some(Credentials::from_file(u, f)?),
            (Some(u), None) => Some(Credentials::from_env(u, PASSWORD_ENV).map_err(|_| {
                anyhow!("--etcd-user {u}: no password: add --etcd-password-file FILE, or export {PASSWORD_ENV}")
            })?),
        };
        Ok(o)
    }

    fn connect(&self) -> anyhow::Result<Admin> {
        let o = self.options()?;
        Admin::connect(&o).map_err(|e| {
            if e.is_transient() {
                anyhow!(
                    "{e}: check that etcd runs there and that --etcd (or {ETCD_ENV}) lists its client URLs"
                )
            } else {
                e.into()
            }
        })
    }
}

/// Networks defined once in etcd, that hosts join with `dnet-switch --network NAME`.
///
/// A network holds the settings every member runs with (encapsulation, GRE key, MTU) and a
/// subnet cut into one address range per host; `dnetctl attach` hands out addresses from the
/// host's range. These commands talk to etcd directly: pass --etcd (or set DNET_ETCD), and the
/// TLS and user options if etcd uses them.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  \
    export DNET_ETCD=http://10.0.0.5:2379\n  \
    dnetctl network create blue --subnet 10.78.0.0/16 --key 7\n  \
    dnet-switch --network blue --bridge docker0      (on each host)\n  \
    dnetctl network show blue")]
pub struct NetworkArgs {
    #[command(subcommand)]
    cmd: NetworkCmd,
    #[command(flatten)]
    etcd: EtcdArgs,
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Define a network: its subnet, each host's range length, and the data-path settings
    /// every member runs with. Refused if it exists.
    Create {
        /// Network name: 1 to 64 of A-Z a-z 0-9 . _ - :
        name: String,
        /// Container address space of the whole network, e.g. 10.78.0.0/16.
        #[arg(long, value_name = "CIDR")]
        subnet: String,
        /// Length of each host's address range.
        #[arg(long, value_name = "LEN", default_value_t = DEFAULT_HOST_PREFIX)]
        host_prefix: u8,
        /// Encapsulation of every member's tunnels.
        #[arg(long, value_name = "KIND", default_value = "gre")]
        encap: EncapArg,
        /// GRE-in-UDP port (with --encap udp) [default: 4754].
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        udp_port: Option<u16>,
        /// GRE key: the network's id on the wire (not a secret).
        #[arg(long, value_name = "N")]
        key: Option<u32>,
        /// TAP MTU of every member [default: each host derives it from its underlay].
        #[arg(long, value_name = "N")]
        mtu: Option<u32>,
        /// Seal every tunnel (needs --encap udp): each member must start with --private-key
        /// FILE and publishes its public key in its record; members without one get no
        /// tunnel.
        #[arg(long)]
        encrypt: bool,
    },
    /// List the networks: settings and how many members each has.
    List,
    /// One network: settings, members (underlay, range, version, last seen), range claims,
    /// allocations, and any records in it that are skipped as broken.
    Show {
        /// Network name.
        name: String,
    },
    /// Delete a network and everything under it. Refused while hosts are members, unless
    /// --force (which also revokes their range claims; their switches lose the network).
    Delete {
        /// Network name.
        name: String,
        /// Delete even with members.
        #[arg(long)]
        force: bool,
    },
    /// Release what a host holds in a network (its range, its addresses, its member record),
    /// for a host that is gone for good. Refused while the host is a member (its switch runs),
    /// unless --force.
    Leave {
        /// Network name.
        name: String,
        /// The host's id: its underlay address unless it was given another (see `network
        /// show`).
        #[arg(long, value_name = "ID")]
        host: String,
        /// Release even while the host is a member.
        #[arg(long)]
        force: bool,
    },
}

/// `--encap`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum EncapArg {
    /// GRE, IP protocol 47 (as OVS and Linux gretap).
    Gre,
    /// GRE-in-UDP (RFC 8086).
    Udp,
}

fn print(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn json(v: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

/// `dnetctl network ...`.
pub fn run(a: NetworkArgs) -> anyhow::Result<()> {
    let e = &a.etcd;
    match a.cmd {
        NetworkCmd::Create {
            name,
            subnet,
            host_prefix,
            encap,
            udp_port,
            key,
            mtu,
            encrypt,
        } => {
            if encrypt && !matches!(encap, EncapArg::Udp) {
                bail!("--encrypt: seals GRE-in-UDP only: add --encap udp (plain GRE stays cleartext, as OVS and Linux gretap speak it)");
            }
            let subnet: Ipv4Net = subnet.parse().map_err(|_| {
                anyhow!("--subnet {subnet}: not an IPv4 CIDR: use a.b.c.d/len, e.g. 10.78.0.0/16")
            })?;
            if let Some(m) = mtu.filter(|m| *m < MIN_MTU) {
                bail!("--mtu {m}: below the minimum {MIN_MTU}: use {MIN_MTU} or more, or leave it out to let each host derive it from its underlay");
            }
            let spec = NetworkSpec {
                subnet,
                host_prefix,
                settings: Settings {
                    encap: match encap {
                        EncapArg::Gre => Encap::Gre,
                        EncapArg::Udp => Encap::Udp,
                    },
                    udp_port,
                    key,
                    mtu,
                    encrypt,
                },
            };
            let rec = e.connect()?.create_network(&name, &spec)?;
            print(&if e.json {
                json(&serde_json::json!({ "name": name, "config": rec }))?
            } else {
                format!(
                    "network {name} created: {}\nstart `dnet-switch --network {name} --etcd URLS` on each host\n",
                    describe(&rec)
                )
            })
        }
        NetworkCmd::List => {
            let list = e.connect()?.list_networks()?;
            print(&if e.json {
                json(&list)?
            } else if list.is_empty() {
                "no networks: create one with `dnetctl network create NAME --subnet CIDR`\n".into()
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|n| match &n.config {
                        Some(c) => vec![
                            n.name.clone(),
                            c.subnet.to_string(),
                            format!("/{}", c.host_prefix),
                            encap(c),
                            c.settings.key.map_or_else(|| "-".into(), |k| k.to_string()),
                            c.settings
                                .mtu
                                .map_or_else(|| "auto".into(), |m| m.to_string()),
                            n.members.to_string(),
                        ],
                        None => vec![
                            n.name.clone(),
                            format!("unusable: {}", n.error.as_deref().unwrap_or("bad record")),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            n.members.to_string(),
                        ],
                    })
                    .collect();
                table(
                    &[
                        "NETWORK", "SUBNET", "PER HOST", "ENCAP", "KEY", "MTU", "MEMBERS",
                    ],
                    &rows,
                    &[false, false, false, false, true, true, true],
                )
            })
        }
        NetworkCmd::Show { name } => {
            let info = e.connect()?.show_network(&name)?;
            print(&if e.json {
                json(&info)?
            } else {
                format_show(&info)
            })
        }
        NetworkCmd::Delete { name, force } => {
            let r = e.connect()?.delete_network(&name, force)?;
            print(&if e.json {
                json(&serde_json::json!({ "name": name, "deleted": r }))?
            } else {
                format!(
                    "network {name} deleted: {} key(s){}\n",
                    r.keys,
                    if r.leases_revoked > 0 {
                        format!(", {} range lease(s) revoked", r.leases_revoked)
                    } else {
                        String::new()
                    }
                )
            })
        }
        NetworkCmd::Leave { name, host, force } => {
            let admin = e.connect()?;
            if !force {
                let info = admin.show_network(&name)?;
                if let Some(m) = info.members.iter().find(|m| m.host == host) {
                    bail!(
                        "host {host} is still a member of network {name} (last seen {} ago): stop dnet-switch there first (its record ends {} s later), or pass --force",
                        human_secs(m.last_seen_secs.unwrap_or(0).max(0) as u64),
                        m.ttl_left_secs.unwrap_or(0)
                    );
                }
            }
            let r = admin.leave(&name, &host)?;
            print(&if e.json {
                json(&serde_json::json!({ "name": name, "host": host, "released": r }))?
            } else {
                let ranges: Vec<String> = r.ranges.iter().map(|x| x.to_string()).collect();
                format!(
                    "host {host} left network {name}: member record {}, range(s) {}, {} address(es) released\n",
                    if r.member { "removed" } else { "absent" },
                    if ranges.is_empty() {
                        "none".to_string()
                    } else {
                        ranges.join(", ")
                    },
                    r.allocations.len()
                )
            })
        }
    }
}

fn encap(c: &NetworkRecord) -> String {
    match (c.settings.encap, c.settings.udp_port) {
        (Encap::Udp, Some(p)) => format!("udp:{p}"),
        (e, _) => e.to_string(),
    }
}

fn describe(c: &NetworkRecord) -> String {
    let ranges = 1u64 << (c.host_prefix - c.subnet.prefix_len());
    format!(
        "subnet {}, one /{} range per host ({ranges} hosts), encap {}, key {}, MTU {}",
        c.subnet,
        c.host_prefix,
        encap(c),
        c.settings
            .key
            .map_or_else(|| "none".into(), |k| k.to_string()),
        c.settings
            .mtu
            .map_or_else(|| "from each host's underlay".into(), |m| m.to_string()),
    ) + if c.settings.encrypt {
        ", encrypted (members need --private-key)"
    } else {
        ""
    }
}

/// The human rendering of `dnetctl network show`.
fn format_show(n: &NetworkInfo) -> String {
    let mut out = format!("network {}: {}\n", n.name, describe(&n.config));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if n.members.is_empty() {
        out += "no members\n";
    } else {
        let rows: Vec<Vec<String>> = n
            .members
            .iter()
            .map(|m| {
                vec![
                    m.host.clone(),
                    m.underlay.to_string(),
                    m.range.to_string(),
                    m.software.clone(),
                    format!("{} ago", human_secs(now.saturating_sub(m.started))),
                    m.last_seen_secs.map_or_else(
                        || "-".into(),
                        |s| format!("{} ago", human_secs(s.max(0) as u64)),
                    ),
                ]
            })
            .collect();
        out += &table(
            &[
                "HOST",
                "UNDERLAY",
                "RANGE",
                "VERSION",
                "STARTED",
                "LAST SEEN",
            ],
            &rows,
            &[false, false, false, false, true, true],
        );
    }
    let idle: Vec<String> = n
        .claims
        .iter()
        .filter(|c| !n.members.iter().any(|m| m.host == c.host))
        .map(|c| format!("{} ({})", c.range, c.host))
        .collect();
    out += &format!(
        "ranges claimed {} ({} by hosts not running now{}), addresses allocated {}\n",
        n.claims.len(),
        idle.len(),
        if idle.is_empty() {
            String::new()
        } else {
            format!(": {}", idle.join(", "))
        },
        n.allocations
    );
    for r in &n.rejected {
        out += &format!("{r}\n");
    }
    out
}
