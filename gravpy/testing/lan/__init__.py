"""Several "LAN hosts" on one machine: network namespaces joined by veth pairs (root only), or
loopback ports, each running a real gravd and an agent app (``backends``, ``bed``, ``agent``).

Used by the LAN tests (tests/lan/) and by ``benchmarks/bench_lan.py``.
"""
