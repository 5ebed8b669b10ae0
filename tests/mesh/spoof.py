"""
Send UDP datagrams with any IPv4 or IPv6 source address, as an attacker
on the mesh would: a raw socket (IP_HDRINCL; for IPv6, IPPROTO_RAW, which
Linux takes as header included) writes the whole IP header, so the
kernel routes the packet by its destination and leaves the forged source
alone.  Run inside a node::

    python -m tests.mesh.spoof SOURCE DESTINATION PORT COUNT

or, for a control that is no forgery at all (the kernel picks the source
as for any application), C{plain} as SOURCE.  Prints nothing; exits
non-zero if a datagram could not be sent.
"""

import socket
import struct
import sys
import time


def datagram(source, destination, port, payload=b"mnigs spoof test"):
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload  # no UDP checksum
    # The kernel fills in the IP checksum and an id of 0 (raw(7)).
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP,
                         0, socket.inet_aton(source), socket.inet_aton(destination))
    return header + udp


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF or 0xFFFF


def datagram6(source, destination, port, payload=b"mnigs spoof test"):
    """
    An IPv6 UDP datagram, with the UDP checksum IPv6 requires (RFC 8200,
    8.1) over the pseudo-header.
    """
    src, dst = socket.inet_pton(socket.AF_INET6, source), socket.inet_pton(socket.AF_INET6, destination)
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!IxxxB", length, socket.IPPROTO_UDP)
    udp = struct.pack("!HHHH", 40000, port, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp)) + udp[8:]
    header = struct.pack("!IHBB16s16s", 6 << 28, length, socket.IPPROTO_UDP, 64, src, dst)
    return header + udp


def send(source, destination, port, count, interval=0.01):
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    make = datagram6 if family == socket.AF_INET6 else datagram
    with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        packet = make(source, destination, port)
        for _ in range(count):
            sock.sendto(packet, (destination, 0))
            time.sleep(interval)


def sendPlain(destination, port, count, interval=0.01):
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(b"mnigs control", (destination, port))
            time.sleep(interval)


if __name__ == "__main__":
    source, destination, port, count = sys.argv[1:5]
    if source == "plain":
        sendPlain(destination, int(port), int(count))
    else:
        send(source, destination, int(port), int(count))
