"""
What the benchmark scripts share: progress on stderr, signal handling that
unwinds through the cleanups, keeping logs.
"""

import os
import shutil
import signal
import sys
import time

_MAIN_PID = os.getpid()


def progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _stop(signum, frame):
    if os.getpid() != _MAIN_PID:
        # A forked helper: pyroute2 forks to open sockets in a namespace and
        # ends the child with TERM.  Raising here would unwind *our* stack in
        # the child and run the benchmark's cleanups (destroying the mesh
        # under the parent's feet).
        os._exit(128 + signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def unwindOnSignals():
    """
    TERM and INT (Ctrl-C) unwind the main process through its C{finally}
    blocks and context managers, so namespaces and processes are removed.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)


def keepLogs(source, destination):
    """Copy the regular files under C{source} (logs, configs) to C{destination}."""
    def notRegular(directory, names):
        return [n for n in names if not (os.path.isdir(os.path.join(directory, n))
                                         or os.path.isfile(os.path.join(directory, n)))]

    shutil.copytree(source, destination, ignore=notRegular, dirs_exist_ok=True)
    progress(f"logs kept in {destination}")


def runOnMesh(name, run, keep=None, hello=0.5):
    """
    The frame of a namespace benchmark: C{run(mesh)} on a new
    L{tests.mesh.harness.Mesh} (babeld hello C{hello}; 0 for its
    defaults), removed afterwards even on failure or a signal (see
    L{unwindOnSignals}); the logs kept in C{keep} first unless it is
    C{None} (C{""}: /tmp/mnigs-NAME-TIME).  On failure the last line of
    stdout is C{{"error": ...}} and the exception goes on.  Returns what
    C{run} returned and the wall time in seconds.
    """
    import json

    from tests.mesh.harness import Mesh

    unwindOnSignals()
    started = time.monotonic()
    try:
        with Mesh(None, hello=hello) as mesh:
            try:
                result = run(mesh)
            finally:
                if keep is not None:
                    keepLogs(mesh.tmp, keep or f"/tmp/mnigs-{name}-{time.strftime('%H%M%S')}")
    except BaseException as e:
        progress(f"failed: {e!r}")
        print(json.dumps({"error": repr(e)}))
        raise
    return result, round(time.monotonic() - started, 1)
