"""A boot storm: 1,000 guests crawl their whole tree at once, with zero errors.

Each guest is its own loopback address (127.1.x.y), so the server identifies it by the socket
peer as it would a VM. The server runs as ``configdrive serve`` in a subprocess (its own core);
the 1,000 crawlers share one event loop here. Checked: every request answered 200, none lost.
Its speed is bench/service_http.py's boot storm to measure; the timeout here stops a hung crawl.
"""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path

from configdrive.service.registry import Registry
from configdrive.service.store import open_store
from configdrive.service.testing import (
    CRAWL_PATHS,
    crawl_many,
    guest_spec,
    http_request,
    serve_process,
)

GUESTS = 1000
HANG_GUARD = 600.0  # seconds: a crawl this long has hung, whatever the machine's load


def test_thousand_guests_crawl_at_once(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * GUESTS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * GUESTS), hard))
    store_path = tmp_path / "md.db"
    registry = Registry(open_store(str(store_path)))
    began = time.perf_counter()
    for i in range(GUESTS):
        registry.register(guest_spec(i))
    registered = time.perf_counter() - began
    registry.store.close()
    settings = {"listen": ["127.0.0.1:0"], "admin_listen": None, "store": str(store_path),
                "access_log": "off", "burst": 300}  # fmt: skip
    with serve_process(tmp_path / "serve.json", settings) as served:
        assert http_request(served.port, "/healthz")[0] == 200
        result = asyncio.run(asyncio.wait_for(crawl_many(served.port, GUESTS), HANG_GUARD))
    print(
        f"\nboot storm: {GUESTS} guests x {len(CRAWL_PATHS)} requests = {result.requests} in "
        f"{result.seconds:.2f} s ({result.rate:.0f} req/s); registration {registered:.1f} s"
    )
    assert result.errors == [], result.errors[:10]
    assert result.requests == GUESTS * len(CRAWL_PATHS)
