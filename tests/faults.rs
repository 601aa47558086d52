//! Faults around a running switch: a peer killed and restarted, the TAP or the bridge deleted
//! under it, and `--user` privilege dropping.

use dnet_e2e::cpu_ticks;
use dnet_testbed::cmd::ip_in;
use dnet_testbed::traffic::ping;
use dnet_testbed::{Switch, SwitchOptions, Testbed, BRIDGE, DEFAULT_TAP};
use std::time::{Duration, Instant};

/// Pings from host `from`'s container to host `to`'s until one round of 3 gets at least one
/// reply, for at most `timeout`. Returns how long that took.
fn ping_until_ok(tb: &Testbed, from: usize, to: usize, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let p = ping(
            &tb.host(from).container_ns,
            tb.host(to).container_ip,
            3,
            Duration::from_millis(500),
        )
        .expect("ping");
        if p.received > 0 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "no ping reply from host {to} within {timeout:?}"
        );
    }
}

fn wait_log(sw: &Switch, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !sw.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "switch never logged {needle:?}:\n{}",
            sw.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn peer_killed_with_sigkill_and_restarted_traffic_resumes() {
    let tb = Testbed::new(2).expect("building testbed");
    let sa = tb.start_switch(0).expect("switch a");
    let mut sb = tb.start_switch(1).expect("switch b");
    ping_until_ok(&tb, 0, 1, Duration::from_secs(10));
    for round in 0..2 {
        sb.signal(libc::SIGKILL).expect("SIGKILL");
        let st = sb.wait_exit(Duration::from_secs(5)).expect("exit");
        assert!(!st.success());
        // Non-persistent TAP: the kernel removed it with the process.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tb.link_exists(&tb.host(1).ns, DEFAULT_TAP) {
            assert!(Instant::now() < deadline, "TAP left behind by SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        let p = ping(
            &tb.host(0).container_ns,
            tb.host(1).container_ip,
            1,
            Duration::from_millis(500),
        )
        .expect("ping");
        assert_eq!(p.received, 0, "reply with the peer down?");
        // No manual action on a: the restarted b simply takes over.
        sb = tb.start_switch(1).expect("restarting switch b");
        let took = ping_until_ok(&tb, 0, 1, Duration::from_secs(20));
        eprintln!("round {round}: traffic resumed {took:?} after the restart");
        ping_until_ok(&tb, 1, 0, Duration::from_secs(20));
        assert!(sa.try_status().expect("status").is_none(), "a exited");
    }
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn tap_deleted_under_a_running_switch_exits_with_a_clear_error() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switch(0).expect("switch");
    ip_in(&sw.ns, &["link", "del", DEFAULT_TAP]).expect("ip link del");
    let st = sw
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("switch kept running without its TAP: {e}\n{}", sw.stderr()));
    let log = sw.stderr();
    assert!(
        !st.success(),
        "exit status {st} after losing the TAP\n{log}"
    );
    assert!(
        log.contains("TAP") && log.contains("deleted"),
        "no clear error about the TAP:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("{log}");
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn bridge_deleted_warns_and_the_tap_is_reattached_when_it_returns() {
    let tb = Testbed::new(2).expect("building testbed");
    let sa = tb.start_switch(0).expect("switch a");
    let _sb = tb.start_switch(1).expect("switch b");
    ping_until_ok(&tb, 0, 1, Duration::from_secs(10));
    let ns = &tb.host(0).ns;
    let cpu0 = cpu_ticks(sa.pid).expect("cpu");
    ip_in(ns, &["link", "del", BRIDGE]).expect("deleting the bridge");
    wait_log(
        &sa,
        &format!("bridge {BRIDGE} was deleted"),
        Duration::from_secs(10),
    );
    // No busy loop while the bridge is gone: well under a second of CPU in 2 s.
    std::thread::sleep(Duration::from_secs(2));
    assert!(sa.try_status().expect("status").is_none(), "switch exited");
    assert!(tb.link_exists(ns, DEFAULT_TAP), "TAP gone with the bridge");
    let cpu = cpu_ticks(sa.pid).expect("cpu") - cpu0;
    assert!(cpu < 100, "{cpu} ticks of CPU while the bridge was gone");
    // The operator re-creates the bridge and plugs the container back in.
    ip_in(ns, &["link", "add", BRIDGE, "type", "bridge"]).expect("bridge add");
    ip_in(ns, &["link", "set", "vc0", "master", BRIDGE]).expect("container port");
    ip_in(ns, &["link", "set", BRIDGE, "up"]).expect("bridge up");
    wait_log(&sa, "attached to it again", Duration::from_secs(10));
    ping_until_ok(&tb, 0, 1, Duration::from_secs(20));
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn user_flag_drops_to_nobody_keeping_net_caps_and_traffic_flows() {
    let tb = Testbed::new(2).expect("building testbed");
    let opts = SwitchOptions {
        extra_args: vec!["--user".into(), "nobody".into()],
        ..SwitchOptions::default()
    };
    let sa = tb.start_switch_with(0, &opts).expect("switch a");
    let _sb = tb.start_switch(1).expect("switch b");
    let status = std::fs::read_to_string(format!("/proc/{}/status", sa.pid)).expect("status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), vec!["65534"; 4], "{status}");
    let eff = u64::from_str_radix(&field("CapEff:")[0], 16).unwrap();
    assert_eq!(
        eff,
        (1 << 12) | (1 << 13),
        "CapEff {eff:x}: want NET_ADMIN|NET_RAW only"
    );
    // Every other thread (workers, control) runs with no capability at all.
    for t in std::fs::read_dir(format!("/proc/{}/task", sa.pid)).expect("tasks") {
        let t = t.expect("task").path();
        let s = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        assert!(
            s.contains("Uid:\t65534\t65534\t65534\t65534"),
            "{}: {s}",
            t.display()
        );
    }
    ping_until_ok(&tb, 0, 1, Duration::from_secs(10));
    ping_until_ok(&tb, 1, 0, Duration::from_secs(10));
    sa.stats().expect("control socket still answers root");
    assert!(sa.stderr().contains("running as user nobody"));
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn tap_set_down_and_up_is_not_fatal() {
    let tb = Testbed::new(2).expect("building testbed");
    let sa = tb.start_switch(0).expect("switch a");
    let _sb = tb.start_switch(1).expect("switch b");
    ping_until_ok(&tb, 0, 1, Duration::from_secs(10));
    let ns = &tb.host(0).ns;
    ip_in(ns, &["link", "set", DEFAULT_TAP, "down"]).expect("TAP down");
    // Traffic from b towards a's TAP meanwhile: writes to a down TAP are counted, not fatal.
    let _ = ping(
        &tb.host(1).container_ns,
        tb.host(0).container_ip,
        2,
        Duration::from_millis(300),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        sa.try_status().expect("status").is_none(),
        "switch exited on a down TAP:\n{}",
        sa.stderr()
    );
    ip_in(ns, &["link", "set", DEFAULT_TAP, "up"]).expect("TAP up");
    ip_in(ns, &["link", "set", DEFAULT_TAP, "master", BRIDGE]).expect("TAP in bridge");
    ping_until_ok(&tb, 0, 1, Duration::from_secs(20));
}
