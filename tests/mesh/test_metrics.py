"""
Both daemons' C{/metrics} on a namespace mesh, scraped during a failover:
real babeld, mnigs-server gateways with wireguard-go and nftables, an
mnigs-client, each with its status listener on; the serving gateway goes
silent as in L{tests.mesh.test_client}.  Every scrape is checked by
C{promtool check metrics} (Debian's prometheus package): no error and no
lint warning.  Nothing is mocked.
"""

import shutil
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.harness import requireNamespaces, waitUntil
from tests.mesh.test_client import INTERNET, silence

WEB = {"web": {"enabled": True}}


def scrape(node, port):
    """
    C{/metrics} of the daemon listening on C{port} on C{node}'s loopback,
    fetched from inside the node; checked by promtool; as
    C{{(name, frozenset(labels)): value}}.
    """
    exposition = node.run(["curl", "-sS", "--fail", "--max-time", "10",
                           f"http://127.0.0.1:{port}/metrics"]).stdout
    checked = subprocess.run([shutil.which("promtool"), "check", "metrics"],
                             input=exposition.encode(), capture_output=True, timeout=30)
    said = (checked.stdout + checked.stderr).decode().strip()
    if checked.returncode or said:
        raise AssertionError(f"promtool check metrics: {said}\n--- exposition ---\n{exposition}")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples}


def value(samples, name, /, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples, name):
    return sum(v for (n, _), v in samples.items() if n == name)


class MetricsMeshTests(DaemonMeshTestCase):

    def setUp(self):
        super().setUp()
        requireNamespaces(self, "curl", "promtool")

    def test_scrapesDuringAFailover(self):
        """
        client - r1 - gwA, and r1 - r2 - gwB: online via gwA, then gwA goes
        silent; the client's failover counter and outage histogram move,
        and gwB counts the lease it took over.
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway()
        self.gateway(gwA, **WEB)
        self.gateway(gwB, **WEB)
        # Paced probes no faster than every 0.1 s: the gateway is given up
        # 1.65 s after its last answer (0.37 s with the defaults), long
        # enough for the scrapes every 0.2 s below to catch the failover.
        c = self.clientProcess(client, health={"min_interval": 0.1}, **WEB).start()
        gwAId = c.waitState("online", 30, gateway="gwA")["current"]["gateway"]

        before = scrape(client, 8152)
        self.assertEqual(value(before, "mnigs_client_state", mnigs_client_state="online"), 1)
        self.assertEqual(value(before, "mnigs_client_gateway_info", gateway=gwAId, name="gwA",
                               host=c.status()["current"]["host"], method="wireguard"), 1)
        self.assertEqual(total(before, "mnigs_client_failovers_total"), 0)
        self.assertEqual(value(before, "mnigs_client_outage_seconds_count"), 0)
        self.assertGreaterEqual(value(before, "mnigs_client_discovery_duration_seconds_count"), 1)
        waitUntil(lambda: value(scrape(client, 8152), "mnigs_client_probe_rounds_total",
                                result="answered") > 0, 10, message="probe rounds counted")

        served = scrape(gwA, 8151)
        self.assertEqual(value(served, "mnigs_server_available"), 1)
        self.assertEqual(value(served, "mnigs_server_uplink_up"), 1)
        self.assertEqual(value(served, "mnigs_server_state", mnigs_server_state="serving"), 1)
        self.assertEqual(value(served, "mnigs_server_leases", method="wireguard"), 1)
        self.assertEqual(value(served, "mnigs_server_clients"), 1)
        self.assertEqual(value(served, "mnigs_server_max_clients"), 8)
        self.assertGreaterEqual(value(served, "mnigs_server_rpc_calls_total",
                                      method="gateway.register"), 1)
        self.assertGreaterEqual(value(served, "mnigs_server_rpc_duration_seconds_count",
                                      method="gateway.info"), 1)

        silence(gwA)
        died = time.monotonic()
        # Scraped while the client is not online: degraded (probes missed,
        # still on gwA), or, when a scrape catches it there (it may last
        # well under a second), between the gateways.
        during = []

        def backOnline():
            samples = scrape(client, 8152)
            if value(samples, "mnigs_client_state", mnigs_client_state="online") != 1:
                during.append(samples)
                return False
            gateways = [dict(labels) for (name, labels), v in samples.items()
                        if name == "mnigs_client_gateway_info"]
            return [g["name"] for g in gateways] == ["gwB"]

        waitUntil(backOnline, 30, interval=0.2, message="the client online via gwB")
        outage = time.monotonic() - died
        waitUntil(lambda: client.ping(INTERNET, timeout=0.5), 10, message="internet via gwB")

        after = scrape(client, 8152)
        self.assertEqual(total(after, "mnigs_client_failovers_total"), 1, after)
        self.assertEqual(value(after, "mnigs_client_failovers_total", reason="switch"), 0)
        self.assertEqual(value(after, "mnigs_client_outage_seconds_count"), 1)
        self.assertGreater(value(after, "mnigs_client_outage_seconds_sum"), 0)
        self.assertLess(value(after, "mnigs_client_outage_seconds_sum"), outage + 1)
        self.assertTrue(during, "no scrape caught the client offline")
        for samples in during:
            left = value(samples, "mnigs_client_state", mnigs_client_state="degraded") == 0
            self.assertEqual(total(samples, "mnigs_client_failovers_total"), 1 if left else 0)
            self.assertEqual(value(samples, "mnigs_client_outage_seconds_count"), 0)

        took = scrape(gwB, 8151)
        self.assertEqual(value(took, "mnigs_server_leases", method="wireguard"), 1)
        self.assertGreaterEqual(value(took, "mnigs_server_rpc_calls_total",
                                      method="gateway.register"), 1)
        self.assertEqual(value(took, "mnigs_server_available"), 1)
