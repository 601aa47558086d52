#!/usr/bin/env python3
"""End-to-end benchmark: dnet against the kernel VXLAN overlay (and Open vSwitch's userspace
GRE port, when openvswitch-switch is installed), one after the other in the same run, on the
same namespace testbed, so the ratios mean something on a noisy machine.

Testbed (all in network namespaces this script creates and always deletes):
  container ac 10.77.0.1 -- bridge br0 in host ah -- underlay veth 10.200.0.1 <-> 10.200.0.2
  -- host bh, bridge br0 -- container bc 10.77.0.2

Per path: ping RTT (20 probes), TCP one stream (iperf3), TCP 4 streams, UDP 64-byte datagrams
received per second, CPU of the forwarding processes (userspace paths) and dnet's RSS. Medians
of REPS runs of DUR seconds. Run as root:  benches/e2e.py  (env REPS=3 DUR=10 QUICK=1 PATHS=...)
QUICK=1 is the CI smoke run: one short repetition of dnet and VXLAN only.
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.environ.get("QUICK") == "1"
REPS = int(os.environ.get("REPS", "1" if QUICK else "3"))
DUR = int(os.environ.get("DUR", "2" if QUICK else "10"))
BIN = os.environ.get("DNET_SWITCH_BIN", os.path.join(ROOT, "target/release/dnet-switch"))
P = f"dnb{os.getpid() % 100000}"
NS = {h: f"{P}{h}" for h in ("ah", "bh", "ac", "bc")}
HZ = os.sysconf("SC_CLK_TCK")


def sh(cmd, check=True, **kw):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"`{cmd}` failed: {r.stderr.strip()}")
    return r


def nsx(ns, cmd, **kw):
    return sh(f"ip netns exec {NS[ns]} {cmd}", **kw)


class Testbed:
    """Namespaces and processes of one path; removed on exit, also on error (context manager)."""

    def __init__(self, cmtu):
        self.procs = []
        self.cmtu = cmtu

    def __enter__(self):
        for ns in NS.values():
            sh(f"ip netns add {ns}")
            sh(f"ip -n {ns} link set lo up")
            sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        sh(f"ip link add ul netns {NS['ah']} type veth peer name ul netns {NS['bh']}")
        for h, ip in (("ah", "10.200.0.1"), ("bh", "10.200.0.2")):
            sh(f"ip -n {NS[h]} addr add {ip}/24 dev ul")
            sh(f"ip -n {NS[h]} link set ul up")
        for h, c, ip in (("ah", "ac", "10.77.0.1"), ("bh", "bc", "10.77.0.2")):
            sh(f"ip link add eth0 netns {NS[c]} type veth peer name vc netns {NS[h]}")
            sh(f"ip -n {NS[h]} link add br0 type bridge mcast_snooping 0")
            sh(f"ip -n {NS[h]} link set vc master br0")
            sh(f"ip -n {NS[h]} link set vc up")
            sh(f"ip -n {NS[h]} link set br0 up")
            sh(f"ip -n {NS[c]} link set eth0 mtu {self.cmtu} up")
            sh(f"ip -n {NS[c]} addr add {ip}/24 dev eth0")
        return self

    def spawn(self, ns, args, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", NS[ns]] + args, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def __exit__(self, *exc):
        # iperf3 servers daemonize (-D); whatever still runs inside our namespaces is ours.
        for ns in NS.values():
            for pid in sh(f"ip netns pids {ns}", check=False).stdout.split():
                sh(f"kill {pid}", check=False)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in NS.values():
            sh(f"ip netns del {ns}", check=False)


def proc_ticks(pids):
    t = 0
    for pid in pids:
        try:
            rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            t += int(rest[11]) + int(rest[12])
        except OSError:
            pass
    return t


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def iperf(args, pids):
    nsx("bc", "iperf3 -s -1 -D -p 5201")
    time.sleep(0.3)
    t0, c0 = time.time(), proc_ticks(pids)
    r = nsx("ac", f"iperf3 -c 10.77.0.2 -p 5201 -t {DUR} -J {args}", check=False, timeout=DUR + 30)
    cpu = (proc_ticks(pids) - c0) / HZ / (time.time() - t0) * 100
    try:
        return json.loads(r.stdout)["end"], cpu
    except (ValueError, KeyError):
        return None, cpu


def ping_avg():
    if not shutil.which("ping"):
        return None
    r = nsx("ac", "ping -c 20 -i 0.05 -q 10.77.0.2", check=False)
    m = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
    return float(m[1]) if m else None


def measure(label, pids):
    res = {}
    def add(k, v):
        if v is not None:
            res.setdefault(k, []).append(v)
    nsx("ac", "ping -c 3 -i 0.2 -W 1 10.77.0.2", check=False)  # ARP + learning
    for _ in range(REPS):
        add("rtt_ms", ping_avg())
        end, cpu = iperf("", pids)
        if end:
            g = end["sum_received"]["bits_per_second"] / 1e9
            add("tcp_gbps", g)
            if pids and g > 0:
                add("cpu_pct_per_gbps", cpu / g)
            add("cpu_pct", cpu)
        end, _ = iperf("-P 4", pids)
        if end:
            add("tcp4_gbps", end["sum_received"]["bits_per_second"] / 1e9)
        end, _ = iperf("-u -l 18 -b 0", pids)
        if end:
            s = end.get("sum_received") or end["sum"]
            add("udp64_kpps", (s["packets"] - s["lost_packets"]) / (s["seconds"] or DUR) / 1e3)
        for p in pids:
            add("rss_mib", rss_kib(p) / 1024)
        sys.stderr.write(f"  {label}: " + ", ".join(f"{k} {v[-1]:.3g}" for k, v in res.items()) + "\n")
    return {k: statistics.median(v) for k, v in res.items()}


def run_dnet(workers):
    with Testbed(1462) as tb:
        pids = []
        for h, peer in (("ah", "10.200.0.2"), ("bh", "10.200.0.1")):
            p = tb.spawn(h, [BIN, "--peer", peer, "--bridge", "br0", "--workers", str(workers),
                             "--control-socket", f"/run/dnet/{P}{h}.sock", "--log-level", "warn"])
            pids.append(p.pid)
        time.sleep(1)
        return measure(f"dnet w{workers}", pids)


def run_vxlan():
    with Testbed(1450):
        for h, me, peer in (("ah", "10.200.0.1", "10.200.0.2"), ("bh", "10.200.0.2", "10.200.0.1")):
            sh(f"ip -n {NS[h]} link add vxlan42 type vxlan id 42 dstport 4789 local {me} remote {peer} dev ul")
            sh(f"ip -n {NS[h]} link set vxlan42 master br0")
            sh(f"ip -n {NS[h]} link set vxlan42 up")
        return measure("kernel VXLAN", [])


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark builds network namespaces")
    missing = [p for p, b in (("iperf3", "iperf3"), ("iputils-ping", "ping")) if not shutil.which(b)]
    if missing:
        sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " + " ".join(missing))
    if not os.path.exists(BIN):
        sh(f"cd {ROOT} && cargo build --release -p dnet")
    paths = os.environ.get("PATHS", "vxlan,dnet1,dnet2").split(",")
    results = {}
    for p in paths:
        sys.stderr.write(f"== {p}\n")
        if p == "vxlan":
            results["kernel VXLAN"] = run_vxlan()
        elif p.startswith("dnet"):
            results[f"dnet --workers {p[4:]}"] = run_dnet(int(p[4:]))
    cols = [("tcp_gbps", "TCP 1 stream Gbit/s"), ("tcp4_gbps", "TCP 4 streams Gbit/s"),
            ("udp64_kpps", "UDP 64 B rx kpps"), ("rtt_ms", "ping avg ms"),
            ("cpu_pct_per_gbps", "CPU %/Gbit/s"), ("rss_mib", "RSS MiB")]
    print(f"\n{'path':<20}" + "".join(f"{c[1]:>22}" for c in cols))
    for name, r in results.items():
        print(f"{name:<20}" + "".join(f"{r[k]:>22.3g}" if k in r else f"{'-':>22}" for k, _ in cols))
    base = results.get("kernel VXLAN")
    if base:
        print("\nratios to kernel VXLAN (same run):")
        for name, r in results.items():
            if name == "kernel VXLAN":
                continue
            parts = []
            for k, label in cols[:3]:
                if k in r and base.get(k):
                    parts.append(f"{label} x{r[k] / base[k]:.2f}")
            if "rtt_ms" in r and "rtt_ms" in base:
                parts.append(f"RTT +{(r['rtt_ms'] - base['rtt_ms']):.3f} ms")
            print(f"  {name}: " + ", ".join(parts))
    w1, w2 = results.get("dnet --workers 1"), results.get("dnet --workers 2")
    if w1 and w2 and w1.get("tcp4_gbps"):
        print(f"  4 TCP flows, --workers 2 / --workers 1: x{w2['tcp4_gbps'] / w1['tcp4_gbps']:.2f}")


if __name__ == "__main__":
    main()
