"""Shared test fixtures: where the public test data lives, and skipping when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIG2DIG_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"

# Fast DDS reads its XML profile once per process, when the first participant is created: set it for the whole
# test session before any test initialises rclpy in-process, or later in-process participants miss the
# shared-memory segment that full-size best-effort frames need. Both names: Fast DDS 2.x and 3.x.
for _name in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
    os.environ.setdefault(_name, str(REPO / "config" / "fastdds_profile.xml"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (public LLVIP/MSRS/TNO/... pairs); tests using it skip on a clone without it."""
    if not (SHARED_DATA / "vif").is_dir():
        pytest.skip(f"public test data not found at {SHARED_DATA} (set DIG2DIG_SHARED to its parent)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """../shared/fixtures (reference shapes); skipped when absent."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.skip(f"shared fixtures not found at {path}")
    return path
