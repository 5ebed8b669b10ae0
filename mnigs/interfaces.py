"""
The seams of mnigs.  Every pluggable part provides one of these interfaces;
a new routing protocol or tunnel type is one class that implements the
interface and a line in its registry, nothing else.
"""

from zope.interface import Attribute, Interface


class IAccessList(Interface):
    """
    The gateway's data-path gate: what reaches the uplink.  A packet gets
    through only if its source address is a live lease's I{and} it arrived
    where that lease lives, both given by one L{mnigs.system.admission.Admission}
    per lease: the lease's address with its tunnel interface, or, for a
    lease without a tunnel, with the mesh interface and the link-layer
    address it registered from.  Anything else gets nothing through.
    Changes are applied in batches; each call's Deferred fires once the
    kernel really has the change.
    """

    def install(admissions, replyPorts=(), strictInterfaces=(), routed6=()):
        """
        Replace whatever gate is there (left over by a crashed run, say) by
        one that admits exactly C{admissions} (an iterable of
        L{mnigs.system.admission.Admission}), atomically, so that clients already
        admitted see no gap.  Packets arriving on C{strictInterfaces} (the
        tunnels) must have a source routed back through the same interface
        (strict reverse-path filtering); what leaves the local UDP
        C{replyPorts} is routed by the tables (see
        L{IGatewayMethod.udpPorts}).  What is admitted leaves the uplink
        masqueraded, but for sources in the IPv6 networks C{routed6}
        (pools routed to this gateway).  Returns a Deferred.
        """

    def allow(admission):
        """
        Admit C{admission} (an L{mnigs.system.admission.Admission}).  Returns a
        Deferred that fires when it is in force.
        """

    def deny(admission):
        """
        Stop admitting C{admission}.  Returns a Deferred that fires when it
        is in force.  Denying something not admitted is not an error.
        """

    def counters():
        """
        The bytes each counted element of the gate matched so far: a
        Deferred firing with C{{(set name, element key): bytes}}
        (L{mnigs.system.nft.parseCounters}): per admitted address, what
        came back to it (C{clients4}/C{clients6}); per link-bound
        admission, what it sent (C{link4}/C{link6}).
        """

    def remove():
        """
        Tear the gate down entirely (on stop).  Returns a Deferred.
        """


class IGatewayMethod(Interface):
    """
    The gateway side of one connection method (forward, wireguard, ...).

    A method turns a lease into data-path access and takes it away again.
    It holds no lease bookkeeping of its own: the lease book is the truth,
    and after a restart the method is handed every live lease again.
    """

    name = Attribute("The method's type as it appears on the wire.")

    def offerEntry(localHost):
        """
        The method's entry in the offer (a dict with at least C{type}) as
        seen by a client that reached the server on C{localHost}, or C{None}
        if the method is not offered there.  Never holds secrets.
        """

    def tunnelPools():
        """
        The inner address pools the method's tunnels carry, as
        C{(ipaddress network, interface name)} pairs (empty for none).  The
        gateway routes each pool into its interface ahead of the main
        table (L{mnigs.server.poolroutes}): the mesh may announce pool
        addresses too.  Called once the method has started.
        """

    def udpPorts():
        """
        The local UDP ports the method's daemon answers its peers from (a
        tuple, empty for none).  The gateway routes what leaves them by its
        routing tables, not back out of the interface the peer's packet came
        in on (L{mnigs.system.nft.tableScript}): on a mesh the way back may differ.
        """

    def tunnelInterfaces():
        """
        The interfaces that carry only this method's tunnels (a tuple, empty
        for C{forward}, which shares the mesh interfaces): the gate drops
        what arrives there from a source not routed back the same way.
        """

    def admissions(lease):
        """
        Where C{lease}'s packets may come from: a tuple of the
        L{mnigs.system.admission.Admission}s that C{grant} allows and
        C{revoke} denies, one per source address of the lease (its
        C{address}, and its C{address6} when the method carries IPv6).
        Made from the lease alone (its config, and what C{allocate}
        recorded in C{lease.origin}), so that the gate installed after a
        restart admits the same.
        """

    def checkParams(params):
        """
        Validate the method-specific register params (a dict from the
        network) and return a normalised dict to keep in the lease.  Raises
        L{mnigs.protocol.RPCError} (-32602) on anything malformed.
        """

    def checkClient(clientHost, localHost):
        """
        Raise L{mnigs.protocol.RPCError} 1002 if this method cannot serve a
        client whose request came from C{clientHost} to C{localHost}.
        """

    def allocate(lease, others, localHost):
        """
        Choose what the lease needs on this gateway (an inner address, say),
        given C{others}, the other live leases of this method (an iterable,
        possibly a view of the lease book: iterate it, do not keep it), and
        return the lease's C{config} dict as sent to the client (the client reached
        the server on C{localHost}).  C{config["address"]} is always the
        source address the data path admits for this lease.  A method that
        binds the lease to where its request came from (forward: the
        interface and the link-layer address) records that in
        C{lease.origin}, which is stored with the lease.  Raises
        L{mnigs.protocol.RPCError} 1001 when a pool is exhausted.  Changes
        nothing but the lease (forward reads the neighbour table).
        """

    def start(leases):
        """
        Bring the method's data path up (spawn or adopt a daemon, create an
        interface) and grant every lease in C{leases}.  Returns a Deferred.
        """

    def grant(lease):
        """
        Give C{lease} access on the data path.  Returns a Deferred that fires
        once the access is in force.  A refusal the client should hear as
        such (1005 while the method's daemon is being relaunched) fails
        with an L{mnigs.protocol.RPCError}, which the registry answers as
        it is and logs as a warning; any other failure is a fault (-32603,
        logged as critical).
        """

    def revoke(lease):
        """
        Take C{lease}'s access away.  Returns a Deferred that fires once it
        is gone.  Revoking something already gone is not an error.
        """

    def unconfirmed():
        """
        The leases granted by this run whose tunnel never came up within
        the method's grace time (a WireGuard peer with no handshake): a
        Deferred list of lease objects (as granted), which the sweep ends
        early.  A method that cannot tell answers an empty list.
        """

    def traffic():
        """
        The bytes each live lease of this method carried so far, as its data
        path counts them: a Deferred firing with a dict
        C{{lease id: L{mnigs.server.traffic.Traffic}}} (bytes in, bytes out,
        last handshake).  Directions are the client's: I{in} went to the
        client, I{out} came from it.  A lease left out is not counted (a
        method that counts nothing answers an empty dict); counters may
        start again from zero when the method's daemon restarts.  Cheap
        enough to be called every few seconds.
        """

    def stop():
        """
        Tear down everything C{start} set up.  Returns a Deferred.
        """

    def leave():
        """
        The server is stopping but not going away (a restart, an upgrade):
        leave the data path for the next C{start} to adopt, so that no
        client is cut.  A method whose daemon cannot outlive the server
        stops it instead.  Returns a Deferred.
        """

    def describe():
        """
        A JSON-able dict for status output.
        """


