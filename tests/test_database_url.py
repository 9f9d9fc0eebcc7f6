"""The suite runs on whichever database DATABASE_URL names (production's path), else the embedded one.

`make test` runs this module twice: once on the embedded server (unix socket) and once with
DATABASE_URL pointing at a separate PostgreSQL listening on 127.0.0.1 (EXPECT_DATABASE_URL set).
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.db import connection


@pytest.mark.django_db
def test_connected_where_configured():
    expected = os.environ.get("EXPECT_DATABASE_URL")
    params = connection.get_connection_params()
    if expected:
        url = urlparse(expected)
        assert params["host"] == url.hostname
        assert int(params["port"]) == url.port
    else:
        # Embedded server: a unix socket directory, never a TCP host.
        assert params["host"].startswith("/"), params
        assert str(settings.EMBEDDED_DB_DIR) in settings.DATABASE_URL or params["host"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT inet_server_addr(), current_setting('server_version_num')::int")
        addr, version = cursor.fetchone()
    if expected:
        assert str(addr) == "127.0.0.1"
    else:
        assert addr is None  # unix socket
    assert version >= 150000


@pytest.mark.django_db
def test_pgvector_serves_cosine_distance():
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        (version,) = cursor.fetchone()
        cursor.execute("SELECT '[1,0,0]'::vector <=> '[0,1,0]'::vector, '[1,2,3]'::vector <=> '[2,4,6]'::vector")
        orthogonal, parallel = cursor.fetchone()
    assert tuple(int(p) for p in version.split(".")[:2]) >= (0, 7)
    assert orthogonal == pytest.approx(1.0)
    assert parallel == pytest.approx(0.0, abs=1e-6)
