"""Search semantics fixtures: in-process interaction handlers on a real SQLite and a real PostgreSQL store.

Each `test_semantics_*` module seeds its own small, hand-made resources once per backend (`Seeded`),
then asserts the exact set of ids each query returns. Searches go through `interactions.search.search`
with `strict=True`, so an unknown parameter fails the test instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from samverka.api.server import build_services
from samverka.config import Settings
from support.semantics import Seeded


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """Services on a new, empty store: SQLite in a temp dir, or a fresh schema on the session PostgreSQL."""
    backend = str(request.param)
    database = request.getfixturevalue("pg_session").fresh() if backend == "postgresql" else None
    settings = Settings(data_dir=tmp_path_factory.mktemp(f"semantics-{backend}"), database=database,
                        validate_writes=False)
    svc = build_services(settings)
    try:
        yield Seeded(svc, backend)
    finally:
        svc.repo.close()
