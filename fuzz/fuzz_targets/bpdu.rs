//! BPDUs and the spanning tree: `bpdu::Repr::parse` never panics and what it accepts
//! re-emits to the same fields; the `--stp` machine fed arbitrary BPDU bodies on arbitrary
//! ports, with ticks, port additions and removals at advancing times, never panics and keeps
//! its invariants (one root port at most, blocked roles discard, everything it sends parses).
#![no_main]

use dnet::switch::stp::{Config, Role, State, Stp};
use dnet::wire::bpdu::{self, Kind, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Repr::parse(data) {
        if r.kind == Kind::Rst {
            let again = Repr::parse(&r.emit([2, 0, 0, 0, 0, 1])).expect("own BPDU parses");
            assert_eq!(again, r);
        }
    }

    // Records: [time delta, port, op, _] + 36 bytes of BPDU body.
    let mut stp = Stp::new(Config::default(), [2, 0, 0, 0, 0, 1]);
    for p in 1..=3 {
        stp.add_port(p);
    }
    let mut now = 0u64;
    for rec in data.chunks_exact(40) {
        now += u64::from(rec[0]) * 53;
        let port = 1 + u16::from(rec[1] % 4);
        match rec[2] % 8 {
            0 => stp.tick(now),
            1 => stp.add_port(port),
            2 => stp.remove_port(now, port),
            _ => {
                let mut f = [0u8; 60];
                f[..6].copy_from_slice(&bpdu::DST);
                f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, rec[3]]);
                f[12..14].copy_from_slice(&39u16.to_be_bytes());
                f[14..17].copy_from_slice(&bpdu::LLC);
                f[17..53].copy_from_slice(&rec[4..40]);
                stp.receive(now, port, &f);
            }
        }
        let st = stp.status();
        let roots = st.ports.iter().filter(|p| p.role == Role::Root).count();
        assert!(roots <= 1);
        assert_eq!(roots == 1, st.root_port.is_some());
        for p in &st.ports {
            if matches!(p.role, Role::Alternate | Role::Backup) {
                assert_eq!(p.state, State::Discarding, "{p:?}");
            }
        }
        stp.drain(|p, f| {
            assert!(p >= 1);
            Repr::parse(f).expect("sent BPDU parses");
        });
    }
});
