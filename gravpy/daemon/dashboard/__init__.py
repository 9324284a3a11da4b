"""gravd's read-only web dashboard, served by the monitoring server.

``install_dashboard`` (``routes``) adds the page and its JSON to the monitor's application. The
parts: ``mesh`` gathers every node's ``gravd.info`` document (``/v1/mesh``), ``traffic`` keeps a
bounded ring of per-second rates (``/v1/traffic``), ``tail`` streams the messages matching a
pattern from a pod on gravd's own bus (``/v1/tail``), and ``access`` asks for a token when the
monitor listens beyond loopback. The page itself (``static/``) is plain HTML, CSS and JavaScript
shipped in the package: no CDN, no build step.
"""

from gravpy.daemon.dashboard.routes import Dashboard, install_dashboard

__all__ = ["Dashboard", "install_dashboard"]
