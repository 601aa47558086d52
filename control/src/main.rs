//! `dnetctl`: run the dnet demo, and query a running `dnet-switch`.

mod attach_cmd;
mod demo;
mod key_cmds;
mod network_cmd;
mod stats_cmd;
mod switch_cmds;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Control tool for dnet, a userspace learning Ethernet switch that joins the container bridges
/// of several hosts over GRE tunnels.
#[derive(Debug, Parser)]
#[command(
    name = "dnetctl",
    version,
    after_help = "First time? Build everything and watch it work:\n  \
                  cargo build --release && sudo target/release/dnetctl demo"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    Demo(demo::DemoArgs),
    Attach(attach_cmd::AttachArgs),
    Detach(attach_cmd::DetachArgs),
    Stats(stats_cmd::StatsArgs),
    Show(switch_cmds::ShowArgs),
    Fdb(switch_cmds::FdbArgs),
    Peer(switch_cmds::PeerArgs),
    Conflicts(switch_cmds::ConflictsArgs),
    Keygen(key_cmds::KeygenArgs),
    Pubkey(key_cmds::PubkeyArgs),
    Network(network_cmd::NetworkArgs),
    /// Print a shell completion script, e.g. `dnetctl completions bash > /etc/bash_completion.d/dnetctl`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli: Cli = dnet_cli::parse();
    let r = match cli.cmd {
        Cmd::Demo(a) => demo::run(a),
        Cmd::Attach(a) => attach_cmd::run_attach(a),
        Cmd::Detach(a) => attach_cmd::run_detach(a),
        Cmd::Stats(a) => stats_cmd::run(a),
        Cmd::Show(a) => switch_cmds::run_show(a),
        Cmd::Fdb(a) => switch_cmds::run_fdb(a),
        Cmd::Peer(a) => switch_cmds::run_peer(a),
        Cmd::Conflicts(a) => switch_cmds::run_conflicts(a),
        Cmd::Keygen(a) => key_cmds::run_keygen(a),
        Cmd::Pubkey(a) => key_cmds::run_pubkey(a),
        Cmd::Network(a) => network_cmd::run(a),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "dnetctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnetctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
