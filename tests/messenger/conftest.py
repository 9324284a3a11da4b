"""Fixtures for the messenger tests: a real nats-server (``nats_server``)."""

from gravpy.testing.nats import nats_server_fixture

__all__ = ["nats_server_fixture"]
