//! `dnet-cni`: the CNI plugin binary. The runtime runs it with `CNI_*` in the environment and
//! the network configuration on stdin; it prints the result (or the CNI error object) on
//! stdout and exits 0 (or 1). Everything else is in `dnet_plugins::cni`.

use dnet_plugins::backend::Backend;
use dnet_plugins::cni::{self, code, CniError, Invocation};
use dnet_plugins::control::ControlClient;
use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .init();
    let inv = Invocation::from_env();
    let mut stdin = Vec::new();
    let result = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => cni::run(&inv, &stdin, &|c| {
            Box::new(ControlClient::new(c.socket())) as Box<dyn Backend>
        }),
        // VERSION needs no stdin, and a runtime may send none.
        Err(_) if inv.command.as_deref() == Some("VERSION") => {
            cni::run(&inv, b"{}", &|c| Box::new(ControlClient::new(c.socket())))
        }
        Err(e) => Err((
            cni::types::LATEST.to_string(),
            CniError::new(
                code::IO_FAILURE,
                "cannot read stdin",
                format!("reading the network configuration: {e}"),
            ),
        )),
    };
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err((version, e)) => {
            eprintln!("dnet-cni: {}: {}", e.msg, e.details);
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
