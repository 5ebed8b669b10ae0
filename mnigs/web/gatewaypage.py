"""
The gateway's status page: L{renderGatewayPage} turns the gateway's
status (C{Gateway.describe()}, the admin socket's C{status}) into a
whole HTML document.  Pure; a key that is missing shows as C{-}.
"""

from __future__ import annotations

from mnigs.web.html import ago, duration, facts, ident, num, page, section, size, table, text

#: What a state means for a client asking for a lease.
_AVAILABLE = {"serving": True}


def _overview(status: dict) -> str:
    state = status.get("state")
    available = _AVAILABLE.get(state, False)
    problem = status.get("uplink_problem")
    uplink = (f'<span class="bad">down: {text(problem)}</span>' if problem
              else '<span class="good">up</span>' if state in ("serving", "draining") else "-")
    pairs = [("State", f'<strong id="state">{text(state)}</strong>'),
             ("Takes new clients",
              '<span class="good">yes</span>' if available else '<span class="bad">no</span>'),
             ("Uplink", uplink),
             ("Uptime", duration(status.get("uptime_s"))),
             ("Clients", f'<span id="clients">{text(status.get("clients"))} / '
                         f'{text(status.get("max_clients"))}</span>'),
             ("Gateway id", text(status.get("gateway")))]
    if status.get("drain_timeout_in") is not None:
        pairs.append(("Drain ends in", duration(status["drain_timeout_in"])))
    return section("Gateway", facts(pairs, "overview"), "overview-section")


def _leases(status: dict) -> str:
    rows = []
    for lease in status.get("leases") or []:
        handshake = lease.get("last_handshake_ago")
        rows.append([text(lease.get("method")),
                     f'{text(lease.get("name"))}<br><span class="note">'
                     f'{ident(lease.get("client"))}</span>',
                     text(lease.get("host")), text(lease.get("address")),
                     num(duration(lease.get("age_s"))), num(duration(lease.get("expires_in"))),
                     num(size(lease.get("bytes_in"))), num(size(lease.get("bytes_out"))),
                     ago(handshake) if handshake is not None else "-",
                     f'<span class="note">{text(lease.get("id"))}</span>'])
    return section("Leases", table(
        ["Method", "Client", "Client address", "Inner address", "Age", "Expires in",
         "Bytes in", "Bytes out", "Last handshake", "Lease"], rows,
        "Every live lease; bytes as the gateway counts them (in: from the client).",
        tableId="leases"), "leases-section")


def _terms(status: dict) -> str:
    terms = status.get("terms")
    if not isinstance(terms, dict):
        return section("Terms", '<p class="note">-</p>', "terms")
    fee = terms.get("fee")
    feeText = ("none" if not fee else
               f'{text(fee.get("amount"))} {text(fee.get("currency"))} per '
               f'{text(fee.get("period"))}, to {text(fee.get("pay_to"))}'
               if isinstance(fee, dict) else text(fee))
    bandwidth = terms.get("bandwidth_kbps")
    bandwidthText = ("not limited" if not bandwidth else
                     f'{text(bandwidth.get("down"))} kbit/s down, {text(bandwidth.get("up"))} '
                     f'kbit/s up' if isinstance(bandwidth, dict) else text(bandwidth))
    pairs = [("Max clients", text(terms.get("max_clients"))),
             ("Lease time", duration(terms.get("lease_seconds"))),
             ("Fee", feeText), ("Bandwidth", bandwidthText),
             ("Contact", text(terms.get("contact"))), ("Notes", text(terms.get("notes")))]
    return section("Terms as offered", facts(pairs, "terms-table"), "terms")


def _methods(status: dict) -> str:
    methods = status.get("methods") or {}
    rows = []
    for name in sorted(methods):
        detail = methods[name]
        if isinstance(detail, dict):
            shown = "; ".join(f"{text(k)}: {text(v)}" for k, v in sorted(detail.items(), key=str)
                              if not isinstance(v, (dict, list)))
        else:
            shown = text(detail)
        rows.append([text(name), shown or "-"])
    return section("Methods", table(["Method", "Details"], rows, tableId="methods"), "methods-section")


def renderGatewayPage(status: dict) -> str:
    heading = f"mnigs gateway {text(status.get('name'))}: {text(status.get('state'))}"
    body = "\n".join([f"<header><h1>{heading}</h1></header>", "<main>",
                      _overview(status), _leases(status), _terms(status), _methods(status),
                      "</main>",
                      '<footer class="note">Read-only; reload for fresh figures. The same '
                      'as JSON: <a href="status.json">status.json</a>.</footer>'])
    return page(heading, body)
