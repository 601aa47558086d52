//! The `--config` TOML file: `config::file::parse` on any text never panics, and a refusal
//! names a line of the text.
#![no_main]

use dnet::config::file::{parse, FileError};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(Path::new("fuzz.toml"), text) {
        Ok(_) => {}
        Err(FileError::Invalid { line, .. } | FileError::UnknownKey { line, .. }) => {
            assert!(
                line >= 1 && line <= text.matches('\n').count() + 1,
                "line {line} of a {}-line text",
                text.matches('\n').count() + 1
            );
        }
        Err(e) => panic!("parse of in-memory text failed with {e}"),
    }
});
