"""Alert rules and alerts (API.md §3): operators and admins write rules and acknowledge alerts, viewers read.

Another organization's rule or alert is 404; device keys reach none of these.
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.alerts.rules import MAX_RULES, OPS, SEVERITIES, TooManyRules
from hub.alerts.service import Alerts
from hub.alerts.store import STATUSES, public_alert
from hub.api.device_schemas import DEVICE_ID, DEVICE_TYPE, TYPE_MAX
from hub.api.http import JSONResponse, int_param, json_body, offset_page, page_params, require_role
from hub.api.idempotency import IDEMPOTENCY_KEY_PARAM, idempotent
from hub.api.schemas import NULLABLE_TIMESTAMP, TIMESTAMP, Schema, obj, offset_list
from hub.api.spec import Param, operation
from hub.api.validation import BodyReader
from hub.auth.principal import Role
from hub.errors import Conflict, NotFound, ValidationFailed
from hub.registry.devices import DEVICE_ID_PATTERN, DEVICE_TYPE_PATTERN
from hub.services import Services
from ingest.codec import NAME_PATTERN

__all__ = ["routes"]

NAME_MAX = 128
FOR_S_MAX = 86_400
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
RULE_FIELDS: dict[str, Schema] = {
    "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
    "metric": {"type": "string", "pattern": f"^{NAME_PATTERN.pattern}$"},
    "op": {"enum": list(OPS)},
    "threshold": {"type": "number"},
    "device_id": {**DEVICE_ID, "description": "only this device"},
    "device_type": {**DEVICE_TYPE, "description": "only devices of this type (neither: every device)"},
    "for_s": {"type": "integer", "minimum": 0, "maximum": FOR_S_MAX, "default": 0},
    "severity": {"enum": list(SEVERITIES)},
}
RULE_BODY = obj(RULE_FIELDS, required=["name", "metric", "op", "threshold", "severity"])
RULE = obj(
    {
        "id": {"type": "string", "examples": ["rul_5f2c0e4b9a1d7e3f"]},
        **RULE_FIELDS,
        "device_id": {**NULLABLE_STRING, "description": "only this device"},
        "device_type": {**NULLABLE_STRING, "description": "only devices of this type"},
        "created_at": TIMESTAMP,
    },
    required=[
        "id",
        "name",
        "metric",
        "op",
        "threshold",
        "device_id",
        "device_type",
        "for_s",
        "severity",
        "created_at",
    ],
    title="AlertRule",
)
ALERT = obj(
    {
        "id": {"type": "string", "examples": ["alr_5f2c0e4b9a1d7e3f1"]},
        "rule_id": {"type": "string"},
        "device_id": {"type": "string"},
        "metric": {"type": "string"},
        "value": {"type": "number", "description": "the sample at which the condition had held for for_s"},
        "severity": {"enum": list(SEVERITIES)},
        "status": {"enum": list(STATUSES)},
        "triggered_at": {**TIMESTAMP, "description": "that sample's ts"},
        "resolved_at": {**NULLABLE_TIMESTAMP, "description": "the first sample where it no longer held"},
        "acknowledged_at": NULLABLE_TIMESTAMP,
    },
    required=["id", "rule_id", "device_id", "metric", "value", "severity", "status", "triggered_at", "resolved_at"],
    title="Alert",
)
PAGE_QUERY = (
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}, "page size"),
    Param("offset", {"type": "integer", "minimum": 0, "default": 0}, "items to skip"),
)


def _alerts(request: Request) -> Alerts:
    alerts: Alerts = request.app.state.device_ingest.alerts
    return alerts


@operation(
    summary="Create an alert rule",
    tag="alerts",
    body=RULE_BODY,
    responses={201: RULE},
    headers=(IDEMPOTENCY_KEY_PARAM,),
    errors=(400, 403, 409, 413, 415),
    description=(
        "The condition `metric op threshold` on every raw sample of the rule's devices (`device_id`, "
        "`device_type`, or neither: all); the alert triggers once it has held for `for_s` seconds of sample "
        "time (0: the first sample) and resolves at the first sample where it does not. One open alert per "
        "rule and device. Applies to what is stored from about a second later on every process. "
        f"409 `too_many_alert_rules` past {MAX_RULES} rules."
    ),
)
async def create_rule(request: Request) -> Response:
    principal = require_role(request, Role.OPERATOR)
    alerts = _alerts(request)

    async def create() -> Response:
        reader = BodyReader(await json_body(request), allowed=RULE_FIELDS)
        name = reader.string("name", required=True, max_len=NAME_MAX)
        metric = reader.string("metric", required=True, max_len=64, pattern=NAME_PATTERN)
        op = reader.string("op", required=True, choices=OPS)
        severity = reader.string("severity", required=True, choices=SEVERITIES)
        device_id = reader.string("device_id", max_len=64, pattern=DEVICE_ID_PATTERN, nullable=True)
        device_type = reader.string("device_type", max_len=TYPE_MAX, pattern=DEVICE_TYPE_PATTERN, nullable=True)
        for_s = reader.integer("for_s", low=0, high=FOR_S_MAX, default=0)
        threshold = reader.body.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
            reader.errors["threshold"] = "is required, a number"
        if device_id is not None and device_type is not None:
            reader.errors["device_type"] = "give device_id or device_type, not both"
        elif device_id is not None and not await _device_exists(request, principal.org_id, device_id):
            reader.errors["device_id"] = "no device with this id in the organization"
        reader.finish()
        assert name and metric and op and severity and for_s is not None and isinstance(threshold, int | float)
        try:
            rule = await alerts.rules.create(
                principal.org_id,
                name=name,
                metric=metric,
                op=op,
                threshold=float(threshold),
                device_id=device_id,
                device_type=device_type,
                for_s=for_s,
                severity=severity,
            )
        except TooManyRules as exc:
            raise Conflict(str(exc), code="too_many_alert_rules") from None
        alerts.rules_changed(principal.org_id)
        return JSONResponse(rule, status_code=201)

    return await idempotent(request, principal, create)


async def _device_exists(request: Request, org_id: str, device_id: str) -> bool:
    services: Services = request.app.state.services
    try:
        await services.devices.get(org_id, device_id)
    except NotFound:
        return False
    return True


@operation(
    summary="List the organization's alert rules in creation order",
    tag="alerts",
    query=PAGE_QUERY,
    responses={200: offset_list(RULE)},
    errors=(400, 403),
)
async def list_rules(request: Request) -> JSONResponse:
    principal = require_role(request, Role.VIEWER)
    limit, offset = page_params(request)
    rules, total = await _alerts(request).rules.page(principal.org_id, limit=limit, offset=offset)
    return JSONResponse(offset_page(rules, total=total, limit=limit, offset=offset))


@operation(summary="An alert rule", tag="alerts", responses={200: RULE}, errors=(403, 404))
async def get_rule(request: Request) -> JSONResponse:
    principal = require_role(request, Role.VIEWER)
    rule_id: str = request.path_params["rule_id"]
    rule = await _alerts(request).rules.get(principal.org_id, rule_id)
    if rule is None:
        raise NotFound(f"no alert rule {rule_id}")
    return JSONResponse(rule)


@operation(
    summary="Delete an alert rule",
    tag="alerts",
    responses={204: None},
    errors=(403, 404),
    description="Its evaluation stops and its open alerts are resolved now (`alert.resolved`).",
)
async def delete_rule(request: Request) -> Response:
    principal = require_role(request, Role.OPERATOR)
    rule_id: str = request.path_params["rule_id"]
    alerts = _alerts(request)
    if await alerts.rules.delete(principal.org_id, rule_id) is None:
        raise NotFound(f"no alert rule {rule_id}")
    alerts.rules_changed(principal.org_id)
    return Response(status_code=204)


@operation(
    summary="The organization's alerts, newest first",
    tag="alerts",
    query=(Param("status", {"enum": list(STATUSES)}, "only alerts in this status"), *PAGE_QUERY),
    responses={200: offset_list(ALERT)},
    errors=(400, 403),
)
async def list_alerts(request: Request) -> JSONResponse:
    principal = require_role(request, Role.VIEWER)
    errors: dict[str, str] = {}
    limit = int_param(request, "limit", 50, 1, 100, errors)
    offset = int_param(request, "offset", 0, 0, 10**9, errors)
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        errors["status"] = f"must be one of {', '.join(STATUSES)}"
    if errors:
        raise ValidationFailed(errors)
    found, total = await _alerts(request).store.page(principal.org_id, status, limit=limit, offset=offset)
    return JSONResponse(offset_page([public_alert(f) for f in found], total=total, limit=limit, offset=offset))


@operation(summary="An alert", tag="alerts", responses={200: ALERT}, errors=(403, 404))
async def get_alert(request: Request) -> JSONResponse:
    principal = require_role(request, Role.VIEWER)
    alert_id: str = request.path_params["alert_id"]
    fields = await _alerts(request).store.get(principal.org_id, alert_id)
    if fields is None:
        raise NotFound(f"no alert {alert_id}")
    return JSONResponse(public_alert(fields))


@operation(
    summary="Acknowledge an alert",
    tag="alerts",
    responses={200: ALERT},
    errors=(403, 404, 409),
    description=(
        "An active alert becomes `acknowledged` (`alert.acknowledged`); it stays the rule's open alert for the "
        "device and is resolved as usual. Acknowledging it again changes nothing; a resolved alert is 409 "
        "`alert_resolved`."
    ),
)
async def acknowledge_alert(request: Request) -> JSONResponse:
    principal = require_role(request, Role.OPERATOR)
    alert_id: str = request.path_params["alert_id"]
    result = await _alerts(request).store.acknowledge(principal.org_id, alert_id)
    if result.status == "missing":
        raise NotFound(f"no alert {alert_id}")
    if result.status == "resolved":
        raise Conflict("the alert is resolved: only an open alert can be acknowledged", code="alert_resolved")
    return JSONResponse(public_alert(result.fields))


routes = [
    Route("/alert-rules", create_rule, methods=["POST"]),
    Route("/alert-rules", list_rules, methods=["GET"]),
    Route("/alert-rules/{rule_id}", get_rule, methods=["GET"]),
    Route("/alert-rules/{rule_id}", delete_rule, methods=["DELETE"]),
    Route("/alerts", list_alerts, methods=["GET"]),
    Route("/alerts/{alert_id}", get_alert, methods=["GET"]),
    Route("/alerts/{alert_id}/ack", acknowledge_alert, methods=["POST"]),
]
