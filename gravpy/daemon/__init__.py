"""gravd, the daemon that runs one node of the mesh: config, logging, monitoring, the entry point.

``gravd`` is ``gravpy.daemon.main:main``; ``python -m gravpy.daemon.main`` runs it too.
"""
