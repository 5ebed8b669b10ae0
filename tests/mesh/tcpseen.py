"""
A TCP service that tells each caller the address it sees the call come
from, for checking what a gateway's NAT (or no NAT) makes of a client's
source.  Run inside a node::

    python -m tests.mesh.tcpseen serve ADDRESS PORT   # until killed
    python -m tests.mesh.tcpseen ask ADDRESS PORT     # prints what was seen

IPv4 or IPv6 by the address; C{ask} exits non-zero when it cannot connect
within 2 s.
"""

import socket
import sys


def serve(address, port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(16)
        while True:
            connection, peer = listener.accept()
            with connection:
                connection.sendall(peer[0].encode("ascii") + b"\n")


def ask(address, port, timeout=2.0):
    with socket.create_connection((address, port), timeout=timeout) as connection:
        return connection.makefile("r").readline().strip()


if __name__ == "__main__":
    command, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if command == "serve":
        serve(address, port)
    else:
        print(ask(address, port))