class ILeaseStore(Interface):
    """
    Durable storage of the lease book: a crash at any instant leaves either
    the previous or the new contents, never a broken file.
    """

    def load():
        """
        Return the list of stored lease records (dicts); an empty list when
        nothing was stored yet.  Raises L{mnigs.system.statefile.StateFileCorrupt}
        after moving an unreadable file aside.
        """

    def save(records):
        """
        Durably replace the stored records by C{records} (a list of dicts).
        """

    def commit(changes, snapshot):
        """
        Durably apply C{changes}, a list of (lease id, record dict or
        C{None} for a lease that is gone), to what is stored.
        C{snapshot()} returns every record, as L{save} takes them, for when
        the store rewrites everything (compaction); a store may also simply
        C{save(snapshot())}.
        """


class IUplinkCheck(Interface):
    """
    One way of telling whether the gateway's own uplink works.
    """

    def check():
        """
        Return a Deferred firing with C{None} if the uplink looks fine, or a
        short human-readable reason string if it does not.
        """


class IRouteSource(Interface):
    """
    One view of the mesh's routing state (kernel tables, babeld, Yggdrasil,
    cjdns), yielding candidate gateway addresses.
    """

    name = Attribute("Short name used in config files and logs.")

    def candidates():
        """
        Return a Deferred firing with a list of
        L{mnigs.routing.candidates.Candidate} (address, distance, source),
        nearest first.
        """

    def watch(onChange):
        """
        Call C{onChange()} (no arguments) whenever the routes this source
        reports may have changed.  Returns an object with a C{stop()} method.
        """


class IClientMethod(Interface):
    """
    The client side of one connection method.
    """

    name = Attribute("The method's type as it appears on the wire.")

    slots = Attribute(
        "How many connections the method holds at once, each on a device of its own "
        "(L{mnigs.methods.slots}: the configured interface, then names derived from it). "
        "1: one at a time; the client then keeps no standby over this method.")

    def registerParams(offerEntry):
        """
        The method-specific params to send with C{gateway.register} for the
        given offer entry (a public key, say).
        """

    def checkAgainstOffer(offerEntry, config):
        """
        Raise ValueError, saying why, unless the lease C{config} (from a
        signed register answer) agrees with the signed offer's entry for
        this method: the same WireGuard key, CA or certificate fingerprint.
        A lease that disagrees is refused before anything is brought up.
        """

    def connect(step, lease, route=True):
        """
        Bring the tunnel (or plain forwarding) up for C{lease} (from the
        gateway of C{step}, a L{mnigs.client.plan.Step}) and install
        the default route in mnigs's own table
        (L{IClientConnection.activate}).  Returns a Deferred firing
        with an L{IClientConnection} or failing if the tunnel did not come
        up.  C{route} false (asked only of methods with more than one
        slot): the tunnel comes up on a free slot's device without the
        route, beside the connection that has it (a hot standby).
        """


