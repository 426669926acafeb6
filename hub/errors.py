"""The one exception tree of telehub; every error a client can see is made here.

Each class carries the API ``code`` and HTTP ``status`` of the contract (API.md §1), so REST responses
and WebSocket error frames are built in one place from the same objects::

    TelehubError                      500 internal_error
    ├── BadRequest                    400 bad_request
    │   └── ValidationFailed          400 validation_error   (details: {field: message})
    ├── Unauthenticated               401 unauthenticated
    │   └── InvalidCredentials        401 invalid_credentials
    ├── Forbidden                     403 forbidden
    ├── NotFound                      404 not_found           (also other tenants' resources)
    ├── MethodNotAllowed              405 method_not_allowed
    ├── Conflict                      409 conflict
    ├── Gone                          410 gone                (token_used, token_expired)
    ├── PayloadTooLarge               413 payload_too_large
    ├── UnsupportedMediaType          415 unsupported_media_type
    ├── RateLimited                   429 rate_limited        (retry_after seconds)
    └── Unavailable                   503 unavailable
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Gone",
    "InvalidCredentials",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "TelehubError",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
]


class TelehubError(Exception):
    """Root of every error telehub reports; ``code`` and ``status`` are the contract's."""

    status: int = 500
    default_code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        if status is not None:
            self.status = status
        self.message = message or self.default_message
        self.code = code or self.default_code
        self.details = details or {}
        super().__init__(self.message)

    def body(self, request_id: str) -> dict[str, Any]:
        """The error envelope of API.md §1."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "request_id": request_id}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class BadRequest(TelehubError):
    status = 400
    default_code = "bad_request"
    default_message = "the request is malformed"


class ValidationFailed(BadRequest):
    """A body or query failed validation; ``details`` maps each field to what is wrong with it."""

    default_code = "validation_error"
    default_message = "the request did not pass validation"

    def __init__(self, details: dict[str, Any], message: str | None = None) -> None:
        super().__init__(message, details=details)


class Unauthenticated(TelehubError):
    status = 401
    default_code = "unauthenticated"
    default_message = "a valid credential is required"


class InvalidCredentials(Unauthenticated):
    default_code = "invalid_credentials"
    default_message = "email or password is wrong"


class Forbidden(TelehubError):
    status = 403
    default_code = "forbidden"
    default_message = "your role does not allow this"


class NotFound(TelehubError):
    status = 404
    default_code = "not_found"
    default_message = "no such resource"


class MethodNotAllowed(TelehubError):
    status = 405
    default_code = "method_not_allowed"
    default_message = "this method is not allowed on this path"


class Conflict(TelehubError):
    status = 409
    default_code = "conflict"
    default_message = "the request conflicts with the current state"


class Gone(TelehubError):
    status = 410
    default_code = "gone"
    default_message = "the resource is no longer available"


class PayloadTooLarge(TelehubError):
    status = 413
    default_code = "payload_too_large"
    default_message = "the request body is too large"


class UnsupportedMediaType(TelehubError):
    status = 415
    default_code = "unsupported_media_type"
    default_message = "the body's content type is not supported here"


class RateLimited(TelehubError):
    status = 429
    default_code = "rate_limited"
    default_message = "too many requests; slow down"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class Unavailable(TelehubError):
    status = 503
    default_code = "unavailable"
    default_message = "the service is unavailable right now"
