#!/usr/bin/env python3
"""End-to-end benchmark: dnet against the kernel VXLAN overlay and Open vSwitch's userspace
(netdev datapath) GRE port, one after the other in the same run, on the same namespace testbed,
so the ratios mean something on a noisy machine.

Testbed (all in network namespaces this script creates and always deletes):
  container ac 10.77.0.1 -- bridge br0 in host ah -- underlay veth 10.200.0.1 <-> 10.200.0.2
  -- host bh, bridge br0 -- container bc 10.77.0.2

Paths (env PATHS, comma separated, measured in that order):
  vxlan   kernel VXLAN port (VNI 42) in each host's br0; container MTU 1450
  ovs     Open vSwitch userspace GRE, as in the reference anchors (anchors/ovs_netdev_gre.sh):
          per host its own ovsdb-server + ovs-vswitchd (private db/run/log dir, removed
          afterwards), bridges br-phy (underlay veth; the underlay IP moves to br-phy) and br-int
          (container veth + gre0 remote_ip=<peer>), all datapath_type=netdev; br0 is not used.
          Offloads off on the container veths (OVS userspace stalls on GSO/partial checksums),
          container MTU 1462. Needs the openvswitch-switch package; skipped with a notice if
          ovs-vswitchd is not installed.
  dnetN   dnet-switch --workers N in each host, attached to br0; container MTU 1462
  dnetudpN  the same with --encap udp (GRE-in-UDP with UDP GSO/GRO); container MTU 1454
  dnetencN  dnetudpN sealed: --encrypt, a key pair per host (dnetctl keygen) and --peer
          IP=PUBKEY; container MTU 1422 (32 bytes of seal per datagram)
  dnetN@MODE  dnetN with --packet-rings MODE (off, tx, rx, on, ...): plain GRE through
          AF_PACKET rings, so each step can be measured against the raw sockets in one run
  dnet, dnetudp  without N: no --workers flag, the switch's own default
  base:PATH  PATH with the binary in env DNET_BASE_BIN (e.g. main's build), for a before/after
          table from one sitting
Default PATHS: vxlan,ovs,dnet1,dnet2,dnetudp1,dnetudp2,dnetenc1,dnetenc2 (ovs only when
ovs-vswitchd is installed); QUICK=1 (the CI smoke run) defaults to vxlan,dnet1,dnet2,dnetenc1
with one short repetition.

Per path: ping RTT (20 probes), TCP one stream (iperf3), TCP 4 streams, UDP 64-byte datagrams
received per second, CPU of the forwarding processes of both hosts (userspace paths: dnet-switch,
or ovs-vswitchd + ovsdb-server) per Gbit/s of the one-stream TCP test, and the forwarder's RSS
(dnet-switch, ovs-vswitchd). Medians of REPS runs of DUR seconds. Then ratios of every path to
kernel VXLAN and, when ovs ran, of dnet to OVS userspace GRE (project targets: TCP one stream
>= 5x, UDP 64 B received >= 3x).
Run as root:  benches/e2e.py  (env REPS=3 DUR=10 QUICK=1 PATHS=vxlan,ovs,dnet1,dnet2)
"""
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.environ.get("QUICK") == "1"
REPS = int(os.environ.get("REPS", "1" if QUICK else "3"))
DUR = int(os.environ.get("DUR", "2" if QUICK else "10"))
BIN = os.environ.get("DNET_SWITCH_BIN", os.path.join(ROOT, "target/release/dnet-switch"))
BASE_BIN = os.environ.get("DNET_BASE_BIN")
CTL = os.environ.get("DNETCTL_BIN", os.path.join(os.path.dirname(BIN), "dnetctl"))
P = f"dnb{os.getpid() % 100000}"
NS = {h: f"{P}{h}" for h in ("ah", "bh", "ac", "bc")}
HZ = os.sysconf("SC_CLK_TCK")
# Extra dnet-switch flags for every dnet path, e.g. DNET_ARGS="--csum --key 7".
DNET_ARGS = os.environ.get("DNET_ARGS", "").split()
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
OVS_PROGS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
OVS_LABEL = "OVS userspace GRE"


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
        self.dirs = []
        self.cmtu = cmtu

    def __enter__(self):
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self):
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

    def spawn(self, ns, args, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", NS[ns]] + args, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def tempdir(self, what):
        """A scratch directory, removed at teardown after the processes are gone."""
        d = tempfile.mkdtemp(prefix=f"{P}-{what}-")
        self.dirs.append(d)
        return d

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
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


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


def measure(label, pids, rss_pids=None):
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
        for p in pids if rss_pids is None else rss_pids:
            add("rss_mib", rss_kib(p) / 1024)
        sys.stderr.write(f"  {label}: " + ", ".join(f"{k} {v[-1]:.3g}" for k, v in res.items()) + "\n")
    return {k: statistics.median(v) for k, v in res.items()}


def run_dnet(workers, udp=False, rings=None, binary=BIN, label="dnet", enc=False):
    """dnet-switch on both hosts; `workers` None leaves --workers to the switch's default."""
    # GRE-in-UDP costs 8 more bytes of underlay per frame, the seal 32 more.
    with Testbed(1422 if enc else 1454 if udp else 1462) as tb:
        keys = {}
        if enc:
            d = tb.tempdir("keys")
            for h in ("ah", "bh"):
                path = os.path.join(d, f"{h}.key")
                keys[h] = (path, sh(f"{shlex.quote(CTL)} keygen --out {shlex.quote(path)}").stdout.strip())
        pids = []
        for h, other, peer in (("ah", "bh", "10.200.0.2"), ("bh", "ah", "10.200.0.1")):
            extra = ((["--encap", "udp"] if udp or enc else []) + (["--packet-rings", rings] if rings else [])
                     + (["--workers", str(workers)] if workers else []) + DNET_ARGS)
            if enc:
                extra += ["--encrypt", "--private-key", keys[h][0]]
                peer = f"{peer}={keys[other][1]}"
            p = tb.spawn(h, [binary, "--peer", peer, "--bridge", "br0",
                             "--control-socket", f"/run/dnet/{P}{h}.sock", "--log-level", "warn"]
                         + extra)
            pids.append(p.pid)
        time.sleep(1)
        return measure(f"{label}", pids)


def run_vxlan():
    with Testbed(1450):
        for h, me, peer in (("ah", "10.200.0.1", "10.200.0.2"), ("bh", "10.200.0.2", "10.200.0.1")):
            sh(f"ip -n {NS[h]} link add vxlan42 type vxlan id 42 dstport 4789 local {me} remote {peer} dev ul")
            sh(f"ip -n {NS[h]} link set vxlan42 master br0")
            sh(f"ip -n {NS[h]} link set vxlan42 up")
        return measure("kernel VXLAN", [])


# Run inside a namespace (python3 -c CODE DEV): turns off TX checksum offload, TSO, GSO and GRO
# on DEV with the legacy SIOCETHTOOL set commands and reads them back (no ethtool binary needed;
# same as tests/ovs_interop.rs).
OFFLOADS_OFF = r"""
import array, fcntl, socket, struct, sys
dev = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def ethtool(cmd, data=0):
    v = array.array("I", [cmd, data])  # struct ethtool_value
    fcntl.ioctl(s, 0x8946, struct.pack("16sP16x", dev.encode(), v.buffer_info()[0]))  # ifreq
    return v[1]
for name, set_, get in (("tx-checksum", 0x17, 0x16), ("tso", 0x1F, 0x1E), ("gso", 0x24, 0x23),
                        ("gro", 0x2C, 0x2B)):
    ethtool(set_, 0)
    if ethtool(get):
        sys.exit(f"{dev}: {name} still on")
"""


def offloads_off(ns, dev):
    nsx(ns, f"{shlex.quote(sys.executable)} -c {shlex.quote(OFFLOADS_OFF)} {dev}")


def ovs_missing():
    """What of Open vSwitch is missing ([] when the ovs path can run)."""
    miss = [p for p in OVS_PROGS if not shutil.which(p)]
    if not os.path.isfile(OVS_SCHEMA):
        miss.append(OVS_SCHEMA)
    return miss


def tail(path, n=15):
    try:
        return "".join(open(path, errors="replace").readlines()[-n:])
    except OSError:
        return ""


class Ovs:
    """ovsdb-server + ovs-vswitchd in host namespace `h`, state in the private directory `d`.
    Both run in the foreground as children registered with the testbed (killed by PID)."""

    def __init__(self, tb, h, d):
        self.h, self.d = h, d
        self.env = dict(os.environ, **{v: d for v in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR",
                                                      "OVS_SYSCONFDIR")})
        sh(f"ovsdb-tool create {d}/conf.db {OVS_SCHEMA}", env=self.env)
        self.server = tb.spawn(h, [shutil.which("ovsdb-server"), f"{d}/conf.db",
                                   f"--remote=punix:{d}/db.sock", f"--unixctl={d}/ovsdb-server.ctl",
                                   "--no-chdir"],
                               env=self.env, stdout=subprocess.DEVNULL,
                               stderr=open(f"{d}/ovsdb-server.log", "w"))
        deadline = time.time() + 10
        while not os.path.exists(f"{d}/db.sock"):
            if self.server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ovsdb-server in {NS[h]} did not start:\n"
                                   + tail(f"{d}/ovsdb-server.log"))
            time.sleep(0.05)
        self.vsctl("--no-wait init")
        self.vswitchd = tb.spawn(h, [shutil.which("ovs-vswitchd"), f"unix:{d}/db.sock",
                                     f"--unixctl={d}/ovs-vswitchd.ctl", "--no-chdir"],
                                 env=self.env, stdout=subprocess.DEVNULL,
                                 stderr=open(f"{d}/ovs-vswitchd.log", "w"))

    def vsctl(self, args):
        r = sh(f"ovs-vsctl --db=unix:{self.d}/db.sock --timeout=10 {args}", check=False, env=self.env)
        if r.returncode != 0:
            raise RuntimeError(f"ovs-vsctl {args} ({NS[self.h]}) failed: {r.stderr.strip()}\n"
                               + self.log())
        return r.stdout

    def log(self):
        return f"-- ovs-vswitchd log ({NS[self.h]}):\n" + tail(f"{self.d}/ovs-vswitchd.log")