class IClientConnection(Interface):
    """
    One session's tunnel (or plain forwarding), as L{IClientMethod.connect}
    returns it.
    """

    device = Attribute(
        "The name of the network device the session's traffic leaves by: the "
        "WireGuard, OpenVPN or cjdns tun interface, the SoftEther NIC, or for "
        "forward the mesh interface toward the gateway.  Health probes are "
        "bound to it, so no other route can answer or swallow them.")

    def whenLost():
        """
        A Deferred that fires with a reason (text) if the tunnel dies by
        itself; cancelled when the session ends first.  (A connection
        keeps the news in a L{mnigs.methods.loss.Loss}.)
        """

    def traffic():
        """
        C{(bytes in, bytes out)} the tunnel carried so far (in: to the
        client), for the quality history when the session ends, or C{None}
        when the method does not count them: OpenVPN's management interface
        counts them, WireGuard, SoftEther and cjdns read their tunnel
        device's counters from netlink, forward (which shares the mesh
        interface) counts nothing.  Asked before C{disconnect}.
        """

    def activate():
        """
        Put mnigs's default route through this connection: one route
        replaced (L{mnigs.client.routes.PolicyRouting.install}), taking it
        from whichever connection had it.  Raises if the device is gone.
        """

    def disconnect():
        """
        Take the tunnel down, and mnigs's route through it if it still
        has the route (L{mnigs.client.routes.PolicyRouting.withdraw} with
        its device: a connection whose route another took over leaves it
        alone).  Returns a Deferred.
        """

    def describe():
        """
        A JSON-able dict for status output.
        """


class IPinger(Interface):
    """
    Sends echo probes (ICMP, or anything else that answers or not within a
    deadline) for the client's gateway health monitor.
    """

    def ping(address, timeout):
        """
        Probe C{address} (text) once.  Returns a Deferred firing with the
        round-trip time in seconds, or C{None} when no answer came within
        C{timeout} seconds; it fails when the probe could not be sent.
        Cancelling the Deferred abandons the probe.
        """

    def close():
        """
        Abandon every outstanding probe (their Deferreds are cancelled) and
        release sockets.
        """


class IResolverBackend(Interface):
    """
    One way of putting a client's resolvers in force on this system and of
    taking them out again (L{mnigs.system.resolvers}): systemd-resolved,
    resolvconf, the resolv.conf file, a hook.  What it changes is said by
    a record (a JSON-able dict) made before anything changes, which the
    caller keeps in its state directory: a restart after a crash undoes it
    from there.
    """

    mode = Attribute("The backend's name, as C{dns.mode} and records spell it.")

    def plan(device, servers, previous):
        """
        The record of putting C{servers} (checked address texts) in force
        for the session whose traffic leaves by C{device}, replacing what
        the record C{previous} (or C{None}: the system's own) put there.
        Raises L{mnigs.system.resolvers.NotApplicable} saying why this
        backend cannot do it (no device of its own, say).  Touches nothing
        but what it must read (the file it will replace).
        """

    def put(record, previous):
        """
        Make the system as C{record} says, then undo what C{previous} (or
        C{None}) did that C{record} does not replace.  Deferred.
        """

    def undo(record):
        """
        Put back what C{record} replaced.  Deferred.
        """


# -- observers: what the metrics (mnigs.server.metrics, mnigs.client.metrics)
# -- are told by the parts they watch.  An observer never raises and never
# -- blocks: it only counts.

class IRPCObserver(Interface):
    """
    Told about every JSON-RPC call a L{mnigs.rpc.server.JSONRPCResource}
    answers.
    """

    def callStarted():
        """
        A call's body has arrived.  Returns a token (its start time) for
        L{callAnswered}.
        """

    def callAnswered(token, method, code):
        """
        The call started at C{token} was answered: C{method} is the method
        it resolved to (C{"gateway.register"}), or C{None} when it named
        none (a parse error, an unknown method); C{code} is 0 for a
        result, the JSON-RPC error code for an error, and C{None} when the
        caller hung up before the answer.
        """


class ILeaseObserver(Interface):
    """
    Told by the gateway's registry (L{mnigs.server.registry.Registry})
    about the end of every lease.
    """

    def leaseEnded(lease, end):
        """
        C{lease} (a L{mnigs.server.leases.Lease}) ended: C{end} is one of
        L{mnigs.server.registry.LEASE_ENDS} (C{"released"}, C{"expired"},
        C{"unconfirmed"}, C{"replaced"}, C{"drained"}).
        """


class IDiscoveryObserver(Interface):
    """
    Told by the client's discovery (L{mnigs.client.discovery.Discovery})
    about its scans and the offers it drops.
    """

    def scanned(seconds, candidates, gateways):
        """
        A scan ended after C{seconds}, having asked C{candidates} addresses
        and heard C{gateways} gateways (a cancelled scan is not reported).
        """

    def offerRejected(kind):
        """
        An answer did not verify as an offer; C{kind} is the
        L{mnigs.protocol.OfferRejected}'s C{kind}.
        """


class ITransitionObserver(Interface):
    """
    Told by a machine's trace (L{mnigs.client.machine.Trace}) about what
    it records.
    """

    def transitioned(transition):
        """
        The trace recorded C{transition} (a L{mnigs.client.machine.Transition}):
        a change of state, at once (its reason may follow), or a loop once
        it has a reason.
        """

    def explained(transition):
        """
        A recorded C{transition} got its reason (C{transition.reason}).
        """
