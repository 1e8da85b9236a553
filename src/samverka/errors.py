"""The exception tree shared by every layer.

Layers below `api` raise these; `samverka.api.outcome` is the one place that turns them into an
OperationOutcome and an HTTP status (https://hl7.org/fhir/R4/operationoutcome.html). Each error has
a *category*; the category decides the status and the default issue code. Anything that is not a
`FhirError` is a bug and becomes a 500 with a logged traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Category(Enum):
    """What went wrong, independent of HTTP. Mapped to a status in `api.outcome`."""

    INVALID = "invalid"  # 400: malformed request or content
    UNPROCESSABLE = "unprocessable"  # 422: well-formed content that breaks the rules
    NOT_FOUND = "not-found"  # 404
    GONE = "gone"  # 410: deleted
    CONFLICT = "conflict"  # 409: version conflict without If-Match, duplicate ids
    PRECONDITION = "precondition"  # 412: If-Match mismatch, multiple conditional matches
    TOO_LARGE = "too-large"  # 413
    UNSUPPORTED = "unsupported"  # 405/501-style: not supported here
    UNSUPPORTED_MEDIA = "unsupported-media"  # 415
    NOT_ACCEPTABLE = "not-acceptable"  # 406
    FORBIDDEN = "forbidden"  # 403
    UNAUTHORIZED = "unauthorized"  # 401
    METHOD_NOT_ALLOWED = "method-not-allowed"  # 405
    BUSY = "busy"  # 503: the store could not take the lock in time


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, IssueType code, text and FHIRPath expression."""

    severity: str  # fatal | error | warning | information
    code: str  # an IssueType code: invalid, structure, required, value, not-found, ...
    diagnostics: str
    expression: str | None = None

    def to_fhir(self) -> dict[str, object]:
        out: dict[str, object] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = [self.expression]
        return out


_DEFAULT_CODE = {
    Category.INVALID: "invalid",
    Category.UNPROCESSABLE: "processing",
    Category.NOT_FOUND: "not-found",
    Category.GONE: "deleted",
    Category.CONFLICT: "conflict",
    Category.PRECONDITION: "conflict",
    Category.TOO_LARGE: "too-costly",
    Category.UNSUPPORTED: "not-supported",
    Category.UNSUPPORTED_MEDIA: "not-supported",
    Category.NOT_ACCEPTABLE: "not-supported",
    Category.FORBIDDEN: "forbidden",
    Category.UNAUTHORIZED: "login",
    Category.METHOD_NOT_ALLOWED: "not-supported",
    Category.BUSY: "transient",
}


STATUS = {
    Category.INVALID: 400,
    Category.UNPROCESSABLE: 422,
    Category.NOT_FOUND: 404,
    Category.GONE: 410,
    Category.CONFLICT: 409,
    Category.PRECONDITION: 412,
    Category.TOO_LARGE: 413,
    Category.UNSUPPORTED: 501,
    Category.UNSUPPORTED_MEDIA: 415,
    Category.NOT_ACCEPTABLE: 406,
    Category.FORBIDDEN: 403,
    Category.UNAUTHORIZED: 401,
    Category.METHOD_NOT_ALLOWED: 405,
    Category.BUSY: 503,
}


@dataclass
class FhirError(Exception):
    """An expected failure that the client can act on. Carries one or more issues."""

    category: Category
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues) or self.category.value

    @classmethod
    def of(
        cls,
        category: Category,
        diagnostics: str,
        expression: str | None = None,
        code: str | None = None,
        **headers: str,
    ) -> FhirError:
        issue = Issue("error", code or _DEFAULT_CODE[category], diagnostics, expression)
        return cls(category, [issue], dict(headers))


def invalid(diagnostics: str, expression: str | None = None, code: str = "invalid") -> FhirError:
    return FhirError.of(Category.INVALID, diagnostics, expression, code)


def not_found(diagnostics: str) -> FhirError:
    return FhirError.of(Category.NOT_FOUND, diagnostics)


def precondition(diagnostics: str) -> FhirError:
    return FhirError.of(Category.PRECONDITION, diagnostics)


def unprocessable(diagnostics: str, expression: str | None = None, code: str = "processing") -> FhirError:
    return FhirError.of(Category.UNPROCESSABLE, diagnostics, expression, code)


def to_outcome(exc: FhirError) -> tuple[int, dict[str, object]]:
    """The one mapping from an error to (HTTP status, OperationOutcome), used by the API and by batch."""
    outcome: dict[str, object] = {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in exc.issues]}
    return STATUS[exc.category], outcome
