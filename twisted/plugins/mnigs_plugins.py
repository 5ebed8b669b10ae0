from twisted.application.service import ServiceMaker

mnigsServer = ServiceMaker(
    "mnigs gateway server", "mnigs.server.tap",
    "Serve signed Internet gateway offers and leases on a mesh.",
    "mnigs-server")

mnigsClient = ServiceMaker(
    "mnigs client", "mnigs.client.tap",
    "Find, rank and use Internet gateways on a mesh, failing over fast.",
    "mnigs-client")
