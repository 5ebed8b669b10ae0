"""
A packet watcher for the benchmarks (there is no tcpdump here): every
WireGuard handshake message, and the first packet after a second of
silence of every WireGuard data flow and of every flow of echoes to or
from a tunnel pool that does NOT travel in a tunnel (a health probe the
mesh carries, a reply that bypasses the tunnel, a routing loop), on every
interface of the namespace it runs in, one line each::

    WALL IFNAME in|out SRC:PORT DST:PORT KIND

KIND is C{init}, C{resp}, C{cookie}, C{data} (WireGuard, by the first
byte of the UDP payload to or from C{--port}), or C{icmp-req}/C{icmp-rep}
(an echo to or from C{--pool} seen on an interface other than a tunnel).  Wall-clock
seconds, microsecond resolution, as bench/_pinger.py.  Stdlib only; stops
on TERM or INT.

    python bench/_wgwatch.py [--port 51820] [--pool 100.64.0.0/10]
"""

import argparse
import ipaddress
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
WG_KINDS = {1: "init", 2: "resp", 3: "cookie", 4: "data"}
QUIET = 1.0  # a data packet or echo is logged when its flow was quiet this long


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=51820)
    parser.add_argument("--pool", default="100.64.0.0/10")
    parser.add_argument("--tunnel-prefix", action="append", default=["mw", "mc", "mnigs"],
                        help="interface names that are tunnels (echoes on them are normal)")
    args = parser.parse_args()
    pool = ipaddress.ip_network(args.pool)

    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))

    # SOCK_DGRAM: the link-layer header is taken off, so veths and tun
    # devices both hand over plain IP packets.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    sock.setblocking(False)
    lastSeen = {}

    def firstOfBurst(flow, wall):
        quiet = wall - lastSeen.get(flow, 0) >= QUIET
        lastSeen[flow] = wall
        return quiet

    out = sys.stdout
    while not stopping:
        try:
            readable, _, _ = select.select([sock], [], [], 0.5)
        except InterruptedError:
            continue
        if not readable:
            continue
        while True:
            try:
                packet, (ifname, proto, pkttype, _, _) = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            if proto != ETH_P_IP or len(packet) < 20 or packet[0] >> 4 != 4:
                continue
            wall = time.time()
            header = (packet[0] & 0x0F) * 4
            kind = packet[9]
            src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
            direction = "out" if pkttype == PACKET_OUTGOING else "in"
            body = packet[header:]
            if kind == socket.IPPROTO_UDP and len(body) >= 9:
                sport, dport = struct.unpack("!HH", body[:4])
                if args.port not in (sport, dport):
                    continue
                wgKind = WG_KINDS.get(body[8], f"type{body[8]}")
                if wgKind == "data" and not firstOfBurst((ifname, direction, src, dst, wgKind), wall):
                    continue
                out.write(f"{wall:.6f} {ifname} {direction} {src}:{sport} {dst}:{dport} {wgKind}\n")
            elif kind == socket.IPPROTO_ICMP and len(body) >= 8 and body[0] in (0, 8):
                if ifname.startswith(tuple(args.tunnel_prefix)):
                    continue
                if not (ipaddress.ip_address(src) in pool or ipaddress.ip_address(dst) in pool):
                    continue
                icmp = "icmp-req" if body[0] == 8 else "icmp-rep"
                if not firstOfBurst((ifname, direction, src, dst, icmp), wall):
                    continue
                out.write(f"{wall:.6f} {ifname} {direction} {src} {dst} {icmp}\n")
            else:
                continue
            out.flush()


if __name__ == "__main__":
    main()
