"""
A steady ICMP echo stream for the benchmarks: one echo request every
C{--interval} seconds to one host, and one line per answer on stdout::

    R SEQ SENT RECEIVED        (wall-clock seconds, microsecond resolution)
    E SEQ SENT ERRNO-NAME      (sendto failed, e.g. no route for a moment)

Unlike C{ping -I}, the socket is bound only when C{--source} is given, so
the kernel picks the source address for every packet anew: a client whose
tunnel (and tunnel address) changes keeps being measured.  Stdlib only, so
that it starts fast inside any namespace; stops on TERM or INT.
"""

import argparse
import errno
import os
import select
import signal
import socket
import struct
import sys
import time

ECHO_REQUEST = 8
ECHO_REPLY = 0


def checksum(data):
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo(ident, seq):
    payload = b"mnigs-bench-ping"
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(header + payload), ident, seq) + payload


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--source")
    args = parser.parse_args()

    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))

    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if args.source:
        sock.bind((args.source, 0))
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    out = sys.stdout
    sent = {}
    seq = 0
    nextSend = time.monotonic()
    while not stopping:
        now = time.monotonic()
        if now >= nextSend:
            seq = (seq + 1) & 0xFFFF
            wall = time.time()
            try:
                sock.sendto(echo(ident, seq), (args.host, 0))
                sent[seq] = wall
            except OSError as e:
                out.write(f"E {seq} {wall:.6f} {errno.errorcode.get(e.errno, e.errno)}\n")
                out.flush()
            nextSend += args.interval
            if nextSend < now:  # we fell behind (a stall): do not burst
                nextSend = now + args.interval
            continue
        try:
            readable, _, _ = select.select([sock], [], [], nextSend - now)
        except InterruptedError:
            continue
        if not readable:
            continue
        while True:
            try:
                packet, (peer, _) = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            received = time.time()
            headerLength = (packet[0] & 0x0F) * 4
            icmp = packet[headerLength:headerLength + 8]
            if len(icmp) < 8 or peer != args.host:
                continue
            kind, _, _, replyIdent, replySeq = struct.unpack("!BBHHH", icmp)
            if kind != ECHO_REPLY or replyIdent != ident or replySeq not in sent:
                continue
            out.write(f"R {replySeq} {sent.pop(replySeq):.6f} {received:.6f}\n")
            out.flush()
            if len(sent) > 4096:  # forget requests that will never be answered
                for old in sorted(sent, key=sent.get)[:2048]:
                    del sent[old]


if __name__ == "__main__":
    main()
