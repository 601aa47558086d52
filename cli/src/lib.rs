//! What `dnet-switch` and `dnetctl` share at the command line, so that both report a bad
//! command line the same way as every other error:
//!
//! ```text
//! dnet-switch: error: --ttl 300: above the largest TTL 255: use 1 to 255
//! ```
//!
//! - [`parse`] parses the arguments; a usage error is printed in that one format (the flag,
//!   the value, what is wrong and the fix, then a pointer to `--help`) and exits with
//!   [`EXIT_USAGE`]. Runtime errors exit with [`EXIT_FAILURE`].
//! - [`int_in`] is a clap value parser for a bounded integer whose error says the bounds as a
//!   fix ("use 1 to 255"), instead of clap's `not in 0..=255` or a type's range.
#![deny(unsafe_code)]

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;
use std::fmt::Display;
use std::str::FromStr;

/// Exit status of a usage error: a flag, value or subcommand the command line got wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit status of a runtime error: the command line was fine, the work failed.
pub const EXIT_FAILURE: u8 = 1;

/// Parses the process's arguments into `P`. `--help` and `--version` print and exit 0; a usage
/// error prints `BIN: error: ...` (see [`usage_message`]) and exits with [`EXIT_USAGE`].
pub fn parse<P: Parser>() -> P {
    match P::try_parse() {
        Ok(p) => p,
        Err(e) => exit_on(e),
    }
}

/// Prints a clap error in dnet's format and exits: 0 for help and version, else
/// [`EXIT_USAGE`].
pub fn exit_on(e: clap::Error) -> ! {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let bin = bin_name();
            eprintln!("{bin}: error: {}", usage_message(&e));
            eprintln!("(see `{bin} --help`)");
            std::process::exit(EXIT_USAGE.into())
        }
    }
}

fn bin_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "dnet".into())
}

/// One line for a clap usage error: the flag and value it is about, what is wrong, and the
/// fix (valid values, the nearest flag, the bounds).
pub fn usage_message(e: &clap::Error) -> String {
    let ctx = |k| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => Some(v.join(", ")),
        _ => None,
    };
    // "--ttl <N>" → "--ttl": the value follows.
    let arg =
        ctx(ContextKind::InvalidArg).map(|a| a.split([' ', '=']).next().unwrap_or(&a).to_string());
    let value = ctx(ContextKind::InvalidValue);
    match e.kind() {
        ErrorKind::ValueValidation => {
            // Our parsers' errors already carry the fix; clap's own (e.g. an IP address)
            // say only what is wrong.
            let why = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "not accepted".into());
            let mut m = format!(
                "{} {}: {why}",
                arg.unwrap_or_default(),
                value.unwrap_or_default()
            );
            if !why.contains("use ") {
                let name = ctx(ContextKind::InvalidArg).unwrap_or_default();
                m.push_str(&format!(": give {}", expected(&name)));
            }
            m
        }
        ErrorKind::InvalidValue => {
            let valid = ctx(ContextKind::ValidValue).unwrap_or_default();
            match value.as_deref() {
                Some("") | None => format!(
                    "{} needs a value: use one of {valid}",
                    arg.unwrap_or_default()
                ),
                Some(v) => format!(
                    "{} {v}: not a valid value: use one of {valid}",
                    arg.unwrap_or_default()
                ),
            }
        }
        ErrorKind::UnknownArgument => {
            let given = ctx(ContextKind::InvalidArg).unwrap_or_default();
            let negative =
                given.len() > 1 && given[1..].chars().all(|c| c.is_ascii_digit() || c == '.');
            if negative {
                return format!(
                    "{given}: a negative number where a flag or value was expected: \
                     use a value of 0 or more"
                );
            }
            match ctx(ContextKind::SuggestedArg) {
                Some(s) => format!("no flag {given}: did you mean {s}?"),
                None => format!("no flag {given}: the flags are listed by --help"),
            }
        }
        ErrorKind::InvalidSubcommand => {
            let given = ctx(ContextKind::InvalidSubcommand).unwrap_or_default();
            match ctx(ContextKind::SuggestedSubcommand) {
                Some(s) => format!("no command {given}: did you mean {s}?"),
                None => format!("no command {given}: the commands are listed by --help"),
            }
        }
        ErrorKind::MissingRequiredArgument => format!(
            "missing {}: give it (see the usage in --help)",
            ctx(ContextKind::InvalidArg).unwrap_or_default()
        ),
        ErrorKind::ArgumentConflict => format!(
            "{} cannot be used with {}: drop one of them",
            arg.unwrap_or_default(),
            ctx(ContextKind::PriorArg).unwrap_or_default()
        ),
        _ => first_line(e),
    }
}

/// What a flag whose value name is in `arg` ("--peer <IP>") expects, for the fix of an error
/// from clap's own parsers.
fn expected(arg: &str) -> String {
    let name = arg
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(n, _)| n)
        .unwrap_or("");
    match name {
        "IP" => "an IPv4 address, e.g. 10.200.0.2".into(),
        "ADDR:PORT" => "an address and port, e.g. 127.0.0.1:9464".into(),
        "IP/PREFIX" => "an address with its prefix length, e.g. 10.77.0.5/16".into(),
        "CIDR" => "a subnet, e.g. 10.78.0.0/16".into(),
        "MAC" => "a MAC address, e.g. 02:00:0a:4d:01:07".into(),
        "N" | "MS" | "SECONDS" | "PPS" | "PORT" => "a whole number".into(),
        "" => "a value as --help describes".into(),
        other => format!("a {other} as --help describes"),
    }
}

