//! Switch process lifecycle: clean exit on signals, refusal of bad configuration, and the
//! testbed's own cleanup guarantee.

use dnet_testbed::traffic::ping;
use dnet_testbed::{SwitchOptions, Testbed, DEFAULT_TAP};
use std::time::Duration;

fn listed_namespaces() -> String {
    dnet_testbed::cmd::ip(&["netns", "list"]).expect("ip netns list")
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn signal_exits_zero_and_removes_tap_and_socket() {
    let tb = Testbed::new(2).expect("building testbed");
    for (i, sig) in [(0, libc::SIGTERM), (1, libc::SIGINT)] {
        let ns = &tb.host(i).ns;
        let sw = tb.start_switch(i).expect("starting switch");
        assert!(tb.link_exists(ns, DEFAULT_TAP), "no TAP while running");
        assert!(sw.socket.exists(), "no control socket while running");
        sw.signal(sig).expect("signal");
        let st = sw.wait_exit(Duration::from_secs(5)).expect("switch exit");
        assert!(
            st.success(),
            "exit after signal {sig}: {st}\n{}",
            sw.stderr()
        );
        assert!(
            !tb.link_exists(ns, DEFAULT_TAP),
            "TAP left behind after signal {sig}"
        );
        assert!(
            !sw.socket.exists(),
            "control socket {} left behind",
            sw.socket.display()
        );
    }
    // Both stopped cleanly, so both can start again with the same TAP name and carry traffic.
    let _sw = tb.start_switches().expect("restarting switches");
    let p = ping(
        &tb.host(0).container_ns,
        tb.host(1).container_ip,
        3,
        Duration::from_secs(2),
    )
    .expect("ping");
    assert_eq!(p.received, 3, "ping after restart: {p:?}");
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn missing_bridge_is_refused_and_named() {
    let tb = Testbed::new(2).expect("building testbed");
    let opts = SwitchOptions {
        bridge: Some("nosuchbr7".into()),
        ..SwitchOptions::default()
    };
    let sw = tb.spawn_switch(0, &opts).expect("spawn");
    let st = sw
        .wait_exit(Duration::from_secs(5))
        .expect("switch should exit");
    let err = sw.stderr();
    assert!(!st.success(), "started with a missing bridge: {st}\n{err}");
    assert!(
        err.contains("nosuchbr7"),
        "stderr does not name the bridge:\n{err}"
    );
    assert!(
        !tb.link_exists(&tb.host(0).ns, DEFAULT_TAP),
        "TAP left behind after refusing"
    );
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn local_address_as_peer_is_refused() {
    let tb = Testbed::new(2).expect("building testbed");
    let own = tb.host(0).underlay_ip;
    let opts = SwitchOptions {
        peers: Some(vec![own]),
        ..SwitchOptions::default()
    };
    let sw = tb.spawn_switch(0, &opts).expect("spawn");
    let st = sw
        .wait_exit(Duration::from_secs(5))
        .expect("switch should exit");
    let err = sw.stderr();
    assert!(
        !st.success(),
        "accepted its own address {own} as peer: {st}\n{err}"
    );
    assert!(
        err.contains(&own.to_string()),
        "stderr does not name {own}:\n{err}"
    );
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn testbed_cleans_up_after_a_panicking_test() {
    let seen = std::sync::Mutex::new((Vec::new(), 0u32, std::path::PathBuf::new()));
    let r = std::panic::catch_unwind(|| {
        let tb = Testbed::new(2).expect("building testbed");
        let sw = tb.start_switch(0).expect("starting switch");
        *seen.lock().unwrap() = (tb.namespaces(), sw.pid, sw.socket.clone());
        panic!("deliberate failure inside a test");
    });
    assert!(r.is_err());
    let (names, pid, socket) = seen.into_inner().unwrap();
    assert_eq!(names.len(), 4);
    let listed = listed_namespaces();
    for n in &names {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n)),
            "{n} left behind"
        );
    }
    // The switch was stopped and reaped by the teardown: its PID is gone (or reused by
    // something else, never by a still-running switch).
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !cmdline.contains("dnet-switch"),
        "dnet-switch pid {pid} still running"
    );
    assert!(!socket.exists(), "control socket left behind");
}
