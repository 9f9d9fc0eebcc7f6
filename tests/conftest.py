"""Shared fixtures. Real PostgreSQL + pgvector (embedded unless DATABASE_URL is set), real Redis."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Uploaded files go to a throwaway folder, never into the developer's .data/."""
    settings.MEDIA_ROOT = tmp_path / "media"
