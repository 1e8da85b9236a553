"""FHIR REST helpers for modules (https://hl7.org/fhir/R4/http.html): CRUD and search that return parsed
resources (dicts), search paging by the Bundle's `next` links, and the Subscription operations
`$status` and `$events` (https://hl7.org/fhir/uv/subscriptions-backport/operations.html).

`FhirClient` is synchronous, `AsyncFhirClient` the same for asyncio (the notification receiver uses it).
Both add a bearer token from `BackendAuth` and ask for a new one once when the server answers 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from .auth import BackendAuth

FHIR_JSON = "application/fhir+json"
Params = Mapping[str, str] | Sequence[tuple[str, str]] | None


class FhirClientError(Exception):
    """A non-2xx answer: `status`, and the OperationOutcome (or whatever body came back)."""

    def __init__(self, status: int, body: Any) -> None:
        issues = body.get("issue", []) if isinstance(body, dict) else []
        text = "; ".join(str(i.get("diagnostics", i.get("code", ""))) for i in issues) or str(body)[:300]
        super().__init__(f"{status}: {text}")
        self.status = status
        self.outcome = body


def _parse(r: httpx.Response) -> Any:
    try:
        body = r.json() if r.content else None
    except ValueError:
        body = r.text
    if r.status_code >= 300:
        raise FhirClientError(r.status_code, body)
    return body


def _query(params: Params) -> list[tuple[str, str | int | float | bool | None]] | None:
    if params is None:
        return None
    return list(params.items()) if isinstance(params, Mapping) else list(params)


def _next(bundle: Any) -> str | None:
    for link in bundle.get("link", []) if isinstance(bundle, dict) else []:
        if link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def resources(bundle: dict[str, Any], mode: str | None = "match") -> list[dict[str, Any]]:
    """The resources of a Bundle's entries (only `search.mode` = `mode` when given and present)."""
    out = []
    for e in bundle.get("entry", []):
        if "resource" not in e:
            continue
        if mode is not None and e.get("search", {}).get("mode", mode) != mode:
            continue
        out.append(e["resource"])
    return out


def _events_params(since: int | None, until: int | None, content: str | None) -> dict[str, str]:
    q = {}
    if since is not None:
        q["eventsSinceNumber"] = str(since)
    if until is not None:
        q["eventsUntilNumber"] = str(until)
    if content is not None:
        q["content"] = content
    return q


class _Base:
    def __init__(self, base_url: str, auth: BackendAuth | None) -> None:
        self.base = base_url.rstrip("/")
        self.auth = auth
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.base))

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base}/{path.lstrip('/')}"

    def _same_server(self, url: str) -> None:
        """Paging links must stay on this server: the token is never sent anywhere else."""
        if not url.startswith(self.origin + "/"):
            raise FhirClientError(0, f"refusing to follow a link off this server: {url}")


