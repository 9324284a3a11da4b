"""gravctl, the command line that talks to a running gravd (``gravpy.cli.main:main``)."""
