"""Unit-test fixtures."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.doubles import Health


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    Health.ready_after = 0.0
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield httpd.server_address[1]
    httpd.shutdown()
