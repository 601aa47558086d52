//! Control socket requests: whatever a client sends (the server has already cut it at 64 KiB
//! and one line), parsing it as a `Request` never panics, and an accepted request serializes
//! back to JSON that parses to the same request.
#![no_main]

use dnet_proto::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = serde_json::from_str::<Request>(text) {
        let again = serde_json::to_string(&req).expect("a parsed request serializes");
        let back: Request = serde_json::from_str(&again).expect("and parses back");
        assert_eq!(back, req);
    }
});
