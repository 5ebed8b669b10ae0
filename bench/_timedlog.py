"""
A twistd log observer with microsecond timestamps, for benchmarks that
take a failover apart from the daemons' logs (twistd's own --logfile
observer stamps whole seconds only).

    twistd --logger bench._timedlog.observer ...   # MNIGS_BENCH_LOG=/path
"""

import os

from twisted.logger import textFileLogObserver


def observer():
    path = os.environ["MNIGS_BENCH_LOG"]
    return textFileLogObserver(open(path, "a", buffering=1, encoding="utf-8"),
                               timeFormat="%Y-%m-%dT%H:%M:%S.%f")
