"""
A known amount of TCP traffic between two namespaces, moved by the test
process itself (sockets made in each namespace): C{download} sends
C{size} bytes from a listener on one node to a connection from the other,
C{upload} the other way, each returning only once every byte arrived.

The sender is paced (C{SO_MAX_PACING_RATE}, L{PACE} bytes a second):
unpaced, a burst overflows wireguard-go's UDP receive buffer on the far
side (C{UdpRcvbufErrors}), and the retransmissions that follow are real
traffic too (a third more bytes than the payload, measured), which would
hide what a test compares its counters with.
"""

import socket
import threading
import time

CHUNK = 64 * 1024
PACE = 4 * 1000 * 1000
SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)


def _serve(listener, job, result):
    try:
        listener.settimeout(30)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            result["value"] = job(conn)
    except Exception as e:  # handed to the test's thread
        result["error"] = e
    finally:
        listener.close()


def _send(conn, size):
    conn.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, PACE)
    block = b"\0" * CHUNK
    left = size
    while left > 0:
        conn.sendall(block[:min(CHUNK, left)])
        left -= min(CHUNK, left)


def _receive(conn, progress=None):
    total = 0
    while True:
        data = conn.recv(CHUNK)
        if not data:
            return total
        total += len(data)
        if progress is not None:
            progress["received"] = total


def _run(server, client, host, port, serverJob, clientJob, source=None):
    listener = server.openSocket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    result = {}
    thread = threading.Thread(target=_serve, args=(listener, serverJob, result), daemon=True)
    thread.start()
    conn = client.openSocket()
    try:
        if source is not None:
            conn.bind((source, 0))
        conn.settimeout(30)
        conn.connect((host, port))
        clientValue = clientJob(conn)
    finally:
        conn.close()
    thread.join(40)
    if "error" in result:
        raise result["error"]
    return clientValue, result.get("value")


def download(client, server, host, size, port=5201, source=None, progress=None):
    """
    C{size} bytes from C{server} (listening on C{host}) to C{client}
    (from its address C{source}, if given); returns the bytes the client
    received.  C{progress}, a dict, has C{received} (bytes so far) kept
    up to date while it runs, for a test that acts in the middle.
    """
    def serverJob(conn):
        _send(conn, size)
        conn.shutdown(socket.SHUT_WR)
        return _receive(conn)

    received, _ = _run(server, client, host, port, serverJob,
                       lambda conn: _receive(conn, progress), source)
    return received


class BackgroundDownload:
    """
    L{download} in a thread, for a test that acts while it runs:
    C{progress} is download's, and C{result} gets C{received} (the bytes)
    or C{error} (what it raised), then C{ended} (C{time.monotonic()}).
    """

    def __init__(self, client, server, host, size, **kw):
        self.progress, self.result = {}, {}
        self._thread = threading.Thread(target=self._run, args=(client, server, host, size),
                                        kwargs=kw, daemon=True)
        self._thread.start()

    def _run(self, client, server, host, size, **kw):
        try:
            self.result["received"] = download(client, server, host, size,
                                               progress=self.progress, **kw)
        except Exception as e:
            self.result["error"] = e
        self.result["ended"] = time.monotonic()

    def received(self) -> int:
        return self.progress.get("received", 0)

    def join(self, timeout: float) -> dict:
        self._thread.join(timeout)
        return self.result


def upload(client, server, host, size, port=5202, source=None):
    """
    C{size} bytes from C{client} to C{server} (listening on C{host});
    returns the bytes the server received.
    """
    def clientJob(conn):
        _send(conn, size)
        conn.shutdown(socket.SHUT_WR)
        return _receive(conn)

    def serverJob(conn):
        return _receive(conn)

    _, received = _run(server, client, host, port, serverJob, clientJob, source)
    return received