class FhirClient(_Base):
    """A synchronous FHIR client for one server; use as a context manager or call `close()`."""

    def __init__(self, base_url: str, auth: BackendAuth | None = None, http: httpx.Client | None = None,
                 timeout: float = 30.0) -> None:
        super().__init__(base_url, auth)
        self.http = http or httpx.Client(timeout=timeout)

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def discover(self) -> dict[str, Any]:
        """`.well-known/smart-configuration`; sets the token endpoint of `auth` when it has none."""
        conf: dict[str, Any] = _parse(self.http.get(self.url(".well-known/smart-configuration")))
        if self.auth is not None and self.auth.token_url is None:
            self.auth.token_url = str(conf["token_endpoint"])
        return conf

    def _headers(self, force: bool = False) -> dict[str, str]:
        h = {"Accept": FHIR_JSON}
        if self.auth is not None:
            if self.auth.token_url is None:
                self.discover()
            h["Authorization"] = f"Bearer {self.auth.get(self.http, force)}"
        return h

    def request(self, method: str, path: str, params: Params = None, json: Any = None,
                headers: Mapping[str, str] | None = None) -> Any:
        url = self.url(path)
        self._same_server(url)
        extra = {**({"Content-Type": FHIR_JSON} if json is not None else {}), **(headers or {})}
        query = _query(params)
        r = self.http.request(method, url, params=query, json=json, headers={**self._headers(), **extra})
        if r.status_code == 401 and self.auth is not None:
            r = self.http.request(method, url, params=query, json=json, headers={**self._headers(True), **extra})
        return _parse(r)

    def read(self, type_: str, id_: str) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", f"{type_}/{id_}")
        return body

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = self.request("POST", resource["resourceType"], json=resource,
                                            headers={"Prefer": "return=representation"})
        return body

    def update(self, resource: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = self.request("PUT", f"{resource['resourceType']}/{resource['id']}", json=resource,
                                            headers={"Prefer": "return=representation"})
        return body

    def delete(self, type_: str, id_: str) -> None:
        self.request("DELETE", f"{type_}/{id_}")

    def search(self, type_: str, params: Params = None) -> dict[str, Any]:
        """One page: the searchset Bundle."""
        body: dict[str, Any] = self.request("GET", type_, params=params)
        return body

    def pages(self, type_: str, params: Params = None) -> Iterator[dict[str, Any]]:
        """Every page of a search, following `next` links."""
        bundle = self.search(type_, params)
        while True:
            yield bundle
            link = _next(bundle)
            if link is None:
                return
            bundle = self.request("GET", link)

    def search_all(self, type_: str, params: Params = None) -> Iterator[dict[str, Any]]:
        """Every matching resource of every page (included resources left out)."""
        for bundle in self.pages(type_, params):
            yield from resources(bundle)

    def status(self, subscription_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", f"Subscription/{subscription_id}/$status")
        return body

    def events(self, subscription_id: str, since: int | None = None, until: int | None = None,
               content: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", f"Subscription/{subscription_id}/$events",
                                            params=_events_params(since, until, content))
        return body


class AsyncFhirClient(_Base):
    """`FhirClient` for asyncio."""

    def __init__(self, base_url: str, auth: BackendAuth | None = None, http: httpx.AsyncClient | None = None,
                 timeout: float = 30.0) -> None:
        super().__init__(base_url, auth)
        self.http = http or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> AsyncFhirClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def discover(self) -> dict[str, Any]:
        conf: dict[str, Any] = _parse(await self.http.get(self.url(".well-known/smart-configuration")))
        if self.auth is not None and self.auth.token_url is None:
            self.auth.token_url = str(conf["token_endpoint"])
        return conf

    async def _headers(self, force: bool = False) -> dict[str, str]:
        h = {"Accept": FHIR_JSON}
        if self.auth is not None:
            if self.auth.token_url is None:
                await self.discover()
            h["Authorization"] = f"Bearer {await self.auth.aget(self.http, force)}"
        return h

    async def request(self, method: str, path: str, params: Params = None, json: Any = None,
                      headers: Mapping[str, str] | None = None) -> Any:
        url = self.url(path)
        self._same_server(url)
        extra = {**({"Content-Type": FHIR_JSON} if json is not None else {}), **(headers or {})}
        query = _query(params)
        r = await self.http.request(method, url, params=query, json=json, headers={**await self._headers(), **extra})
        if r.status_code == 401 and self.auth is not None:
            r = await self.http.request(method, url, params=query, json=json,
                                        headers={**await self._headers(True), **extra})
        return _parse(r)

    async def read(self, type_: str, id_: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.request("GET", f"{type_}/{id_}")
        return body

    async def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = await self.request("POST", resource["resourceType"], json=resource,
                                                  headers={"Prefer": "return=representation"})
        return body

    async def search(self, type_: str, params: Params = None) -> dict[str, Any]:
        body: dict[str, Any] = await self.request("GET", type_, params=params)
        return body

    async def search_all(self, type_: str, params: Params = None) -> AsyncIterator[dict[str, Any]]:
        bundle = await self.search(type_, params)
        while True:
            for r in resources(bundle):
                yield r
            link = _next(bundle)
            if link is None:
                return
            bundle = await self.request("GET", link)

    async def events(self, subscription_id: str, since: int | None = None, until: int | None = None,
                     content: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = await self.request("GET", f"Subscription/{subscription_id}/$events",
                                                  params=_events_params(since, until, content))
        return body
