"""Patientdatalagen (2008:355) for users' tokens: care relationship, spärr, consent and emergency access.

Issue 4; the rules are in shared/docs/sweden.md and docs/architecture.md ("PDL access rules"). A
`Policy` is built per request for a token that names a user and an assignment (`Access.is_user`);
backend services and patient apps are not subject to it. It reads everything fresh (the user's care
unit and provider Organizations, the Consents in force, the user's emergency grants and lifts), so
nothing goes stale between requests. It gives:
- `search_filter`: one SQL condition on the resources row `r` that `search.plan` and
  `search.include` apply inside their queries, so paging, `_total` and includes see only what the
  user may see. Resources outside every patient compartment (`r.compartment IS NULL`) stay visible.
- `withheld_filter`: the rows the user would see but for a spärr (for the "blocked information
  exists" notice of a search);
- `check`: the instance check of read, vread, instance history, update, patch and delete (403 with
  the reason).

"Recorded at" (whose information a resource is; Patient resources are nobody's): the care unit and
provider stamped on it when a user wrote it (`meta.tag` RECORDED_AT_UNIT / RECORDED_AT_PROVIDER,
`interactions.writes.stamp_recorded_by`; a backend service may send these tags itself, for example
when importing another provider's records); and its own organisation references: an Encounter at its
`serviceProvider`, an EpisodeOfCare at its `managingOrganization`, any other resource at the
`serviceProvider` of the Encounter it names through a reference parameter called `encounter` or
`context`. A resource with none of these is the accessing provider's own information and can be
blocked by no one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import orjson

from ..errors import Category, FhirError, Issue
from ..fhir.definitions import patient_compartment_types
from ..fhir.instant import now_us
from ..interactions.context import RECORDED_AT_PROVIDER, RECORDED_AT_UNIT
from ..search.engine import matching_ids
from ..search.params import Registry
from ..search.plan import build, driven_by
from ..search.query import parse
from ..search.sql import exists_sql
from ..store import Repository, member
from ..store.hashing import h64
from ..sweden.identifiers import HSA_ID_ALIASES
from . import pdl_grants
from .pdl_consent import active_consents
from .store import WRITE_MARK_SQL

Filter = tuple[str, Sequence[Any]]
OPEN_ENCOUNTER = "planned,arrived,triaged,in-progress,onleave"
MAX_BOUND = 5000  # relationship sets up to this size are bound as parameters, larger ones stay subqueries
_DEPTH = 7  # alias suffix of the subqueries here, apart from the outer query's x0, t1, ...
T = TypeVar("T")


def denied(message: str, expression: str | None = None, code: str = "forbidden") -> FhirError:
    return FhirError(Category.FORBIDDEN, [Issue("error", code, message, expression)])


patient_types = patient_compartment_types  # the types of the R4 Patient compartment, and Patient


def _org_ids(repo: Repository, registry: Registry, pairs: list[tuple[str, str]]) -> list[str]:
    return matching_ids(repo, registry, parse(registry, "Organization", pairs), 1000)


def _refs(ids: Sequence[str]) -> list[int]:
    return [h64(f"Organization/{i}") for i in ids]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


@dataclass(frozen=True)
class Block:
    """A spärr: the patient's information recorded at these Organizations (ids and HSA-ids) is hidden."""

    patient: str
    orgs: frozenset[str]
    hsa_ids: frozenset[str]


def _hsa_ids(repo: Repository, org_ids: Sequence[str]) -> frozenset[str]:
    out = set()
    for oid in org_ids:
        v = repo.read("Organization", oid)
        body = orjson.loads(v.data) if v is not None and v.data is not None else {}
        out |= {str(i["value"]) for i in body.get("identifier") or []
                if isinstance(i, dict) and i.get("system") in HSA_ID_ALIASES and isinstance(i.get("value"), str)}
    return frozenset(out)


MAX_DECISIONS = 20_000  # instance decisions kept per policy (then forgotten all at once)


