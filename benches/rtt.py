#!/usr/bin/env python3
"""Round-trip time in detail: the distribution of N pings (min, median, average, p90, p99) over
each path, alternated ROUNDS times in one run, and with WAKES=1 the thread wake-ups and context
switches per ping on the whole machine (`perf stat -a`, background included: read them against
the kernel VXLAN row).

Same two-host namespace testbed as benches/e2e.py (its Testbed, always removed). Paths (env
PATHS, separated by ';'):
  vxlan            kernel VXLAN port in each host's bridge
  dnet ARGS...     dnet-switch with these extra flags in each host (plain GRE)
  dnetudp ARGS...  the same with --encap udp
Default: "vxlan;dnet --busy-poll 0;dnet;dnetudp --busy-poll 0;dnetudp".
Env: N=200 probes per round, one every INTERVAL=0.05 s (idle between probes, as a request-
response workload), ROUNDS=2.
Run as root:  benches/rtt.py
"""
import importlib.util
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("e2e", os.path.join(HERE, "e2e.py"))
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

N = int(os.environ.get("N", "200"))
INTERVAL = os.environ.get("INTERVAL", "0.05")
ROUNDS = int(os.environ.get("ROUNDS", "2"))
WAKES = os.environ.get("WAKES") == "1"
DEFAULT = "vxlan;dnet --busy-poll 0;dnet;dnetudp --busy-poll 0;dnetudp"
WAKE_EVENTS = "sched:sched_wakeup,sched:sched_switch"


def run_path(path):
    """Pings (ms) over one path, and wake-up counts per ping when WAKES=1."""
    kind, *args = shlex.split(path)
    cmtu = {"vxlan": 1450, "dnet": 1462, "dnetudp": 1454}[kind]
    with e2e.Testbed(cmtu) as tb:
        ns = e2e.NS
        if kind == "vxlan":
            for h, me, peer in (("ah", "10.200.0.1", "10.200.0.2"), ("bh", "10.200.0.2", "10.200.0.1")):
                e2e.sh(f"ip -n {ns[h]} link add vxlan42 type vxlan id 42 dstport 4789 local {me} remote {peer} dev ul")
                e2e.sh(f"ip -n {ns[h]} link set vxlan42 master br0")
                e2e.sh(f"ip -n {ns[h]} link set vxlan42 up")
        else:
            encap = ["--encap", "udp"] if kind == "dnetudp" else []
            for h, peer in (("ah", "10.200.0.2"), ("bh", "10.200.0.1")):
                tb.spawn(h, [e2e.BIN, "--peer", peer, "--bridge", "br0", "--log-level", "error",
                             "--control-socket", f"/run/dnet/{e2e.P}{h}.sock"] + encap + args)
        if not e2e.wait_ping("ac", "10.77.0.2", 15):
            raise RuntimeError(f"{path}: no ping reply within 15 s")
        ping = f"ip netns exec {ns['ac']} ping -c {N} -i {INTERVAL} 10.77.0.2"
        wakes = {}
        if WAKES:
            r = subprocess.run(f"perf stat -x, -e {WAKE_EVENTS} -a -- {ping}", shell=True,
                               capture_output=True, text=True)
            out, err = r.stdout, r.stderr
            for line in err.splitlines():
                f = line.split(",")
                if len(f) > 2 and f[0].isdigit():
                    wakes[f[2].split(":")[-1]] = int(f[0]) / N
        else:
            out = e2e.sh(ping, check=False).stdout
        return [float(x) for x in re.findall(r"time=([\d.]+)", out)], wakes


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark builds network namespaces")
    if WAKES and not shutil.which("perf"):
        sys.exit("WAKES=1 needs perf (apt-get install linux-perf)")
    if not os.path.exists(e2e.BIN):
        e2e.sh(f"cd {e2e.ROOT} && cargo build --release -p dnet -p dnetctl")
    paths = [p.strip() for p in os.environ.get("PATHS", DEFAULT).split(";") if p.strip()]
    rtts = {p: [] for p in paths}
    wakes = {p: [] for p in paths}
    for _ in range(ROUNDS):
        for p in paths:
            sys.stderr.write(f"== {p}\n")
            r, w = run_path(p)
            rtts[p] += r
            wakes[p].append(w)
    print(f"{'path':<28}{'probes':>8}{'min':>8}{'median':>8}{'avg':>8}{'p90':>8}{'p99':>8}  (ms)"
          + ("   wake-ups/ping  switches/ping" if WAKES else ""))
    for p in paths:
        v = sorted(rtts[p])
        if not v:
            print(f"{p:<28} no replies")
            continue
        q = lambda f: v[min(len(v) - 1, int(f * len(v)))]
        line = (f"{p:<28}{len(v):>8}{v[0]:>8.3f}{statistics.median(v):>8.3f}"
                f"{statistics.mean(v):>8.3f}{q(0.9):>8.3f}{q(0.99):>8.3f}")
        if WAKES:
            w = lambda k: statistics.median(x.get(k, 0) for x in wakes[p])
            line += f"{w('sched_wakeup'):>17.1f}{w('sched_switch'):>15.1f}"
        print(line)
    base = rtts.get("vxlan")
    if base:
        print("\nagainst kernel VXLAN (same run):")
        for p in paths:
            if p != "vxlan" and rtts[p]:
                print(f"  {p}: median {statistics.median(rtts[p]) - statistics.median(base):+.3f} ms, "
                      f"avg {statistics.mean(rtts[p]) - statistics.mean(base):+.3f} ms")


if __name__ == "__main__":
    main()
