from twisted.application.service import ServiceMaker

mnigsServer = ServiceMaker(
    "mnigs gateway server", "mnigs.server.tap",
    "Serve signed Internet gateway offers and leases on a mesh.",
    "mnigs-server")
