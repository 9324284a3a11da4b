"""Fixtures of the transport tests."""

from __future__ import annotations

import pytest
import trustme


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority of the test's own (trustme)."""
    return trustme.CA()
