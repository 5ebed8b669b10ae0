"""Tests of the openvpn method and its helpers."""
