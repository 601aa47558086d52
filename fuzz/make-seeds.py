#!/usr/bin/env python3
"""Regenerates fuzz/corpus-seed/ from the Open vSwitch captures in ../shared/vectors/ (or
/work/shared/vectors) plus a few hand-built packets. Run from anywhere: python3 fuzz/make-seeds.py"""
import os, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus-seed")
VEC = next(p for p in [os.path.join(HERE, "..", "..", "shared", "vectors"), "/work/shared/vectors"]
           if os.path.isdir(p))


def records(name):
    with open(os.path.join(VEC, name)) as f:
        return [bytes.fromhex(l.strip()) for l in f if l.strip() and not l.startswith("#")]


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def gre(inner, key=None, seq=None, with_csum=False):
    flags = (0x80 if with_csum else 0) | (0x20 if key is not None else 0) | (0x10 if seq is not None else 0)
    h = bytes([flags, 0, 0x65, 0x58])
    if with_csum:
        h += b"\0\0\0\0"
    if key is not None:
        h += struct.pack("!I", key)
    if seq is not None:
        h += struct.pack("!I", seq)
    if with_csum:
        c = csum(h + inner)
        h = h[:4] + struct.pack("!H", c) + h[6:]
    return h + inner


def ipv4(src, dst, payload, proto=47):
    total = 20 + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, proto, 0, bytes(src), bytes(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


ovs = records("ovs-netdev-gre-icmp.txt")  # outer IPv4 + GRE + inner frame
key42 = records("ovs-gre-key42-header.txt")[0]  # GRE header with key 42 + start of a frame
inner = [p[24:] for p in ovs]
tagged = inner[0][:12] + bytes.fromhex("8100202a") + inner[0][12:]
arp = bytes.fromhex("ffffffffffff027700000001080600010800060400010277000000010a4d00010000000000000a4d0002")

# ipv4: the captures as they came off the underlay.
for i, p in enumerate(ovs):
    write("ipv4", "ovs-icmp-%d" % i, p)
write("ipv4", "ihl6-padded", bytes([0x46]) + ipv4([10, 200, 0, 1], [10, 200, 0, 2], b"\0" * 4 + gre(arp))[1:] + b"\xee\xee")

# gre: GRE part of the captures, OVS key=42 header, and every option with a checksum.
for i, p in enumerate(ovs):
    write("gre", "ovs-icmp-%d" % i, p[20:])
write("gre", "ovs-key42", key42)
write("gre", "csum-key-seq", gre(inner[0], key=0xDEADBEEF, seq=7, with_csum=True))
write("gre", "csum-odd", gre(arp + b"\x01", with_csum=True))

# ethernet: the inner frames, a tagged one and an ARP broadcast.
for i, f in enumerate(inner):
    write("ethernet", "ovs-icmp-%d" % i, f)
write("ethernet", "vlan42", tagged)
write("ethernet", "arp-broadcast", arp)

# decap: 5-byte options prefix (flags: 1 key, 2 csum, 4 seq; key big endian) + IPv4 packet.
def opts(key=None, c=False, s=False):
    return bytes([(1 if key is not None else 0) | (2 if c else 0) | (4 if s else 0)]) + struct.pack("!I", key or 0)

for i, p in enumerate(ovs):
    write("decap", "ovs-icmp-%d" % i, opts() + p)
write("decap", "key42", opts(42) + ipv4([10, 200, 0, 3], [10, 200, 0, 2], key42[:8] + inner[0]))
write("decap", "csum-key-seq", opts(7, True, True) + ipv4([10, 200, 0, 1], [10, 200, 0, 2], gre(tagged, key=7, seq=1, with_csum=True)))
write("decap", "unknown-peer", opts() + ipv4([10, 200, 0, 9], [10, 200, 0, 2], gre(arp)))

# switch: header (flags, capacity, aging, max frame) + records (op, dt, args); see switch.rs.
SYN, RAW, TIMEOUT, SYNC, TOGGLE = 2, 0, 5, 6, 7
def rec(kind, port, dt, *args):
    return bytes([(kind << 2) | port, dt]) + bytes(args)

A, B, C, BCAST = 1, 2, 3, 200
learn_fwd = (
    bytes([0, 16, 255, 200])
    + rec(SYN, 0, 1, BCAST, A, 0, 30)  # A on the TAP, broadcast: flood
    + rec(SYN, 1, 1, A, B, 0, 30)  # B behind tunnel 1 -> A: forward to 0
    + rec(SYN, 0, 1, B, A, 0, 30)  # A -> B: forward to 1
    + rec(SYN, 2, 1, B, C, 0, 30)  # C behind tunnel 2 -> B: split horizon
    + rec(SYN, 0, 1, C, A, 0x81, 30)  # tagged: C unknown on VLAN 1, flood
    + rec(RAW, 1, 5, len(inner[1])) + inner[1]
    + rec(SYN, 1, 130, A, 240, 0, 0)  # 2 s later, raw-valued source
    + rec(TIMEOUT, 0, 200)
    + rec(SYNC, 2, 1, A, 0, 3)
    + rec(TOGGLE, 1, 1)
    + rec(SYN, 0, 1, B, A, 0, 0)  # B's port is gone: flood
    + rec(TOGGLE, 1, 1)
    + rec(SYN, 3, 1, A, B, 0, 0)
)
write("switch", "learn-forward-age", learn_fwd)
flood = bytes([2, 4, 10, 40]) + b"".join(rec(SYN, n % 4, 3, BCAST if n % 3 == 0 else n, n + 5, n, n * 7) for n in range(24))
write("switch", "mac-flood-3-tunnels-no-split-horizon", bytes([1]) + flood[1:])
write("switch", "mac-flood", flood)

# arp: the ARP payload of `arp` (the packet itself, then watcher records [dt, vlan, port, len]).
arp_payload = arp[14:]
write("arp", "request", arp_payload)
claim_b = arp_payload[:8] + bytes.fromhex("027700000002") + arp_payload[14:]  # same IP, other MAC
write("arp", "duplicate-ip", arp_payload + bytes([1, 0, 1, 28]) + arp_payload + bytes([2, 0, 2, 28]) + claim_b + bytes([0x81, 0, 0, 0]))

# control_request: one of each request, as dnetctl sends them.
for name, req in [("stats", '{"cmd":"stats"}'), ("show", '{"cmd":"show"}'), ("fdb-show", '{"cmd":"fdb_show"}'),
                  ("fdb-flush", '{"cmd":"fdb_flush","port":"dnet0"}'), ("peer-add", '{"cmd":"peer_add","addr":"10.200.0.3"}'),
                  ("peer-del", '{"cmd":"peer_del","addr":"10.200.0.3"}'), ("conflicts", '{"cmd":"conflicts"}')]:
    write("control_request", name, (req + "\n").encode())

# config_file: a full file.
write("config_file", "full", b'peer = ["10.200.0.2", "10.200.0.3"]\nlocal = "10.200.0.1"\ntap = "dnet0"\nbridge = "docker0"\n'
      b'mtu = 1462\nkey = 42\ncsum = true\nseq = false\nttl = 64\ntos = 0\nworkers = 2\noffload = true\n'
      b'log_level = "info"\ncontrol_socket = "/run/dnet/dnet0.sock"\nmetrics = "127.0.0.1:9464"\n')


def tcp4(seq, flags, payload, ack=1):
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, ack, 5 << 4, flags, 502, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0,
                     bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2]))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    c = csum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    eth = bytes.fromhex("027700000002027700000001") + b"\x08\x00"
    return eth + ip + tcp + payload