def wait_ping(ns, dst, secs):
    deadline = time.time() + secs
    while time.time() < deadline:
        if nsx(ns, f"ping -c 1 -W 1 {dst}", check=False).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def run_ovs():
    """OVS userspace (netdev datapath) GRE, set up like anchors/ovs_netdev_gre.sh and
    tests/ovs_interop.rs: br-phy owns the underlay veth (its IP moves to br-phy's internal port,
    ARP off on the veth so the peer resolves br-phy's MAC, which the tunnel pop matches on), br-int
    joins the container veth and gre0. The kernel bridge br0 is deleted."""
    with Testbed(1462) as tb:
        base = tb.tempdir("ovs")
        hosts = []
        for h, c, me, peer in (("ah", "ac", "10.200.0.1", "10.200.0.2"),
                               ("bh", "bc", "10.200.0.2", "10.200.0.1")):
            offloads_off(c, "eth0")
            offloads_off(h, "vc")
            sh(f"ip -n {NS[h]} link del br0")
            d = os.path.join(base, h)
            os.mkdir(d)
            o = Ovs(tb, h, d)
            hosts.append(o)
            o.vsctl("add-br br-phy -- set bridge br-phy datapath_type=netdev -- add-port br-phy ul")
            sh(f"ip -n {NS[h]} link set ul arp off")
            sh(f"ip -n {NS[h]} addr flush dev ul")
            sh(f"ip -n {NS[h]} addr add {me}/24 dev br-phy")
            sh(f"ip -n {NS[h]} link set br-phy up")
            o.vsctl("add-br br-int -- set bridge br-int datapath_type=netdev -- add-port br-int vc"
                    f" -- add-port br-int gre0 -- set interface gre0 type=gre options:remote_ip={peer}")
            sh(f"ip -n {NS[h]} link set br-int up")
            for port in ("vc", "gre0"):
                err = o.vsctl(f"get interface {port} error").strip()
                if err not in ("", "[]"):
                    raise RuntimeError(f"OVS port {port} in {NS[h]}: {err}\n" + o.log())
        # Underlay ARP both ways over br-phy: OVS snoops the replies into its tunnel neighbour
        # table. Then the first container ping teaches both br-int their MACs.
        for ns, dst in (("ah", "10.200.0.2"), ("bh", "10.200.0.1"), ("ac", "10.77.0.2")):
            if not wait_ping(ns, dst, 15):
                raise RuntimeError(f"OVS path: {NS[ns]} cannot reach {dst}\n"
                                   + "\n".join(o.log() for o in hosts))
        pids = [p.pid for o in hosts for p in (o.vswitchd, o.server)]
        return measure(OVS_LABEL, pids, rss_pids=[o.vswitchd.pid for o in hosts])


