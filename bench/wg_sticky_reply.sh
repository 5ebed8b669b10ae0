#!/bin/bash
# Reproduces the lost WireGuard handshake of issue 11 (see bench/churn.py):
# wireguard-go answers an initiation through the interface it arrived on
# (its sticky sockets pass that ifindex in IP_PKTINFO).  When the gateway's
# route back to the initiator leaves by another interface, the kernel
# treats the initiator as on-link on the arrival interface, ARPs for it
# there, gets no answer and drops the response; TCP and ICMP replies follow
# the routing table and get through.  Three namespaces:
#
#     cl a0 --- r0 r r1 --- b0 gw      (the initiation comes in on b0)
#                   r2 --- b1          ("asym": gw's route to cl is via b1)
#
#   bench/wg_sticky_reply.sh sym        # handshake completes
#   bench/wg_sticky_reply.sh asym       # no handshake; gw neighbour "10.1.1.1 dev b0 FAILED/INCOMPLETE"
#   bench/wg_sticky_reply.sh asym fix   # + a rule after main: oif b0 -> default via r on b0: handshake
#   bench/wg_sticky_reply.sh asym nft   # + mnigs's fix: a mark flip makes the kernel route the answer again
# Needs root, wireguard-go and wg.  Removes everything it made.
set -e
P=mnigs-stk$$
C=$P-cl; R=$P-r; G=$P-gw
cleanup() {
    for ns in $C $R $G; do ip netns pids $ns 2>/dev/null | xargs -r kill; done
    sleep 0.3
    for ns in $C $R $G; do ip netns del $ns 2>/dev/null || true; done
}
trap cleanup EXIT
for ns in $C $R $G; do
    ip netns add $ns; ip -n $ns link set lo up
    ip netns exec $ns sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
done
ip link add a0 netns $C type veth peer name r0 netns $R
ip link add r1 netns $R type veth peer name b0 netns $G
ip link add r2 netns $R type veth peer name b1 netns $G
ip -n $C addr add 10.1.1.1/24 dev a0; ip -n $R addr add 10.1.1.2/24 dev r0
ip -n $R addr add 10.3.3.1/24 dev r1; ip -n $G addr add 10.3.3.2/24 dev b0
ip -n $R addr add 10.4.4.1/24 dev r2; ip -n $G addr add 10.4.4.2/24 dev b1
ip -n $C link set a0 up
for i in r0 r1 r2; do ip -n $R link set $i up; done
for i in b0 b1; do ip -n $G link set $i up; done
ip -n $G addr add 10.9.9.9/32 dev lo
ip -n $C route add default via 10.1.1.2
ip -n $R route add 10.9.9.9/32 via 10.3.3.2 dev r1
if [ "$1" = asym ]; then
    ip -n $G route add 10.1.1.0/24 via 10.4.4.1 dev b1
else
    ip -n $G route add 10.1.1.0/24 via 10.3.3.1 dev b0
fi
if [ "$2" = nft ]; then
    ip netns exec $G nft -f - <<EOF
table inet stk {
	chain reroute { type route hook output priority mangle; policy accept; udp sport 51820 meta mark set meta mark ^ 0x4d000000; }
	chain restore { type filter hook postrouting priority mangle; policy accept; udp sport 51820 meta mark set meta mark ^ 0x4d000000; }
}
EOF
fi
if [ "$2" = fix ]; then
    ip -n $G rule add pref 40000 oif b0 lookup 200
    ip -n $G route add default via 10.3.3.1 dev b0 onlink table 200
fi
echo "gw's way back: $(ip netns exec $G ip route get 10.1.1.1 | head -1)"
kc=$(wg genkey); kg=$(wg genkey); ic=sk$$c; ig=sk$$g
ip netns exec $C wireguard-go $ic >/dev/null 2>&1
ip netns exec $G wireguard-go $ig >/dev/null 2>&1
ip netns exec $G wg set $ig private-key <(echo $kg) listen-port 51820 \
    peer $(echo $kc | wg pubkey) allowed-ips 100.64.0.2/32
ip netns exec $C wg set $ic private-key <(echo $kc) \
    peer $(echo $kg | wg pubkey) allowed-ips 0.0.0.0/0 endpoint 10.9.9.9:51820
ip -n $C link set $ic up; ip -n $G link set $ig up
ip -n $C addr add 100.64.0.2/32 dev $ic; ip -n $G addr add 100.64.0.1/24 dev $ig
ip netns exec $C ping -c1 -W1 -I $ic 100.64.0.1 >/dev/null 2>&1 || true
sleep 2
echo "client's latest handshake: $(ip netns exec $C wg show $ic latest-handshakes | cut -f2) (0: none)"
echo "gw's neighbours: $(ip -n $G neigh | tr '\n' ';')"
echo "a plain ping to gw: $(ip netns exec $C ping -c1 -W1 10.9.9.9 >/dev/null && echo answered || echo lost)"
