"""Explicit configuration, built once by the CLI (or a test) and passed down; no global settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("samverka-data")
    database: str | None = None  # postgresql://... ; None means SQLite in data_dir
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 32 * 1024 * 1024
    max_bundle_entries: int = 10_000
    max_json_depth: int = 256
    default_page_size: int = 50
    max_page_size: int = 1000
    validate_writes: bool = True
    auth: bool = True  # SMART on FHIR bearer tokens required (samverka.auth); off only on loopback, for development
    # PostgreSQL: wait for the WAL flush of each read's audit record before answering (True), or commit it
    # asynchronously (False: durable against any crash of Samverka or PostgreSQL, lost only if the host itself
    # fails within ~0.2 s, the same guarantee as SQLite's WAL with synchronous=NORMAL). Writes always flush.
    audit_read_flush: bool = False
    public_url: str | None = None  # the origin clients use (https://fhir.example.se); None: from each request
    # external identity providers trusted for the JWT-bearer grant: "ISSUER=JWKS" (file or loopback URL)
    trusted_issuers: tuple[str, ...] = ()
    # topic-based subscriptions (samverka.events): delivery polling, the leader lease between worker
    # processes, the POST timeout, retry backoff (doubling from event_backoff up to event_backoff_max)
    # and how long failures may last before a subscription goes to status error (all in seconds)
    events: bool = True
    event_poll: float = 0.25
    event_lease: float = 10.0
    event_timeout: float = 30.0
    event_backoff: float = 1.0
    event_backoff_max: float = 300.0
    event_retry_period: float = 24 * 3600.0
    # the module view's error rate counts POSTs over two windows of this many seconds; outbox rows older
    # than event_retention seconds are pruned unless a subscription (or the NATS bridge) still needs them
    event_error_window: float = 3600.0
    event_retention: float = 7 * 24 * 3600.0
    # the optional NATS JetStream bridge (samverka.events.nats): a nats:// URL (None: the outbox alone)
    # and the stream its subjects samverka.events.> go to (created if missing)
    nats: str | None = None
    nats_stream: str = "SAMVERKA"
    # Patientdatalagen (auth.pdl): how long a finished encounter keeps a care relationship, and how long
    # an emergency access (nödåtkomst) lasts by default and at most
    care_relationship_days: int = 30
    # Bulk Data export (interactions.export): where the NDJSON files go (None: <data_dir>/exports; with several
    # hosts, a folder they share) and how long a finished job's files are kept (seconds)
    export_dir: Path | None = None
    export_retention: float = 24 * 3600.0
    emergency_access_hours: int = 4
    emergency_access_max_hours: int = 24

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted_issuers", tuple(self.trusted_issuers))  # JSON gives back a list

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/fhir"