def print_ratios(results, base_name, title, only=None, targets=None):
    base = results.get(base_name)
    if not base:
        return
    targets = targets or {}
    rows = [(n, r) for n, r in results.items() if n != base_name and n.startswith(only or "")]
    if rows:
        print(f"\n{title}:")
    for name, r in rows:
        parts = []
        for k, label in COLS[:3]:
            if k in r and base.get(k):
                x = r[k] / base[k]
                part = f"{label} x{x:.2f}"
                if k in targets:
                    part += f" ({'meets' if x >= targets[k] else 'BELOW'} target {targets[k]}x)"
                parts.append(part)
        if "rtt_ms" in r and "rtt_ms" in base:
            parts.append(f"RTT {(r['rtt_ms'] - base['rtt_ms']):+.3f} ms")
        print(f"  {name}: " + ", ".join(parts))


COLS = [("tcp_gbps", "TCP 1 stream Gbit/s"), ("tcp4_gbps", "TCP 4 streams Gbit/s"),
        ("udp64_kpps", "UDP 64 B rx kpps"), ("rtt_ms", "ping avg ms"),
        ("cpu_pct_per_gbps", "CPU %/Gbit/s"), ("rss_mib", "RSS MiB")]


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark builds network namespaces")
    missing = [p for p, b in (("iperf3", "iperf3"), ("iputils-ping", "ping")) if not shutil.which(b)]
    if missing:
        sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " + " ".join(missing))
    if not os.path.exists(BIN) or not os.path.exists(CTL):
        sh(f"cd {ROOT} && cargo build --release -p dnet -p dnetctl")
    # SIGTERM unwinds like Ctrl-C, so the testbed's cleanup runs.
    signal.signal(signal.SIGTERM, lambda sig, _: sys.exit(128 + sig))
    ovs_miss = ovs_missing()
    default = ("vxlan,dnet1,dnet2,dnetenc1" if QUICK
               else "vxlan,dnet1,dnet2,dnetudp1,dnetudp2,dnetenc1,dnetenc2" if ovs_miss
               else "vxlan,ovs,dnet1,dnet2,dnetudp1,dnetudp2,dnetenc1,dnetenc2")
    paths = [p.strip() for p in os.environ.get("PATHS", default).split(",") if p.strip()]
    bad = [p for p in paths
           if p not in ("vxlan", "ovs")
           and not re.fullmatch(r"(base:)?dnet(udp|enc)?([1-9]\d*)?(@[a-z-]+)?", p)]
    if bad:
        sys.exit(f"unknown PATHS entries {bad}: use vxlan, ovs, dnet[<workers>], dnetudp[<workers>],"
                 " dnetenc[<workers>], dnet<workers>@<packet-rings mode>, base:<dnet path>")
    if any(p.startswith("base:") for p in paths) and not BASE_BIN:
        sys.exit("PATHS has base: entries: set DNET_BASE_BIN to the binary to compare against")
    results, notes = {}, []
    if ovs_miss and not QUICK and "PATHS" not in os.environ:
        notes.append(f"ovs: not measured, Open vSwitch not installed (missing {', '.join(ovs_miss)};"
                     " apt-get install openvswitch-switch)")
        sys.stderr.write(notes[-1] + "\n")
    for p in paths:
        sys.stderr.write(f"== {p}\n")
        if p == "vxlan":
            results["kernel VXLAN"] = run_vxlan()
        elif p == "ovs":
            if ovs_miss:
                notes.append(f"ovs: SKIPPED, Open vSwitch not installed (missing {', '.join(ovs_miss)};"
                             " apt-get install openvswitch-switch)")
                sys.stderr.write(f"  {notes[-1]}\n")
                continue
            results[OVS_LABEL] = run_ovs()
        else:
            base = p.startswith("base:")
            p = p.removeprefix("base:")
            p, _, rings = p.partition("@")
            udp, enc = p.startswith("dnetudp"), p.startswith("dnetenc")
            n = p[7:] if udp or enc else p[4:]
            w = int(n) if n else None
            extra = (f" --packet-rings {rings}" if rings else "") + (" " + " ".join(DNET_ARGS) if DNET_ARGS else "")
            kind = " --encap udp --encrypt" if enc else " --encap udp" if udp else ""
            name = f"{'base: ' if base else ''}dnet{kind}{f' --workers {w}' if w else ''}{extra}"
            results[name] = run_dnet(w, udp, rings or None, BASE_BIN if base else BIN, name, enc)
    cols = COLS
    print(f"\n{'path':<44}" + "".join(f"{c[1]:>22}" for c in cols))
    for name, r in results.items():
        print(f"{name:<44}" + "".join(f"{r[k]:>22.3g}" if k in r else f"{'-':>22}" for k, _ in cols))
    for n in notes:
        print(n)
    print_ratios(results, "kernel VXLAN", "ratios to kernel VXLAN (same run)")
    print_ratios(results, OVS_LABEL, "ratios of dnet to OVS userspace GRE (same run)", only="dnet",
                 targets={"tcp_gbps": 5, "udp64_kpps": 3})
    w1, w2 = results.get("dnet --workers 1"), results.get("dnet --workers 2")
    if w1 and w2 and w1.get("tcp4_gbps"):
        print(f"\ndnet 4 TCP flows, --workers 2 / --workers 1: x{w2['tcp4_gbps'] / w1['tcp4_gbps']:.2f}")


if __name__ == "__main__":
    main()