# gso: virtio-net header (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset; LE) + frame.
def vnet(flags, gso_type, hdr_len, gso_size, start, off):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, start, off)

big = tcp4(1000, 0x18, bytes(range(256)) * 12)
write("gso", "tcp4-super-frame", vnet(1, 1, 54, 1448, 34, 16) + big)
write("gso", "tcp4-partial-csum", vnet(1, 0, 0, 0, 34, 16) + tcp4(1, 0x10, b"hello"))
# gro: frames with a 2-byte LE length prefix; consecutive MSS segments then a PSH.
segs = [tcp4(1 + i * 1448, 0x10 if i < 3 else 0x18, bytes([i]) * 1448) for i in range(4)]
write("gro", "tcp4-run", b"".join(struct.pack("<H", len(s)) + s for s in segs))
write("gro", "mismatch", b"".join(struct.pack("<H", len(s)) + s for s in [segs[0], segs[2], arp, segs[1]]))

# crypto: byte 0 picks the mode (see the top of fuzz_targets/crypto.rs).
def rec16(seg, data):
    return struct.pack("<HH", seg, len(data)) + data

write("crypto", "raw-cleartext-and-junk", bytes([0]) + rec16(0, gre(arp, key=42)) + rec16(64, bytes([0x44, 7, 0, 0]) + bytes(140))
      + rec16(1, bytes([0x41, 7, 0, 0]) + bytes(125)))
