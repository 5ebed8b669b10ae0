"""OpenVPN 2.6: management protocol, PKI and configuration for the openvpn method."""
