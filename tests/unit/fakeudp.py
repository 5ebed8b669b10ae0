"""
Datagram plumbing for the FAKE cjdns admin endpoint (L{tests.unit.fakecjdns}):
the same fake behind a real UDP socket, or behind an in-memory one that a
L{twisted.internet.task.Clock} drives, for synchronous tests.
"""

from __future__ import annotations

from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock


class FakeCjdnsProtocol(DatagramProtocol):
    """A fake endpoint (C{handle(data)} -> [(delay, reply)]) on a real UDP socket."""

    def __init__(self, fake, reactor) -> None:
        self.fake = fake
        self.reactor = reactor

    def datagramReceived(self, data, addr):
        for delay, reply in self.fake.handle(data):
            if delay:
                self.reactor.callLater(delay, self._reply, reply, addr)
            else:
                self._reply(reply, addr)

    def _reply(self, reply, addr):
        if self.transport is not None:
            self.transport.write(reply, addr)


class _LoopbackPort:
    def __init__(self, reactor, protocol, maxPacketSize):
        self.reactor = reactor
        self.protocol = protocol
        self.maxPacketSize = maxPacketSize
        self.peer = None
        self.written: list[bytes] = []
        self.listening = True
        protocol.makeConnection(self)

    def connect(self, host, port):
        self.peer = (host, port)

    def write(self, data, addr=None):
        self.written.append(data)
        self.reactor.callLater(0, self.reactor._deliver, self, data)

    def stopListening(self):
        self.listening = False


class LoopbackUDPReactor(Clock):
    """
    A clock with C{listenUDP} whose sockets reach FAKE endpoints in
    memory (through C{callLater(0)}, so that C{advance} drives everything
    without recursion), for synchronous tests.
    """

    def __init__(self):
        super().__init__()
        self.endpoints: dict = {}
        self.ports: list[_LoopbackPort] = []

    def addEndpoint(self, fake, host="127.0.0.1", port=11234) -> None:
        fake.clock = self
        self.endpoints[(host, port)] = fake

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        udp = _LoopbackPort(self, protocol, maxPacketSize)
        self.ports.append(udp)
        return udp

    def _deliver(self, port: _LoopbackPort, data: bytes) -> None:
        fake = self.endpoints.get(port.peer)
        if fake is None:
            self.callLater(0, port.protocol.connectionRefused)
            return
        for delay, reply in fake.handle(data):
            self.callLater(delay, self._arrive, port, reply)

    def _arrive(self, port, reply):
        if port.listening and len(reply) <= port.maxPacketSize:
            port.protocol.datagramReceived(reply, port.peer)