/// clap's own message, without its `error: ` prefix and usage block.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or("").trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// A clap value parser for an integer in `lo..=hi`, whose error names the bound crossed and
/// gives the range as the fix (`above the largest TTL 255: use 1 to 255`). `what` names the
/// quantity ("TTL", "keepalive interval in ms").
pub fn int_in<T>(
    lo: T,
    hi: T,
    what: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |s: &str| {
        let fix = if hi_is_max(hi) {
            format!("use {lo} or more")
        } else {
            format!("use {lo} to {hi}")
        };
        match s.trim().parse::<T>() {
            Ok(v) if v < lo => Err(format!("below the smallest {what} {lo}: {fix}")),
            Ok(v) if v > hi => Err(format!("above the largest {what} {hi}: {fix}")),
            Ok(v) => Ok(v),
            Err(_) => {
                // Beyond the type's range (a negative number, or too many digits), or not a
                // number at all.
                let t = s.trim();
                let digits = t.trim_start_matches(['-', '+']);
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    Err(format!("not a whole number: {fix}"))
                } else if t.starts_with('-') {
                    Err(format!("below the smallest {what} {lo}: {fix}"))
                } else {
                    Err(format!("above the largest {what} {hi}: {fix}"))
                }
            }
        }
    }
}

/// Whether `hi` is the type's largest value, in which case "use lo or more" reads better than
/// "use 10 to 18446744073709551615".
fn hi_is_max<T: Display>(hi: T) -> bool {
    let s = hi.to_string();
    [
        u8::MAX.to_string(),
        u16::MAX.to_string(),
        u32::MAX.to_string(),
        u64::MAX.to_string(),
        usize::MAX.to_string(),
    ]
    .contains(&s)
        && s != "255"
        && s != "65535"
        && s != "4294967295"
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    #[command(name = "t")]
    struct T {
        #[arg(long, value_parser = int_in(1u8, 255, "TTL"))]
        ttl: Option<u8>,
        #[arg(long, value_parser = int_in(10u64, u64::MAX, "keepalive interval in ms"))]
        interval: Option<u64>,
        #[arg(long, allow_negative_numbers = true, value_parser = int_in(0u32, u32::MAX, "GRE key"))]
        key: Option<u32>,
        #[arg(long, value_enum)]
        level: Option<Level>,
        #[arg(long, value_name = "IP")]
        peer: Option<std::net::Ipv4Addr>,
    }

    #[derive(clap::ValueEnum, Clone, Debug)]
    enum Level {
        Off,
        Info,
    }

    fn msg(args: &[&str]) -> String {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        usage_message(&T::try_parse_from(v).unwrap_err())
    }

    #[test]
    fn bounded_integers_name_the_bound_and_the_fix() {
        assert_eq!(
            msg(&["--ttl", "300"]),
            "--ttl 300: above the largest TTL 255: use 1 to 255"
        );
        assert_eq!(
            msg(&["--ttl", "0"]),
            "--ttl 0: below the smallest TTL 1: use 1 to 255"
        );
        assert_eq!(
            msg(&["--interval", "5"]),
            "--interval 5: below the smallest keepalive interval in ms 10: use 10 or more"
        );
        assert_eq!(
            msg(&["--key", "-1"]),
            "--key -1: below the smallest GRE key 0: use 0 to 4294967295"
        );
        assert_eq!(
            msg(&["--ttl", "x"]),
            "--ttl x: not a whole number: use 1 to 255"
        );
        assert_eq!(
            T::try_parse_from(["t", "--ttl", "64"]).unwrap().ttl,
            Some(64)
        );
    }

    #[test]
    fn enums_list_the_valid_values() {
        assert_eq!(
            msg(&["--level", "loud"]),
            "--level loud: not a valid value: use one of off, info"
        );
    }

    #[test]
    fn unknown_flags_suggest_the_nearest() {
        assert_eq!(msg(&["--tt", "3"]), "no flag --tt: did you mean --ttl?");
        assert_eq!(
            msg(&["--zzzz"]),
            "no flag --zzzz: the flags are listed by --help"
        );
    }

    #[test]
    fn unknown_commands_suggest_the_nearest() {
        #[derive(Parser, Debug)]
        #[command(name = "c")]
        enum C {
            Show,
            Stats,
        }
        let m = |a: &[&str]| usage_message(&C::try_parse_from(a).unwrap_err());
        assert_eq!(m(&["c", "shwo"]), "no command shwo: did you mean show?");
        assert_eq!(
            m(&["c", "zzz"]),
            "no command zzz: the commands are listed by --help"
        );
    }

    #[test]
    fn a_negative_number_is_not_called_a_flag() {
        assert_eq!(
            msg(&["--interval", "-3"]),
            "-3: a negative number where a flag or value was expected: use a value of 0 or more"
        );
    }

    #[test]
    fn other_parsers_say_what_is_wrong() {
        let m = msg(&["--peer", "nope"]);
        assert!(m.starts_with("--peer nope: "), "{m}");
        assert!(
            m.ends_with(": give an IPv4 address, e.g. 10.200.0.2"),
            "{m}"
        );
    }
}
