"""Print every mDNS packet seen on one interface, one JSON line each: an observer for the LAN bed.

Run inside a host of the bed (``ip netns exec <ns> python -m gravpy.testing.lan.mdns_watch 10.213.x.y``):
it joins 224.0.0.251 on the interface holding that address and prints ``{"ready": true}``, then
for each packet ``{"t": <CLOCK_MONOTONIC>, "src": <address>, "response": bool, "questions":
[[name, type]...], "answers": [[name, type, ttl]...]}`` (answers include the authority and
additional sections). Decoding is python-zeroconf's. Ends when killed.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

from zeroconf._protocol.incoming import DNSIncoming
from zeroconf.const import _TYPES

MDNS_GROUP, MDNS_PORT = "224.0.0.251", 5353


def watch(address: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", MDNS_PORT))
        membership = struct.pack("4s4s", socket.inet_aton(MDNS_GROUP), socket.inet_aton(address))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        print(json.dumps({"ready": True}), flush=True)
        while True:
            data, (src, _) = sock.recvfrom(9000)
            print(json.dumps(describe(data, src)), flush=True)


def describe(data: bytes, src: str) -> dict[str, object]:
    packet = DNSIncoming(data)
    return {
        "t": time.monotonic(),
        "src": src,
        "response": packet.is_response(),
        "questions": [[q.name, _TYPES.get(q.type, q.type)] for q in packet.questions],
        "answers": [[a.name, _TYPES.get(a.type, a.type), a.ttl] for a in packet.answers()],
    }


if __name__ == "__main__":
    watch(sys.argv[1])
