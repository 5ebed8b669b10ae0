"""
A bulk TCP transfer for namespace tests and benchmarks, with nothing but
the standard library (run inside a namespace as C{python -m tests.mesh.bulkproc})::

    serve PORT SIZE PEERLOG [ADDRESS]
                              send SIZE bytes to each connection, append
                              its peer address to PEERLOG, close; on
                              ADDRESS (default 0.0.0.0; "::" for IPv6)
    fetch HOST PORT SIZE TIMEOUT
                              read SIZE bytes; print the seconds it took,
                              exit 1 (and say why) if not all came in time
"""

import socket
import sys
import time

CHUNK = 65536


def serve(port, size, peerLog, address="0.0.0.0"):
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(8)
    block = b"\0" * CHUNK
    while True:
        conn, peer = listener.accept()
        with open(peerLog, "a") as f:
            f.write(peer[0] + "\n")
        try:
            left = size
            while left > 0:
                left -= conn.send(block[:min(left, CHUNK)])
        except OSError:
            pass
        finally:
            conn.close()


def fetch(host, port, size, timeout):
    started = time.monotonic()
    got = 0
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
        conn.settimeout(max(0.1, timeout - (time.monotonic() - started)))
        while got < size:
            data = conn.recv(CHUNK)
            if not data:
                break
            got += len(data)
            conn.settimeout(max(0.1, timeout - (time.monotonic() - started)))
    except OSError as e:
        print(f"got {got} of {size} bytes: {e}")
        return 1
    if got < size:
        print(f"got {got} of {size} bytes: closed early")
        return 1
    print(f"{time.monotonic() - started:.3f}")
    return 0


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "serve":
        serve(int(args[0]), int(args[1]), *args[2:4])
    else:
        sys.exit(fetch(args[0], int(args[1]), int(args[2]), float(args[3])))
