"""
A train of pings from a mesh node to the internet host, counting what was
lost: how namespace tests measure a cut.
"""

import os
import re
import signal
import time

from tests.mesh.harness import INTERNET_HOST, waitUntil

_REPLY = re.compile(rb"icmp_seq=(\d+) ttl=")


class PingTrain:
    """
    C{ping} from C{node} to the internet host every C{interval} seconds,
    C{count} times at most.  What was lost is read from the replies: every
    sequence number below the last one answered that got no answer.
    """

    def __init__(self, node, count, interval=0.05):
        self.log = os.path.join(node.tmp, f"ping-{time.monotonic_ns()}.log")
        self.interval = interval
        self.count = count
        self.duration = count * interval
        self.started = time.monotonic()
        self.process = node.spawn(["ping", "-n", "-i", str(interval), "-W", "1",
                                   "-c", str(count), INTERNET_HOST], log=self.log)

    def answered(self):
        with open(self.log, "rb") as f:
            return {int(seq) for seq in _REPLY.findall(f.read())}

    def waitAnswered(self, n, timeout=10):
        """Wait until C{n} pings were answered (the train runs)."""
        waitUntil(lambda: len(self.answered()) >= n, timeout, message=f"{n} answered pings")

    def finish(self):
        """
        Wait for the whole train; (last sequence number answered, lost).
        """
        waitUntil(lambda: self.process.poll() is not None, self.duration + 30,
                  message="the ping train to end")
        return self._count()

    def cut(self):
        """
        End the train once two more pings were answered, and say (last
        sequence number answered, lost, seconds of pings lost).
        """
        seen = max(self.answered(), default=0)
        waitUntil(lambda: max(self.answered(), default=0) >= seen + 2, 30,
                  message="two more answered pings")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(10)
        last, lost = self._count()
        return last, lost, round(lost * self.interval, 2)

    def _count(self):
        answered = self.answered()
        last = max(answered, default=0)
        return last, last - len(answered)
