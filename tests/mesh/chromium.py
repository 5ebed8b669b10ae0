"""
Debian's C{chromium}, headless, run inside a mesh node: the rendered DOM
of a page (C{--dump-dom}) and a screenshot of it.  Each run has a
private profile under the test's directory, runs in its own process
group, and is stopped (the whole group) when it is done or late.
"""

import os
import shutil
import signal
import subprocess

from tests.mesh.commands import fileTail, terminate

CHROMIUM = "chromium"


def missingChromium():
    """Why the Chromium tests cannot run here, or None."""
    if shutil.which(CHROMIUM) is None:
        return "chromium is not installed (Debian's chromium package)"
    return None


class Chromium:
    """
    @param node: the L{tests.mesh.node.Node} to browse from.
    @param directory: where profiles and logs go (removed by the test).
    """

    def __init__(self, node, directory):
        self.node = node
        self.directory = directory
        self.runs = 0

    def _run(self, arguments, timeout):
        self.runs += 1
        profile = os.path.join(self.directory, f"profile-{self.runs}")
        logPath = os.path.join(self.directory, f"chromium-{self.runs}.log")
        argv = ["ip", "netns", "exec", self.node.ns, CHROMIUM, "--headless=new",
                "--no-sandbox",  # we run as root, which the sandbox refuses
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--hide-scrollbars", f"--user-data-dir={profile}"] + arguments
        with open(logPath, "ab") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=log, start_new_session=True)
        self.node.mesh.track(process)
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"chromium took over {timeout} s:\n{fileTail(logPath)}") from None
        finally:
            terminate([process])
            try:  # helpers left behind share its process group
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            shutil.rmtree(profile, ignore_errors=True)
        if process.returncode != 0:
            raise AssertionError(f"chromium exited with {process.returncode}:\n{fileTail(logPath)}")
        return out.decode("utf-8", "replace")

    def dumpDOM(self, url, timeout=60):
        """The DOM of C{url} once loaded, serialised."""
        return self._run(["--dump-dom", url], timeout)

    def screenshot(self, url, path, width=1280, height=1600, timeout=60):
        """Save a PNG of C{url} at C{path}."""
        self._run([f"--screenshot={path}", f"--window-size={width},{height}", url], timeout)
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                raise AssertionError(f"{path} is not a PNG")
        return path
