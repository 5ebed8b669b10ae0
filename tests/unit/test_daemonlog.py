"""
The daemons' [log] level: the filter, the level changed live, the
observer a tap gives twistd's application, and the [log] section of both
config files.  (tests.mesh.test_daemon runs real twistd at both levels.)
"""

import os

from twisted.application.service import Application, IServiceCollection, Service
from twisted.logger import ILogObserver, LogLevel, PredicateResult
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import loadClientConfig
from mnigs.daemon.config import ConfigError
from mnigs.daemon.daemonlog import LevelFilter, levelled
from mnigs.server.config import loadServerConfig


def event(level, namespace="mnigs.test"):
    return {"log_level": level, "log_namespace": namespace, "log_format": "{what} line",
            "what": level.name, "log_time": 0.0}


class LevelFilterTests(SynchronousTestCase):
    def verdicts(self, levelFilter):
        return {level.name: levelFilter(event(level)) for level in LogLevel.iterconstants()}

    def test_infoDropsDebugOnly(self):
        self.assertEqual(self.verdicts(LevelFilter("info")), {
            "debug": PredicateResult.no, "info": PredicateResult.maybe,
            "warn": PredicateResult.maybe, "error": PredicateResult.maybe,
            "critical": PredicateResult.maybe})

    def test_debugLetsEverythingThrough(self):
        self.assertEqual(set(self.verdicts(LevelFilter("debug")).values()), {PredicateResult.maybe})

    def test_setLevelAppliesAtOnce(self):
        levelFilter = LevelFilter("info")
        levelFilter.setLevel("error")
        self.assertEqual(levelFilter(event(LogLevel.warn)), PredicateResult.no)
        self.assertEqual(levelFilter(event(LogLevel.error)), PredicateResult.maybe)
        levelFilter.setLevel("debug")
        self.assertEqual(levelFilter(event(LogLevel.debug)), PredicateResult.maybe)
        self.assertEqual(levelFilter.level, "debug")

    def test_unknownLevelRefused(self):
        levelFilter = LevelFilter("warn")
        self.assertRaises(ValueError, levelFilter.setLevel, "verbose")
        self.assertEqual(levelFilter.level, "warn")

    def test_eventsWithoutALevelPass(self):
        self.assertEqual(LevelFilter("error")({"log_format": "x"}), PredicateResult.maybe)


class TapOptions(dict):
    """A tap's options, whose parent is twistd's."""

    def __init__(self, parent):
        super().__init__()
        self.parent = parent


class LevelledTests(SynchronousTestCase):
    def application(self, level, **twistdOptions):
        daemon = Service()
        service = levelled(daemon, TapOptions(twistdOptions), LevelFilter(level))
        application = Application("mnigs-test")
        service.setServiceParent(application)  # what twistd does with makeService's result
        self.assertIs(service.daemon, daemon)
        self.assertIn(service, list(IServiceCollection(application)))
        return application, service

    def test_applicationObserverWritesTheLogFileAtTheLevel(self):
        path = self.mktemp()
        application, service = self.application("info", logfile=path)
        observer = application.getComponent(ILogObserver)
        observer(event(LogLevel.debug))
        observer(event(LogLevel.info))
        service.levelFilter.setLevel("debug")
        observer(event(LogLevel.debug))
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual([line.split("] ", 1)[1] for line in lines], ["info line", "debug line"])

    def test_withoutTwistdNothingIsInstalled(self):
        service = levelled(Service(), TapOptions(None), LevelFilter("info"))
        application = Application("mnigs-test")
        service.setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver))


class LogSectionTests(SynchronousTestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    SERVER = '[uplink]\ninterface = "up0"\n[methods.forward]\n'

    def test_bothDaemonsDefaultToInfo(self):
        self.assertEqual(loadServerConfig(self.write(self.SERVER)).log.level, "info")
        self.assertEqual(loadClientConfig(self.write("")).log.level, "info")

    def test_bothDaemonsTakeALevel(self):
        server = loadServerConfig(self.write(self.SERVER + '[log]\nlevel = "debug"\n'))
        client = loadClientConfig(self.write('[log]\nlevel = "warn"\n'))
        self.assertEqual((server.log.level, client.log.level), ("debug", "warn"))

    def test_unknownLevelNamesTheKey(self):
        for load, text in ((loadServerConfig, self.SERVER), (loadClientConfig, "")):
            e = self.assertRaises(ConfigError, load, self.write(text + '[log]\nlevel = "verbose"\n'))
            self.assertEqual(e.key, "log.level")
            self.assertIn("'debug', 'info', 'warn', 'error'", e.reason)

    def test_samplesSayInfo(self):
        etc = os.path.join(os.path.dirname(__file__), "..", "..", "etc")
        self.assertEqual(loadServerConfig(os.path.join(etc, "mnigs-server.toml")).log.level, "info")
        self.assertEqual(loadClientConfig(os.path.join(etc, "mnigs-client.toml")).log.level, "info")
