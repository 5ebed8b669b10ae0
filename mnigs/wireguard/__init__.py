"""
WireGuard: the cross-platform UAPI and the C{wg} tool (L{uapi}), one
device with its supervised C{wireguard-go} or the kernel's (L{device}), and
launching C{wireguard-go} (L{daemon}).
"""