def _memoized(method: Callable[[Policy], T]) -> Callable[[Policy], T]:
    """A Policy method without arguments, computed once per Policy (kept in its `_memo`)."""
    name = method.__name__

    @functools.wraps(method)
    def once(self: Policy) -> T:
        try:
            return cast(T, self._memo[name])
        except KeyError:
            value = self._memo[name] = method(self)
            return value

    return once


@dataclass
class Policy:
    """What one user, under one assignment, may see of patient data right now."""

    user: str
    care_unit: str | None
    unit_orgs: list[str]  # Organization ids of the user's care unit
    provider_orgs: list[str]  # the care provider's Organization and every unit under it
    relationship: Filter  # SQL yielding the patients in a care relationship with the unit / the user
    emergency: frozenset[str]
    lifted: frozenset[str]
    blocks: list[Block]  # spärrar the user is outside of and has not lifted
    permitted: frozenset[str]  # patients whose consent lets this unit / provider read other providers' data
    registry: Registry
    provider_hsa: str | None = None
    dialect: str = "sqlite"  # the store's (store.member binds the relationship set per dialect)
    # whether any Encounter or EpisodeOfCare names an organisation outside the user's care provider: when
    # none does, only the recorded-at stamps can make a row another provider's (`_other_provider`)
    foreign_orgs: bool = True
    # SQLite: a write mark (history seq) such that no row written at or before it carries another provider's
    # recorded-at stamp, so only later rows need the stamp lookup; None: every row needs it
    stamps_before: int | None = None
    reachable_ids: frozenset[str] | None = None  # the relationship set, when at most MAX_BOUND patients
    notes: list[str] = field(default_factory=list)
    valid_until: int | None = None  # µs: the first instant the policy may change without a write (pdl_cache)
    # the SQL pieces below depend only on the fields above, which never change once built (pdl_cache builds
    # a new Policy instead): each is composed once per policy, not per request
    _memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # (type, id) -> (the store's write mark, the instance check's rows): see `check`
    _decisions: dict[tuple[str, str], tuple[int, list[tuple[Any, ...]]]] = field(
        default_factory=dict, repr=False, compare=False)

    # ----- building -----

    @classmethod
    def build(cls, repo: Repository, registry: Registry, access: Any, care_relationship_days: int) -> Policy:
        assert access.user_hsa_id is not None
        unit_orgs = _org_ids(repo, registry, [("identifier", access.care_unit)]) if access.care_unit else []
        provider = _org_ids(repo, registry, [("identifier", access.care_provider)]) if access.care_provider else []
        provider_orgs = list(dict.fromkeys([*provider, *unit_orgs, *(
            _org_ids(repo, registry, [("partof", ",".join(f"Organization/{p}" for p in provider))])
            if provider else [])]))
        now = now_us()
        grants = pdl_grants.current(repo, access.user_hsa_id, now // 1_000_000)
        bounds: list[int] = [*grants.bounds]
        mine = set(provider) | set(unit_orgs)  # a consent names the provider (all its units) or one unit
        blocks: list[Block] = []
        permitted: set[str] = set()
        for c in active_consents(repo, registry, now, bounds=bounds):
            if c.kind == "permit":
                if c.orgs & mine:
                    permitted.add(c.patient)
                continue
            blocked = set(c.orgs) | set(_org_ids(repo, registry, [
                ("partof", ",".join(f"Organization/{o}" for o in sorted(c.orgs)))]))
            if blocked & set(unit_orgs) or c.patient in grants.lifted:
                continue  # the user works inside the blocked unit / provider, or lifted the block
            blocks.append(Block(c.patient, frozenset(blocked), _hsa_ids(repo, sorted(blocked))))
        relationship, recent = _relationship(repo, registry, unit_orgs, access, care_relationship_days, now)
        bounds += _dropouts(repo, recent, care_relationship_days)
        rows = repo.fetch(f"SELECT DISTINCT z.compartment FROM ({relationship[0]}) z LIMIT {MAX_BOUND + 1}",
                          relationship[1])
        reachable = frozenset(str(r[0]) for r in rows) if len(rows) <= MAX_BOUND else None
        return cls(access.user_hsa_id, access.care_unit, unit_orgs, provider_orgs, relationship,
                   grants.emergency, grants.lifted, blocks, frozenset(permitted), registry, access.care_provider,
                   repo.dialect, _foreign_orgs(repo, registry, _refs(provider_orgs)),
                   _stamps_before(repo, registry, access.care_provider), reachable,
                   valid_until=min(bounds, default=None))

    # ----- "recorded at" -----

    def _tags(self, pairs: list[tuple[str, str]]) -> Filter:
        """Conditions on `r` from `_tag` criteria (the recorded-at stamps of users' writes)."""
        conds, params = [], []
        for node in parse(self.registry, None, pairs).criteria:
            sql, ps = exists_sql(node, "r", _DEPTH)
            conds.append(sql)
            params += ps
        return " AND ".join(conds), params

    def _recorded(self, cond: str, values: Sequence[Any], tags: Filter, orgs: bool = True) -> Filter:
        """Rows (other than Patients) recorded at an organisation: stamped with one of `tags`, or linked to
        one whose reference hash satisfies `y.ref {cond}` (see the module docstring); without `orgs`, only
        the stamps are looked at (no organisation reference can satisfy `cond`)."""
        tag_sql, tag_params = tags
        if not orgs:
            return f"(r.type <> 'Patient' AND ({tag_sql}))", list(tag_params)
        reg = self.registry
        sp = reg.get("Encounter", "service-provider")
        eoc = reg.get("EpisodeOfCare", "organization")
        assert sp is not None and eoc is not None
        links = sorted({p.id for t in patient_compartment_types() for p in reg.for_type(t)
                        if p.type == "reference" and p.code in ("encounter", "context") and t != "Encounter"})
        z = cond.replace("y.ref", "z.ref")
        plus = "+" if self.dialect == "sqlite" else ""
        sql = (f"((r.type = 'Encounter' AND EXISTS (SELECT 1 FROM idx_reference y WHERE y.res = r.pk AND y.param = ?"
               f" AND {cond})) OR (r.type = 'EpisodeOfCare' AND EXISTS (SELECT 1 FROM idx_reference y"
               f" WHERE y.res = r.pk AND y.param = ? AND {cond})) OR EXISTS (SELECT 1 FROM idx_reference w"
               # from this row's reference rows to the Encounters they name (CROSS JOIN keeps that order on
               # SQLite, which otherwise scanned every Encounter per row); `+w.param` makes SQLite seek the
               # row's reference rows once and test each, not seek once per link parameter (18 seeks)
               f" CROSS JOIN resources e WHERE e.ref = w.ref AND w.res = r.pk AND {plus}w.param IN ({_marks(links)})"
               f" AND e.type = 'Encounter' AND e.deleted = 0 AND EXISTS (SELECT 1 FROM idx_reference z"
               f" WHERE z.res = e.pk AND z.param = ? AND {z})))")
        return (f"(r.type <> 'Patient' AND ({sql} OR ({tag_sql})))",
                [sp.id, *values, eoc.id, *values, *links, sp.id, *values, *tag_params])

    @_memoized
    def _blocked(self) -> Filter:
        """Rows hidden by a spärr: the patient's information recorded at a blocked unit or provider."""
        parts, params = [], []
        for b in self.blocks:
            refs = _refs(sorted(b.orgs))
            codes = [f"{s}|{h}" for h in sorted(b.hsa_ids) for s in (RECORDED_AT_UNIT, RECORDED_AT_PROVIDER)]
            tags = self._tags([("_tag", ",".join(codes))]) if codes else ("1 = 0", [])
            cond, ps = self._recorded(f"y.ref IN ({_marks(refs)})", refs, tags)
            parts.append(f"(r.compartment = ? AND {cond})")
            params += [b.patient, *ps]
        return (" OR ".join(parts), params) if parts else ("", [])

    @_memoized
    def _other_provider(self) -> Filter:
        """Rows recorded by another care provider without the patient's consent or an emergency access."""
        refs = _refs(self.provider_orgs)
        stamped = [("_tag", f"{RECORDED_AT_PROVIDER}|")]
        if self.provider_hsa:
            stamped.append(("_tag:not", f"{RECORDED_AT_PROVIDER}|{self.provider_hsa}"))
        tags = self._tags(stamped)
        if self.stamps_before is not None:  # rows written since the policy was built may carry one
            tags = f"r.seq > ? AND {tags[0]}", [self.stamps_before, *tags[1]]
        # with no organisation of another provider named by any Encounter or EpisodeOfCare, the per-row walk
        # from each row to its Encounter's service provider (three index lookups) could never match; the
        # policy is rebuilt on any write of those types (pdl_cache), so this holds while the policy is used
        cond, ps = self._recorded(f"y.ref NOT IN ({_marks(refs)})" if refs else "y.ref IS NOT NULL", refs, tags,
                                  orgs=self.foreign_orgs)
        allowed = sorted(self.permitted | self.emergency)
        if allowed:
            return f"(r.compartment NOT IN ({_marks(allowed)}) AND {cond})", [*allowed, *ps]
        return cond, ps

    def _reach(self, portable: bool) -> Filter:
        """The patients the user may reach at all: a care relationship or an emergency access.

        The relationship set is read once per policy (`reachable_ids`) and, when small enough, bound as
        one set (`store.member`: a bound IN list of ~800 patients was rebuilt as a temporary index by
        SQLite on every statement); a larger one stays a subquery."""
        if self.reachable_ids is not None:
            return member.condition(self.dialect, "r.compartment", self.reachable_ids | self.emergency, self,
                                    portable)
        sql, ps = self.relationship
        em = sorted(self.emergency)
        if em:
            return f"(r.compartment IN ({sql}) OR r.compartment IN ({_marks(em)}))", [*ps, *em]
        return f"r.compartment IN ({sql})", ps

    @_memoized
    def _reachable(self) -> Filter:
        return self._reach(False)

    def _compose(self, reach: Filter) -> Filter:
        sql_reach, ps = reach
        other, ops = self._other_provider()
        sql = f"(r.compartment IS NULL OR ({sql_reach} AND NOT {other}"
        params = [*ps, *ops]
        blocked, bps = self._blocked()
        if blocked:
            sql += f" AND NOT ({blocked})"
            params += bps
        return sql + "))", tuple(params)  # a tuple: the memo is shared by every request of the policy

    # ----- what the request layer uses -----

    @_memoized
    def search_filter(self) -> Filter:
        """Valid while this policy lives (its relationship set may be bound by key: `store.member`)."""
        return self._compose(self._reachable())

    @_memoized
    def portable_search_filter(self) -> Filter:
        """The same condition with nothing of this process in it: for what is stored (Bulk Data jobs)."""
        return self._compose(self._reach(True))

    @_memoized
    def withheld_filter(self) -> Filter | None:
        """Rows the user would see but for a spärr; None when no spärr concerns the user."""
        blocked, bps = self._blocked()
        if not blocked:
            return None
        reach, ps = self._reachable()
        return f"(r.compartment IS NOT NULL AND {reach} AND ({blocked}))", (*ps, *bps)

    @_memoized
    def _instance_sql(self) -> tuple[str, list[Any], bool, frozenset[str] | None]:
        """The instance check's query: the row's patient and whether it is reachable, another provider's
        and (when a spärr concerns the user) blocked. A bound relationship set is tested in Python
        instead (the returned set): binding thousands of ids to look at one row cost a millisecond."""
        bound = self.reachable_ids | self.emergency if self.reachable_ids is not None else None
        reach, ps = ("1 = 1", ()) if bound is not None else self._reachable()
        other, ops = self._other_provider()
        blocked, bps = self._blocked()
        cols = f"r.compartment, CASE WHEN {reach} THEN 1 ELSE 0 END, CASE WHEN {other} THEN 1 ELSE 0 END"
        params: list[Any] = [*ps, *ops]
        if blocked:
            cols += f", CASE WHEN {blocked} THEN 1 ELSE 0 END"
            params += bps
        return f"SELECT {cols} FROM resources r WHERE r.type = ? AND r.id = ?", params, bool(blocked), bound

    def check(self, repo: Repository, type_: str, id_: str, expression: str | None = None,
              mark: int | None = None) -> None:
        """403 with the reason unless the user may see `type_/id_` (unknown resources pass: 404 later).

        `mark`, the store's write mark read with the token (`auth.store.token_state`), lets a SQLite store
        reuse this policy's decision on the same resource: the decision depends on the policy (rebuilt on
        every write it depends on) and on the resource's rows, which no write since the mark has changed.
        SQLite commits writes in `seq` order; PostgreSQL may not, so it always asks."""
        sql, params, blocked, bound = self._instance_sql()
        key = (type_, id_)
        cached = self._decisions.get(key) if mark is not None and repo.dialect == "sqlite" else None
        if cached is not None and cached[0] == mark:
            rows = cached[1]
        else:
            rows = repo.fetch(sql, [*params, type_, id_])
            if mark is not None and repo.dialect == "sqlite":
                if len(self._decisions) >= MAX_DECISIONS:
                    self._decisions.clear()
                self._decisions[key] = (mark, rows)
        if not rows or rows[0][0] is None:
            return
        patient, reachable, other_provider = rows[0][0], rows[0][1], rows[0][2]
        if bound is not None:
            reachable = patient in bound
        if not reachable:
            raise denied(f"PDL: Patient/{patient} has no care relationship with care unit {self.care_unit} "
                         "(no current encounter or episode of care there, and no care team of yours); "
                         f"in an emergency use POST Patient/{patient}/$emergency-access", expression)
        if blocked and rows[0][3]:
            raise denied(f"PDL: {type_}/{id_} is blocked (spärr) by Patient/{patient} for care unit "
                         f"{self.care_unit}; it can be lifted for at most 7 days with the patient's consent "
                         f"or in an emergency (POST Patient/{patient}/$lift-block)", expression, "suppressed")
        if other_provider:
            raise denied(f"PDL: {type_}/{id_} was recorded by another care provider; reading it needs "
                         f"Patient/{patient}'s consent (sammanhållen journalföring) or an emergency access", expression)


def _foreign_orgs(repo: Repository, registry: Registry, own: Sequence[int]) -> bool:
    """Whether any Encounter's service provider or EpisodeOfCare's managing organisation is a reference
    other than `own` (the provider's and its units' reference hashes): one index seek per gap between them."""
    conds, params = [], []
    bounds = sorted(set(own))
    for p in (registry.get("Encounter", "service-provider"), registry.get("EpisodeOfCare", "organization")):
        assert p is not None
        for lo, hi in zip([None, *bounds], [*bounds, None], strict=True):
            where, ps = "param = ?", [p.id]
            if lo is not None:
                where, ps = where + " AND ref > ?", [*ps, lo]
            if hi is not None:
                where, ps = where + " AND ref < ?", [*ps, hi]
            conds.append(f"EXISTS (SELECT 1 FROM idx_reference WHERE {where})")
            params += ps
    return bool(repo.fetch(f"SELECT {' OR '.join(conds)}", params)[0][0])


MAX_TAG_CODES = 2000  # distinct `_tag` codes looked through for another provider's stamp (then: assume one)


def _stamps_before(repo: Repository, registry: Registry, own: str | None) -> int | None:
    """SQLite: the store's write mark when no row written up to it carries a recorded-at-provider stamp of
    another provider than `own`; None when one does, on PostgreSQL (whose seq is not commit order), or when
    the store has more distinct tags than MAX_TAG_CODES. The mark is read first, so anything committed
    while the tags are looked through is after it. One statement: a skip scan over the distinct `_tag`
    codes (one index seek each), then one seek per code for the stamp's system."""
    tag = registry.get("Resource", "_tag")
    if repo.dialect != "sqlite" or tag is None:
        return None
    mark = int(repo.fetch(WRITE_MARK_SQL, ())[0][0])
    many, foreign = repo.fetch(
        "WITH RECURSIVE codes(c, n) AS (SELECT (SELECT min(code) FROM idx_token WHERE param = ?), 1"
        " UNION ALL SELECT (SELECT min(code) FROM idx_token WHERE param = ? AND code > c), n + 1 FROM codes"
        " WHERE c IS NOT NULL AND n <= ?)"
        " SELECT (SELECT count(*) FROM codes WHERE c IS NOT NULL) > ?, EXISTS (SELECT 1 FROM codes"
        " JOIN idx_token t ON t.param = ? AND t.code = codes.c AND t.system = ? WHERE codes.c IS NOT ?)",
        [tag.id, tag.id, MAX_TAG_CODES, MAX_TAG_CODES, tag.id, h64(RECORDED_AT_PROVIDER),
         h64(own) if own else None])[0]
    return None if many or foreign else mark


def _dropouts(repo: Repository, recent: list[Filter], days: int) -> list[int]:
    """When the first finished Encounter of the relationship falls out of the last `days` days (µs): the
    highest end of its date index rows plus `days`, two seconds early (the cutoff is whole seconds)."""
    out = []
    for sql, ps in recent:
        row = repo.fetch(sql, ps)
        if row and row[0][0] is not None:
            out.append(int(row[0][0]) + days * 86_400_000_000 - 2_000_000)
    return out


def _relationship(repo: Repository, registry: Registry, unit_orgs: list[str], access: Any, days: int,
                  now: int) -> tuple[Filter, list[Filter]]:
    """SQL selecting the patients with a care relationship to the user's unit (or to the user), and the
    queries giving the earliest end date of the finished Encounters that count (`_dropouts`).

    The Encounter parts are read whole from the open-status or recent-date index (`search.plan.driven_by`:
    the paging planner walked every Encounter when the unit's share was over its probe limits); the others
    are planned like a search (`search.plan.build`), from their most selective index."""
    cutoff = (datetime.fromtimestamp(now / 1_000_000, UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # (type, criteria, the criterion to start from or None for the search planner's choice): the open
    # statuses and the last N days are small parts of a region's Encounters, the unit's share is not
    queries: list[tuple[str, list[tuple[str, str]], int | None]] = []
    if unit_orgs:
        orgs = ",".join(f"Organization/{o}" for o in unit_orgs)
        places = [("service-provider", orgs)]
        locations = matching_ids(repo, registry, parse(registry, "Location", [("organization", orgs)]), 1000)
        if locations:
            places.append(("location", ",".join(f"Location/{i}" for i in locations)))
        for where in places:
            queries.append(("Encounter", [where, ("status", OPEN_ENCOUNTER)], 1))
            queries.append(("Encounter", [where, ("status", "finished"), ("date", f"ge{cutoff}")], 2))
        queries.append(("EpisodeOfCare", [("organization", orgs), ("status", "active")], None))
    members = [m for m in (access.fhir_user, access.practitioner_role) if m]
    if members:
        queries.append(("CareTeam", [("participant", ",".join(members)), ("status", "active")], None))
    parts, params = [], []
    recent: list[Filter] = []
    date = registry.get("Encounter", "date")
    for type_, pairs, by in queries:
        query = parse(registry, type_, pairs)
        assert not query.unknown, query.unknown
        if by is None:  # the search planner picks the most selective index to start from
            p = build(repo, registry, query)
            source, where_sql, ps = p.source, p.where, p.params
        else:  # read whole, so started from the index named even when its probe was over the page limit
            source, where_sql, ps = driven_by(repo, registry, query, by)
        # its alias r shadows the outer query's r inside this subquery
        parts.append(f"SELECT r.compartment FROM {source} WHERE {' AND '.join(where_sql)}")
        params += ps
        if ("status", "finished") in pairs and date is not None:
            recent.append((f"SELECT MIN(d.hi) FROM idx_date d WHERE d.param = ? AND d.res IN"
                           f" (SELECT r.pk FROM {source} WHERE {' AND '.join(where_sql)})", [date.id, *ps]))
    if not parts:
        return ("SELECT NULL WHERE 1 = 0", []), recent
    return (" UNION ".join(parts), params), recent
