"""
What bench/attack.py's two sides (bench/_legit.py, bench/_attacker.py)
share: the bytes of a JSON-RPC call over raw HTTP, and the one place that
builds a registration (adapt L{registerParams} when the register call
changes).  Plain sockets and asyncio, no Twisted: they run as separate
processes in other namespaces.
"""

import asyncio
import base64
import json
import os
import socket
import time

from nacl.signing import SigningKey

from mnigs.protocol import RPC_PATH, signRegistration

PATH = RPC_PATH.decode()


def newClientKey():
    return SigningKey.generate()


def clientId(key):
    return "ed25519:" + base64.b64encode(bytes(key.verify_key)).decode("ascii")


def randomWireGuardKey():
    return base64.b64encode(os.urandom(32)).decode("ascii")


def registerParams(key, offer, method, methodParams, name="bench"):
    """
    The params of a C{gateway.register} by the client holding C{key},
    after fetching C{offer} (its C{gateway.info} answer): protocol v2, the
    gateway id and the offer's nonce, signed by C{key}.
    """
    return signRegistration({"client": {"id": clientId(key), "name": name},
                             "gateway": offer["gateway"]["id"], "nonce": offer["nonce"],
                             "method": method, "params": methodParams}, key)


def request(method, params=None, id=1):
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {},
                       "id": id}).encode("utf-8")
    return (f"POST {PATH} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode("ascii") + body


def parseAnswer(raw):
    """(HTTP status, JSON-RPC object or None) from a whole HTTP answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b"\r\n", 1)[0].split()[1])
    except (IndexError, ValueError):
        return None, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def call(host, port, method, params=None, timeout=5.0):
    """
    One call on a fresh connection: (ok, seconds, result or error code or
    why).  ok is True only for a JSON-RPC result.
    """
    started = time.monotonic()
    raw = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - started)))
            sock.sendall(request(method, params))
            while True:
                remaining = timeout - (time.monotonic() - started)
                if remaining <= 0:
                    raise socket.timeout("no whole answer in time")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
    except OSError as e:
        return False, time.monotonic() - started, f"{type(e).__name__}: {e}"
    elapsed = time.monotonic() - started
    status, answer = parseAnswer(raw)
    if isinstance(answer, dict) and "result" in answer:
        return True, elapsed, answer["result"]
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return False, elapsed, answer["error"].get("code")
    return False, elapsed, f"HTTP {status}, {len(raw)} bytes"


async def acall(host, port, method, params=None, timeout=5.0):
    """L{call} for asyncio: (ok, result or error code or why)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        return False, f"{type(e).__name__}"
    try:
        writer.write(request(method, params))
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        return False, f"{type(e).__name__}"
    finally:
        writer.close()
    status, answer = parseAnswer(raw)
    if isinstance(answer, dict) and "result" in answer:
        return True, answer["result"]
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return False, answer["error"].get("code")
    return False, f"HTTP {status}"
