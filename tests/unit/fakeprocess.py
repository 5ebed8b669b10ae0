"""
A fake C{spawnProcess} and process transport for tests of code that runs
child processes.
"""

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(IProcessTransport)
class FakeProcess:
    def __init__(self, protocol, pid):
        self.protocol = protocol
        self.pid = pid
        self.signals = []
        self.written = []
        self.stdinClosed = False
        self.ended = False

    def signalProcess(self, sig):
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(sig)

    def write(self, data):
        self.written.append(data)

    def closeStdin(self):
        self.stdinClosed = True

    def output(self, data, fd=1):
        self.protocol.childDataReceived(fd, data)

    def end(self, code=0, sig=None):
        self.ended = True
        if code == 0 and sig is None:
            reason = ProcessDone(0)
        else:
            reason = ProcessTerminated(code, sig)
        self.protocol.processEnded(Failure(reason))


class FakeSpawner:
    def __init__(self):
        self.spawned = []
        self.nextPid = 100
        self.fail = None

    def __call__(self, protocol, executable, args, env=None, childFDs=None):
        if self.fail is not None:
            raise self.fail
        self.nextPid += 1
        process = FakeProcess(protocol, self.nextPid)
        self.spawned.append(dict(process=process, executable=executable, args=args,
                                 env=env, childFDs=childFDs))
        protocol.makeConnection(process)
        return process

    @property
    def last(self):
        return self.spawned[-1]["process"]
