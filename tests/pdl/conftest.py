"""PDL fixtures: the live app-launch server of tests/auth (region, logins, trusted issuer) on both backends."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "auth"))

from loginkit import launch_server

__all__ = ["launch_server"]