write("crypto", "handshake-typed", bytes([1, 129, 1]) + bytes(128) + bytes([77, 3]) + bytes(76) + bytes([5, 0x42, 7, 0, 0, 9]))
flips = struct.pack("<HB", 100, 0x01) + struct.pack("<HB", 0x8000, 2) + struct.pack("<HB", 0x8001, 5) + struct.pack("<HB", 0x8002, 3)
write("crypto", "forged-run", bytes([2, 7]) + struct.pack("<H", 1448) + bytes([0x5a]) + flips)
write("crypto", "forged-clean", bytes([2, 44]) + struct.pack("<H", 64) + bytes([0]))
ops = [(6, 0), (1, 0), (3, 0), (2, 0), (3, 0), (1, 0), (3, 0), (5, 6), (3, 0), (0, 1200), (1, 0), (2, 0), (5, 7), (4, 0x1234),
       (0, 6000), (1, 0), (2, 0), (3, 0), (3, 0)]
write("crypto", "timers", bytes([3, 1]) + b"".join(struct.pack("<BH", o, a) for o, a in ops))
# tcp: 2 bytes of pseudo-header sum, then a TCP segment. A SYN with MSS, SACK-permitted,
# timestamps, NOP, window scale; a data segment with NOP NOP timestamps; SACK blocks and an
# unknown option ending in End; an option whose length runs past the header.
def tcp_seg(flags, opts, payload=b"", seq=0x01020304):
    return struct.pack("!HHIIBBHHH", 40000, 5001, seq, 0, (5 + len(opts) // 4) << 4, flags, 64240, 0, 0) + opts + payload

syn_opts = bytes.fromhex("020405b40402080a000030390000000001030307")
write("tcp", "syn-options", b"\x0a\x4d" + tcp_seg(0x02, syn_opts))
write("tcp", "data-timestamps", b"\x0a\x4d" + tcp_seg(0x18, bytes.fromhex("0101080a0000303900001092"), b"hello"))
write("tcp", "sack-unknown-end", b"\x00\x01" + tcp_seg(0x10, bytes.fromhex("050a0000000100000002") + bytes.fromhex("1e04abcd00000000")))
write("tcp", "option-past-header", b"\x00\x01" + tcp_seg(0x02, bytes.fromhex("01010208")))
# The first find of this target: an MSS option after one NOP (its value at an odd offset),
# whose rewrite broke the checksum.
write("tcp", "mss-odd-offset", b"\x0a\x2a" + tcp_seg(0x02, bytes.fromhex("01020405b4010101")))

# udp: 2 bytes of pseudo-header sum, then a datagram (with and without a checksum, padded).
write("udp", "hi", b"\x0a\x4d" + bytes.fromhex("13881e61000b2fe9") + b"hi!" + b"\0\0")
write("udp", "no-checksum", b"\x00\x00" + bytes.fromhex("1388128a000c0000") + b"ping")

# ipv6: a TCP packet fd77::1 > fd77::2 with traffic class and flow label, padded; a bare header.
v6 = bytes.fromhex("6b812345000406 40".replace(" ", "")) + bytes.fromhex("fd77" + "00" * 13 + "01") + bytes.fromhex("fd77" + "00" * 13 + "02")
write("ipv6", "tcp-padded", v6 + bytes.fromhex("deadbeef0000"))
write("ipv6", "header-only", bytes.fromhex("60000000000011ff") + bytes(32))
