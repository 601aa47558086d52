//! The documentation against the binaries: every flag and config key the docs name must exist,
//! and every flag and key that exists must be in the reference, so neither can drift.
//!
//! What counts as a claim about dnet (flags of docker, etcd or `ip` must not count):
//! - a command line that runs `dnet-switch` or `dnetctl` (a line of a code block, or an inline
//!   code span, after any prompt such as `host1$ ` and `sudo`): each `--flag` must exist on that
//!   (sub)command, and each subcommand word must exist;
//! - an inline code span that starts with `--`: a flag of dnet-switch or dnetctl (write the
//!   tool's name in the span to mention another tool's flag: `dockerd --icc=false`);
//! - in the reference pages, every `--flag` outside code spans and code blocks of other tools;
//! - the flag table of docs/reference/dnet-switch.md: one row per real flag, and its key column
//!   the key the config parser reads for that flag;
//! - every TOML block, every span that looks like `key = value`, and dist/dnet.toml (with its
//!   commented settings uncommented): the config parser must accept them.
//!
//! The real CLI is what the built binaries' `--help` prints, for every subcommand; the real
//! keys are what `dnet::config::file::parse` accepts. Not root-only: it always runs.

use dnet::config::file::{self, FileError};
use dnet::config::Options;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags `--help` does not list but the binary takes (checked by running them).
const HIDDEN_SWITCH_FLAGS: &[&str] = &["--completions"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The built binary `name`, next to dnet-switch in target/<profile>/ (as the testbed finds it).
fn binary(name: &str) -> PathBuf {
    let switch = dnet_testbed::switch_binary()
        .unwrap_or_else(|e| panic!("{e} (the docs test runs the built binaries' --help)"));
    let p = switch.with_file_name(name);
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// One binary's command tree: the flags of each (sub)command, keyed by its path of words.
struct Cli {
    name: &'static str,
    commands: BTreeMap<Vec<String>, BTreeSet<String>>,
}

impl Cli {
    fn load(name: &'static str) -> Cli {
        let bin = binary(name);
        let mut commands = BTreeMap::new();
        let mut todo = vec![Vec::<String>::new()];
        while let Some(path) = todo.pop() {
            let out = Command::new(&bin)
                .args(&path)
                .arg("--help")
                .output()
                .unwrap_or_else(|e| panic!("running {} {path:?} --help: {e}", bin.display()));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{name} {} --help failed: {}",
                path.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            let (flags, subs) = parse_help(&text);
            for s in subs {
                let mut p = path.clone();
                p.push(s);
                todo.push(p);
            }
            commands.insert(path, flags);
        }
        Cli { name, commands }
    }

    fn all_flags(&self) -> BTreeSet<String> {
        self.commands.values().flatten().cloned().collect()
    }

    fn has_subcommands(&self, path: &[String]) -> bool {
        self.commands
            .keys()
            .any(|k| k.len() == path.len() + 1 && k.starts_with(path))
    }
}

/// The long flags and subcommand names in a clap `--help` text.
fn parse_help(text: &str) -> (BTreeSet<String>, Vec<String>) {
    let mut flags = BTreeSet::new();
    let mut subs = Vec::new();
    let mut in_commands = false;
    for line in text.lines() {
        let t = line.trim_start();
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if line.starts_with("  ") && !line.starts_with("   ") {
                let word = t.split_whitespace().next().unwrap_or_default();
                if word != "help" {
                    subs.push(word.to_string());
                }
                continue;
            }
            in_commands = false;
        }
        if t.starts_with('-') {
            if let Some(flag) = t.split([' ', ',', '=']).find(|w| w.starts_with("--")) {
                flags.insert(flag.to_string());
            }
        }
    }
    (flags, subs)
}

/// Where a piece of command text was found, for messages.
#[derive(Clone)]
struct At {
    file: String,
    line: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A Markdown file cut into what the checks read: code-block lines (with the block's language)
/// and inline code spans (which may cross line breaks), and the prose between spans.
struct Markdown {
    code_lines: Vec<(At, String, String)>,
    spans: Vec<(At, String)>,
    prose: Vec<(At, String)>,
}

fn markdown(file: &str, text: &str) -> Markdown {
    let mut md = Markdown {
        code_lines: Vec::new(),
        spans: Vec::new(),
        prose: Vec::new(),
    };
    let mut fence: Option<String> = None;
    // Paragraph text outside code blocks, with each character's line number.
    let mut para: Vec<(usize, char)> = Vec::new();
    let flush = |para: &mut Vec<(usize, char)>, md: &mut Markdown| {
        split_spans(file, para, md);
        para.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            match fence {
                None => {
                    flush(&mut para, &mut md);
                    fence = Some(lang.trim().to_string());
                }
                Some(_) => fence = None,
            }
            continue;
        }
        match &fence {
            Some(lang) => md.code_lines.push((
                At {
                    file: file.into(),
                    line: n,
                },
                lang.clone(),
                line.to_string(),
            )),
            None if t.is_empty() => flush(&mut para, &mut md),
            None => {
                para.extend(line.chars().map(|c| (n, c)));
                para.push((n, '\n'));
            }
        }
    }
    flush(&mut para, &mut md);
    md
}

/// Splits one paragraph into code spans (runs of N backticks to the next run of N) and prose.
fn split_spans(file: &str, para: &[(usize, char)], md: &mut Markdown) {
    let at = |i: usize| At {
        file: file.into(),
        line: para.get(i).map_or(0, |p| p.0),
    };
    let text = |a: usize, b: usize| -> String {
        para[a..b]
            .iter()
            .map(|p| if p.1 == '\n' { ' ' } else { p.1 })
            .collect()
    };
    let run = |i: usize| para[i..].iter().take_while(|p| p.1 == '`').count();
    let mut i = 0;
    let mut prose_start = 0;
    while i < para.len() {
        if para[i].1 != '`' {
            i += 1;
            continue;
        }
        let n = run(i);
        let mut j = i + n;
        let close = loop {
            if j >= para.len() {
                break None;
            }
            if para[j].1 == '`' {
                let m = run(j);
                if m == n {
                    break Some(j);
                }
                j += m;
            } else {
                j += 1;
            }
        };
        match close {
            Some(j) => {
                md.prose.push((at(prose_start), text(prose_start, i)));
                md.spans.push((at(i), text(i + n, j).trim().to_string()));
                i = j + n;
                prose_start = i;
            }
            None => i += n,
        }
    }
    md.prose
        .push((at(prose_start), text(prose_start, para.len())));
}

/// The shell commands in a line or span: split at `&&`, `||`, ` | `, `;`, and stripped of a
/// prompt (`host1$ `, `# `), `sudo` and `sh -c '`. A `|` within a word (`gre|udp`, `\|` in a
/// table) separates alternatives, not commands.
fn commands(line: &str) -> Vec<Vec<String>> {
    let line = line.split(" # ").next().unwrap_or(line);
    let mut out = Vec::new();
    for seg in line.split("&&").flat_map(|s| s.split("||")) {
        for seg in seg.split(" | ").flat_map(|s| s.split(';')) {
            let mut words: Vec<String> = seg
                .split_whitespace()
                .map(|w| w.replace("\\|", "|"))
                .map(|w| w.trim_matches(['\'', '"', '(', ')']).to_string())
                .filter(|w| !w.is_empty())
                .collect();
            if words
                .first()
                .is_some_and(|w| w.ends_with('$') || w.ends_with('#'))
            {
                words.remove(0);
            }
            while words
                .first()
                .is_some_and(|w| w == "sudo" || w == "sh" || w == "-c")
            {
                words.remove(0);
            }
            if !words.is_empty() {
                out.push(words);
            }
        }
    }
    out
}

/// The binary a command runs, if it is one of ours (`target/release/dnetctl` counts).
fn ours(cmd: &[String]) -> Option<&str> {
    let base = cmd.first()?.rsplit('/').next()?;
    ["dnet-switch", "dnetctl"].into_iter().find(|b| *b == base)
}

/// `--name` of a word like `[--port`, `--icc=false`, `--etcd-key,` or `--udp-port)`.
fn flag_of(word: &str) -> Option<String> {
    let w = word.trim_start_matches(['[', '(', '`']);
    let name: String = w
        .strip_prefix("--")?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let name = name.trim_end_matches('-');
    (!name.is_empty() && name.starts_with(|c: char| c.is_ascii_lowercase()))
        .then(|| format!("--{name}"))
}

/// The `--flag` words of free text.
fn flags_in(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '/' || c == '`')
        .filter_map(flag_of)
        .collect()
}

struct Checker {
    switch: Cli,
    ctl: Cli,
    errors: Vec<String>,
}

impl Checker {
    fn cli(&self, name: &str) -> &Cli {
        if name == "dnet-switch" {
            &self.switch
        } else {
            &self.ctl
        }
    }

    fn known_anywhere(&self, flag: &str) -> bool {
        self.switch.all_flags().contains(flag)
            || self.ctl.all_flags().contains(flag)
            || HIDDEN_SWITCH_FLAGS.contains(&flag)
    }

    /// A command line that runs one of ours: its subcommands and flags must exist.
    fn invocation(&mut self, at: &At, cmd: &[String]) {
        let Some(name) = ours(cmd) else { return };
        let cli = self.cli(name);
        let mut path: Vec<String> = Vec::new();
        let mut flag_sets: Vec<Vec<String>> = Vec::new();
        let mut errors = Vec::new();
        let mut words = cmd[1..].iter().peekable();
        // Subcommand words, while the command has subcommands and the word is not an argument.
        while cli.has_subcommands(&path) {
            let Some(w) = words.peek() else { break };
            if w.starts_with('-') || w.chars().any(|c| c.is_ascii_uppercase()) {
                break;
            }
            let alternatives: Vec<&str> = w.trim_end_matches([',', '.']).split('|').collect();
            for a in &alternatives {
                let mut p = path.clone();
                p.push(a.to_string());
                if !cli.commands.contains_key(&p) {
                    errors.push(format!(
                        "{at}: `{}`: {} has no command `{}`",
                        cmd.join(" "),
                        cli.name,
                        p.join(" ")
                    ));
                }
            }
            words.next();
            if alternatives.len() > 1 {
                flag_sets.extend(alternatives.iter().map(|a| {
                    let mut p = path.clone();
                    p.push(a.to_string());
                    p
                }));
                break;
            }
            path.push(alternatives[0].to_string());
        }
        if flag_sets.is_empty() {
            flag_sets.push(path.clone());
        }
        for w in words {
            let Some(flag) = flag_of(w) else { continue };
            let known = flag_sets.iter().all(|p| {
                cli.commands.get(p).is_some_and(|f| f.contains(&flag))
                    || (cli.name == "dnet-switch" && HIDDEN_SWITCH_FLAGS.contains(&flag.as_str()))
            });
            if !known {
                errors.push(format!(
                    "{at}: `{}`: `{} {}` has no flag {flag}",
                    cmd.join(" "),
                    cli.name,
                    path.join(" ")
                ));
            }
        }
        self.errors.extend(errors);
    }

    /// Every place in a Markdown file that runs one of ours, and every span that names a flag.
    fn markdown(&mut self, file: &str, md: &Markdown) {
        for (at, _, line) in &md.code_lines {
            for cmd in commands(line) {
                self.invocation(at, &cmd);
            }
        }
        for (at, span) in &md.spans {
            if span.starts_with("--") {
                for flag in flags_in(span).into_iter().take(1) {
                    if !self.known_anywhere(&flag) {
                        self.errors.push(format!(
                            "{at}: `{span}`: no such flag in dnet-switch or dnetctl (for another \
                             tool's flag, name the tool in the span: `dockerd --mtu`)"
                        ));
                    }
                }
            }
            for cmd in commands(span) {
                self.invocation(at, &cmd);
            }
            if looks_like_setting(span) {
                self.toml(at, span);
            }
        }
        if file.starts_with("docs/reference/") {
            // Prose of the reference names flags bare: each must be one of ours.
            for (at, text) in &md.prose {
                for flag in flags_in(text) {
                    if !self.known_anywhere(&flag) {
                        self.errors.push(format!(
                            "{at}: {flag}: no such flag in dnet-switch or dnetctl"
                        ));
                    }
                }
            }
        }
        // Every TOML block, each on its own.
        let mut block = String::new();
        let mut first: Option<At> = None;
        let mut last_line = 0;
        for (at, lang, line) in &md.code_lines {
            if lang != "toml" {
                continue;
            }
            if at.line != last_line + 1 && first.is_some() {
                let a = first.take().expect("set");
                self.toml(&a, &block);
                block.clear();
            }
            first.get_or_insert(at.clone());
            block.push_str(line);
            block.push('\n');
            last_line = at.line;
        }
        if let Some(a) = first {
            self.toml(&a, &block);
        }
    }

    /// The config parser must accept `text`.
    fn toml(&mut self, at: &At, text: &str) {
        if let Err(e) = file::parse(Path::new(&at.file), text) {
            let first = text.trim().lines().next().unwrap_or_default();
            self.errors.push(format!(
                "{at}: TOML starting `{first}`: the config parser refuses it: {e}"
            ));
        }
    }
}

/// `key = value` with a lowercase key: a config setting written inline.
fn looks_like_setting(span: &str) -> bool {
    let Some((k, v)) = span.split_once(" = ") else {
        return false;
    };
    !v.trim().is_empty() && !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The Markdown files checked: the README and everything under docs/.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut dirs = vec![root().join("docs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                let rel = p.strip_prefix(root()).expect("under root");
                files.push(rel.display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// The rows of the flag table of docs/reference/dnet-switch.md: (line, flag, key cell).
fn switch_table(text: &str) -> Vec<(usize, String, String)> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("| flag | key |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("| ---") {
            continue;
        }
        if !line.starts_with('|') {
            if !rows.is_empty() {
                break;
            }
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let flags_cell = cells[0].trim_start_matches('|').trim();
        let key = cells.get(1).copied().unwrap_or_default().trim().to_string();
        for flag in flags_in(flags_cell) {
            rows.push((i + 1, flag, key.clone()));
        }
    }
    rows
}

#[test]
fn docs_name_only_real_flags_and_keys_and_the_reference_names_them_all() {
    let mut c = Checker {
        switch: Cli::load("dnet-switch"),
        ctl: Cli::load("dnetctl"),
        errors: Vec::new(),
    };
    assert!(
        c.switch.all_flags().contains("--peer") && c.ctl.commands.len() > 10,
        "the --help parser found too little: {:?} / {:?}",
        c.switch.commands,
        c.ctl.commands.keys()
    );
    for &hidden in HIDDEN_SWITCH_FLAGS {
        let out = Command::new(binary("dnet-switch"))
            .args([hidden, "bash"])
            .output()
            .expect("running dnet-switch");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("dnet-switch"),
            "dnet-switch {hidden} bash failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // 1. What the docs say, against the CLI and the parser.
    for f in markdown_files() {
        let md = markdown(&f, &read(&f));
        c.markdown(&f, &md);
    }
    let service = read("dist/dnet-switch.service");
    for (i, line) in service.lines().enumerate() {
        if let Some(cmd) = line.strip_prefix("ExecStart=") {
            let at = At {
                file: "dist/dnet-switch.service".into(),
                line: i + 1,
            };
            for cmd in commands(cmd) {
                c.invocation(&at, &cmd);
            }
        }
    }
    let dist = read("dist/dnet.toml");
    let dist_at = At {
        file: "dist/dnet.toml".into(),
        line: 1,
    };
    c.toml(&dist_at, &dist);
    // Its commented settings (`# key = value`) too: all of them at once.
    let uncommented: String = dist
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if looks_like_setting(rest.split(" # ").next().unwrap_or(rest).trim()) => {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    c.toml(&dist_at, &uncommented);
    let dist_keys: BTreeSet<String> = uncommented
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_string()))
        .collect();
    for key in Options::keys() {
        if !dist_keys.contains(&key) {
            c.errors.push(format!(
                "dist/dnet.toml: key `{key}` is missing (it lists every setting)"
            ));
        }
    }

    // 2. The flag table of the dnet-switch reference: exactly the real flags, with their keys.
    let reference = "docs/reference/dnet-switch.md";
    let rows = switch_table(&read(reference));
    let table_flags: BTreeSet<String> = rows.iter().map(|r| r.1.clone()).collect();
    let mut real_switch = c.switch.all_flags();
    real_switch.extend(HIDDEN_SWITCH_FLAGS.iter().map(|s| s.to_string()));
    for flag in real_switch.difference(&table_flags) {
        c.errors.push(format!(
            "{reference}: dnet-switch {flag} is missing from the flag table"
        ));
    }
    let keys = Options::keys();
    let mut table_keys = BTreeSet::new();
    for (line, flag, key_cell) in &rows {
        let at = format!("{reference}:{line}");
        if !real_switch.contains(flag) {
            c.errors.push(format!(
                "{at}: {flag} is in the table but not in dnet-switch --help"
            ));
        }
        let Some(key) = key_cell
            .strip_prefix('`')
            .and_then(|k| k.split(['`', ' ']).next())
        else {
            continue; // "(none)": a flag with no key (--config, --help)
        };
        table_keys.insert(key.to_string());
        // The parser must know the key (a wrong type is fine here, an unknown key is not) ...
        if let Err(FileError::UnknownKey { .. }) =
            file::parse(Path::new(reference), &format!("{key} = 0"))
        {
            c.errors.push(format!(
                "{at}: key `{key}` is refused by the config parser as unknown"
            ));
        }
        // ... and it must be the key of this row's flag.
        if Options::flag(key).as_deref() != Some(flag.as_str()) {
            c.errors.push(format!(
                "{at}: key `{key}` is set by {:?}, not by {flag}",
                Options::flag(key)
            ));
        }
    }
    for key in &keys {
        if !table_keys.contains(key) {
            c.errors.push(format!(
                "{reference}: config key `{key}` is missing from the key column"
            ));
        }
    }

    // 3. The dnetctl reference names every command and every flag of each.
    let ctl_ref = "docs/reference/dnetctl.md";
    let ctl_text = read(ctl_ref);
    let named: BTreeSet<String> = flags_in(&ctl_text).into_iter().collect();
    let mut missing = Vec::new();
    for (path, flags) in &c.ctl.commands {
        if !path.is_empty() && !ctl_text.contains(&format!("dnetctl {}", path.join(" "))) {
            missing.push(format!(
                "{ctl_ref}: command `dnetctl {}` is not described",
                path.join(" ")
            ));
        }
        for flag in flags.difference(&named) {
            missing.push(format!(
                "{ctl_ref}: `dnetctl {} {flag}` is not described",
                path.join(" ")
            ));
        }
    }
    c.errors.extend(missing);

    assert!(
        c.errors.is_empty(),
        "the docs and the CLI disagree ({} problems):\n{}",
        c.errors.len(),
        c.errors.join("\n")
    );
}

/// The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fence = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Moving pages around must not leave a link behind: every relative link of the README and
/// docs/ names a file that exists, and a `#anchor` a heading of it.
#[test]
fn relative_links_point_at_existing_files_and_headings() {
    let mut errors = Vec::new();
    for f in markdown_files() {
        let text = read(&f);
        let dir = Path::new(&f).parent().unwrap_or(Path::new(""));
        for (i, line) in text.lines().enumerate() {
            for part in line.split("](").skip(1) {
                let Some(link) = part.split(')').next() else {
                    continue;
                };
                if link.contains("://") || link.contains(' ') {
                    continue;
                }
                let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
                let target = if path.is_empty() {
                    PathBuf::from(&f)
                } else {
                    dir.join(path)
                };
                let full = root().join(&target);
                if !full.exists() {
                    errors.push(format!("{f}:{}: link {link}: no such file", i + 1));
                } else if !anchor.is_empty()
                    && full.extension().is_some_and(|x| x == "md")
                    && !anchors(&std::fs::read_to_string(&full).unwrap_or_default())
                        .contains(anchor)
                {
                    errors.push(format!("{f}:{}: link {link}: no such heading", i + 1));
                }
            }
        }
    }
    assert!(errors.is_empty(), "broken links:\n{}", errors.join("\n"));
}

#[test]
fn headings_become_github_anchors() {
    assert_eq!(slug(" Spanning tree (`--stp`)"), "spanning-tree---stp");
    assert_eq!(
        slug(" Quickstart: two Docker hosts"),
        "quickstart-two-docker-hosts"
    );
}

#[test]
fn the_help_parser_reads_clap_output() {
    let help = "Usage: x [OPTIONS] <COMMAND>\n\nCommands:\n  add   Add a thing\n  del   \
                Remove\n  help  Print this message\n\nOptions:\n  -s, --socket <PATH>   The \
                socket [default: /run/x]\n      --no-probe\n          Skip --other here\n  -h, \
                --help  Print help\n";
    let (flags, subs) = parse_help(help);
    assert_eq!(subs, ["add", "del"]);
    assert_eq!(
        flags.into_iter().collect::<Vec<_>>(),
        ["--help", "--no-probe", "--socket"]
    );
}

#[test]
fn commands_are_found_after_prompts_sudo_and_pipes() {
    assert_eq!(
        commands("host1$ sudo dnetctl show -j | jq .ports   # the ports"),
        [vec!["dnetctl", "show", "-j"], vec!["jq", ".ports"]]
    );
    assert_eq!(
        commands("cargo build --release && sudo target/release/dnetctl demo"),
        [
            vec!["cargo", "build", "--release"],
            vec!["target/release/dnetctl", "demo"]
        ]
    );
    assert_eq!(
        commands("sudo sh -c 'dnetctl completions bash > /x'")[0][..2],
        ["dnetctl", "completions"]
    );
    assert_eq!(ours(&commands("dnetctl: error: x")[0]), None);
    assert_eq!(flag_of("[--port"), Some("--port".into()));
    assert_eq!(flag_of("--icc=false"), Some("--icc".into()));
    assert_eq!(flag_of("--udp-port)"), Some("--udp-port".into()));
    assert_eq!(flag_of("--"), None);
}

#[test]
fn spans_cross_line_breaks_and_code_blocks_keep_their_language() {
    let md = markdown(
        "x.md",
        "Run `dnetctl demo --pings N\n--mib N` now.\n\n```toml\nkey = 1\n```\n",
    );
    assert_eq!(md.spans.len(), 1);
    assert_eq!(md.spans[0].1, "dnetctl demo --pings N --mib N");
    assert_eq!(md.spans[0].0.line, 1);
    assert_eq!(md.code_lines.len(), 1);
    assert_eq!(md.code_lines[0].1, "toml");
    assert_eq!(md.code_lines[0].0.line, 5);
}
