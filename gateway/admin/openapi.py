"""The admin API's OpenAPI 3.1 document, built in one place. The request-body schemas
here are the ones the handlers validate with (:mod:`gateway.admin.schema`), so the
document and the behaviour cannot drift apart. ``gateway/admin/openapi.json`` is this
document as committed, for readers and tools; a test checks it is current (regenerate
with ``python3 -c 'import sys, gateway.admin.openapi as o; sys.stdout.buffer.write(o.render())'
> gateway/admin/openapi.json``)."""

from __future__ import annotations

from typing import Any

import orjson

from ..events.model import DELIVERY_STATES, EVENT_TYPES
from ..keys.record import STATUSES

__all__ = ["BODIES", "document"]

Schema = dict[str, Any]

DURATION: Schema = {"type": "string", "pattern": r"^[0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h|d)$",
                    "description": "a duration: 90s, 5m, 12h, 30d", "examples": ["30d"]}
TIME: Schema = {"type": "string", "format": "date-time", "description": "RFC 3339"}
TEXT: Schema = {"type": "string", "maxLength": 200}
SCOPES: Schema = {"type": "array", "maxItems": 64, "items": {
    "type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9:._*-]{0,127}$"}}
RATE_LIMIT: Schema = {"type": ["object", "null"], "required": ["rps", "burst"],
                      "additionalProperties": False, "properties": {
                          "rps": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6},
                          "burst": {"type": "integer", "minimum": 1, "maximum": 1_000_000}}}
CIDRS: Schema = {"type": ["array", "null"], "maxItems": 64,
                 "items": {"type": "string", "maxLength": 64}}


def _body(required: list[str], **properties: Schema) -> Schema:
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": properties}


def _one_expiry(schema: Schema) -> Schema:
    """At most one of ``expires_in``, ``expires_at``, ``no_expiry``."""
    pairs = (("expires_in", "expires_at"), ("expires_in", "no_expiry"),
             ("expires_at", "no_expiry"))
    return {**schema, "not": {"anyOf": [{"required": list(p)} for p in pairs]}}


NO_EXPIRY: Schema = {"const": True, "description": "never expires (policy.allow_no_expiry)"}


BODIES: dict[str, Schema] = {
    "CreateKey": _one_expiry(_body(
        ["principal"], principal={**TEXT, "minLength": 1}, name=TEXT, scopes=SCOPES,
        expires_in=DURATION, expires_at=TIME, no_expiry=NO_EXPIRY, rate_limit=RATE_LIMIT,
        source_cidrs=CIDRS)),
    "UpdateKey": _body([], name=TEXT, scopes=SCOPES, rate_limit=RATE_LIMIT, source_cidrs=CIDRS),
    "RotateKey": _body([], grace=DURATION, expires_in=DURATION),
    "RenewKey": _one_expiry(_body([], expires_in=DURATION, expires_at=TIME,
                                  no_expiry=NO_EXPIRY)),
    "RevokeKey": _body([], reason={**TEXT, "minLength": 1}),
    "LeakReport": _body(["tokens"], tokens={"type": "array", "maxItems": 1000, "items": _body(
        ["token", "url"], token={"type": "string", "maxLength": 200,
                                 "description": "what the scanner found, as found"},
        url={"type": "string", "maxLength": 2000,
             "description": "where it was found (kept in the audit trail)"})}),
}

_NULL_TEXT: Schema = {"type": ["string", "null"]}
_NULL_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
KEY_RECORD: Schema = {
    "type": "object",
    "required": ["key_id", "principal", "name", "scopes", "status", "created_at",
                 "expires_at", "last_used_at", "revoked_at", "revoke_reason",
                 "issued_with_mfa", "created_by", "rate_limit", "source_cidrs",
                 "rotated_from", "rotated_to"],
    "properties": {
        "key_id": {"type": "string", "pattern": "^gwk_[0-9A-Za-z]{28}$"},
        "principal": {"type": "string"}, "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": list(STATUSES)},
        "created_at": TIME, "expires_at": _NULL_TIME, "last_used_at": _NULL_TIME,
        "revoked_at": _NULL_TIME, "revoke_reason": _NULL_TEXT,
        "issued_with_mfa": {"type": "boolean"}, "created_by": {"type": "string"},
        "rate_limit": {"type": ["object", "null"], "required": ["rps", "burst"],
                       "properties": {"rps": {"type": "number"}, "burst": {"type": "integer"}}},
        "source_cidrs": {"type": ["array", "null"], "items": {"type": "string"}},
        "rotated_from": _NULL_TEXT, "rotated_to": _NULL_TEXT,
    },
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _with(base: str, **extra: Schema) -> Schema:
    return {"allOf": [_ref(base), {"type": "object", "required": list(extra),
                                   "properties": extra}]}


SCHEMAS: dict[str, Schema] = {
    **BODIES,
    "Error": {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string"}, "message": {"type": "string"}}},
    "KeyRecord": KEY_RECORD,
    "IssuedKey": _with("KeyRecord", secret={"type": "string",
                                            "pattern": "^gws_[0-9A-Za-z]{49}$"}),
    "KeyDetail": _with("KeyRecord", requests_last_hour={"type": "integer", "minimum": 0}),
    "KeyPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": _ref("KeyRecord")}, "next_cursor": _NULL_TEXT}},
    "Activity": {"type": "object", "required": ["routes", "sources"], "properties": {
        "routes": {"type": "array", "items": {
            "type": "object", "required": ["route", "status", "count"], "properties": {
                "route": {"type": "string"}, "status": {"type": "integer"},
                "count": {"type": "integer"}}}},
        "sources": {"type": "array", "items": {
            "type": "object", "required": ["address", "count"], "properties": {
                "address": {"type": "string"}, "count": {"type": "integer"}}}}}},
    "AuditEntry": {"type": "object", "required": [
        "id", "at", "actor_key_id", "actor_principal", "action", "target", "source",
        "outcome", "details"], "properties": {
        "id": {"type": "integer"}, "at": TIME, "actor_key_id": _NULL_TEXT,
        "actor_principal": {"type": "string"}, "action": {"type": "string"},
        "target": _NULL_TEXT, "source": {"type": "string"},
        "outcome": {"enum": ["success", "failure"]}, "details": {"type": "object"}}},
    "AuditPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": _ref("AuditEntry")}, "next_cursor": _NULL_TEXT}},
    "MfaEnrolment": {"type": "object", "required": ["otpauth_uri"], "properties": {
        "otpauth_uri": {"type": "string", "pattern": "^otpauth://totp/"}}},
    "LeakResults": {"type": "object", "required": ["results"], "properties": {
        "results": {"type": "array", "items": {
            "type": "object", "required": ["index", "verdict"], "properties": {
                "index": {"type": "integer", "minimum": 0,
                          "description": "position in `tokens`, from 0"},
                "verdict": {"enum": ["revoked", "already_revoked", "not_ours"]}}}}}},
    "Event": {"type": "object", "required": [
        "id", "type", "target", "occurred_at", "status", "payload", "deliveries"],
        "properties": {
            "id": {"type": "string", "pattern": "^evt_[0-9a-f]{32}$",
                   "description": "stable: receivers de-duplicate on it (Gateway-Event-Id)"},
            "type": {"enum": list(EVENT_TYPES)},
            "target": {"type": "string", "description": "the key ID, or kek:N"},
            "occurred_at": TIME,
            "status": {"enum": list(DELIVERY_STATES), "description":
                       "failed: a delivery gave up; pending: one is due; delivered: all done"},
            "payload": {"type": "object", "description":
                        "`key`: the key record as this API shows it (never a secret)"},
            "deliveries": {"type": "array", "items": {
                "type": "object", "required": [
                    "webhook_id", "state", "attempts", "next_attempt_at", "last_status",
                    "last_error", "delivered_at"], "properties": {
                    "webhook_id": {"type": "string"}, "state": {"enum": list(DELIVERY_STATES)},
                    "attempts": {"type": "integer", "minimum": 0},
                    "next_attempt_at": _NULL_TIME,
                    "last_status": {"type": ["integer", "null"]},
                    "last_error": _NULL_TEXT, "delivered_at": _NULL_TIME}}}}},
    "EventPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": _ref("Event")}, "next_cursor": _NULL_TEXT}},
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string"}}},
}

ERRORS = {
    "400": "invalid_request: a body or parameter fails the schema; or a malformed signature",
    "401": "the signature does not verify, or the key is revoked, expired or inactive",
    "403": "scope_denied (the key lacks the call's scope, or a non-admin caller asks for "
           "admin scopes) or mfa_required",
    "404": "key_not_found, event_not_found, or route_not_found",
    "409": "key_limit_reached: the principal has max_active_keys_per_principal keys",
    "413": "body_too_large",
    "422": "policy_violation: lifetime or grace out of bounds, a state that forbids it",
    "503": "store_unavailable",
}


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


KEY_ID = {"name": "key_id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^gwk_[0-9A-Za-z]{28}$"},
          "description": "an access key ID (a malformed one is 400 invalid_request)"}
KEY_CURSOR = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,400}$",
              "description": "opaque; a made-up one is 400 invalid_request"}
LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
MFA = {"name": "Gateway-MFA-Code", "in": "header", "required": False,
       "schema": {"type": "string", "pattern": "^[0-9]{6}$"},
       "description": "TOTP code; required when policy.require_mfa_for_issuance is set"}


def _op(op_id: str, summary: str, scope: str, ok: str, schema: Schema, *,
        params: list[dict[str, Any]] | None = None, body: str | None = None,
        body_required: bool = False, codes: tuple[str, ...] = ("400", "401", "403", "503")) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id, "summary": summary,
        "description": f"Requires scope `{scope}` (or `admin`)." if ":" in scope
        else f"Requires {scope}.",
        "parameters": params or [],
        "responses": {ok: _json(schema, "success"),
                      **{c: _json(_ref("Error"), ERRORS[c]) for c in codes},
                      "default": _json(_ref("Error"), "any other refusal")},
    }
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {
            "schema": _ref(body)}}}
    return op


READ, WRITE = "admin:keys:read", "admin:keys:write"
FOUND = ("400", "401", "403", "404", "503")


def document() -> dict[str, Any]:
    key = [KEY_ID]
    paths: dict[str, Any] = {
        "/v1/keys": {
            "post": _op("createKey", "Create a key; the secret is in this answer only", WRITE,
                        "201", _ref("IssuedKey"), params=[MFA], body="CreateKey",
                        body_required=True,
                        codes=("400", "401", "403", "409", "413", "422", "503")),
            "get": _op("listKeys", "List keys, oldest first", READ, "200", _ref("KeyPage"),
                       params=[_query("principal", TEXT, "only this principal's keys"),
                               _query("status", {"enum": list(STATUSES)}, "only this status"),
                               _query("created_after", TIME, "created after this instant"),
                               _query("created_before", TIME, "created before this instant"),
                               _query("expires_before", TIME, "expiring before this instant"),
                               _query("unused_since", TIME,
                                      "not used (or, never used, not created) since"),
                               _query("limit", LIMIT, "page size"),
                               _query("cursor", KEY_CURSOR,
                                      "next_cursor of the previous page")]),
        },
        "/v1/keys/{key_id}": {
            "get": _op("getKey", "One key, with its request count over the last hour", READ,
                       "200", _ref("KeyDetail"), params=key, codes=FOUND),
            "patch": _op("updateKey", "Change name, scopes, rate limit or source CIDRs", WRITE,
                         "200", _ref("KeyRecord"), params=key, body="UpdateKey",
                         codes=(*FOUND, "413", "422")),
        },
        "/v1/keys/{key_id}/rotate": {"post": _op(
            "rotateKey", "A new key for the same principal; the old one keeps working for "
            "the grace period", WRITE, "201", _ref("IssuedKey"), params=[KEY_ID, MFA],
            body="RotateKey", codes=(*FOUND, "409", "413", "422"))},
        "/v1/keys/{key_id}/renew": {"post": _op(
            "renewKey", "A new expiry within policy", WRITE, "200", _ref("KeyRecord"),
            params=[KEY_ID, MFA], body="RenewKey", codes=(*FOUND, "413", "422"))},
        "/v1/keys/{key_id}/revoke": {"post": _op(
            "revokeKey", "Revoke now", WRITE, "200", _ref("KeyRecord"), params=key,
            body="RevokeKey", codes=(*FOUND, "413", "422"))},
        "/v1/keys/{key_id}/activity": {"get": _op(
            "keyActivity", "Request counts per route and status, and per source address",
            READ, "200", _ref("Activity"),
            params=[KEY_ID, _query("since", DURATION, "how far back (default 1h)")],
            codes=FOUND)},
        "/v1/audit": {"get": _op(
            "listAudit", "Audit entries, oldest first", "admin:audit:read", "200",
            _ref("AuditPage"),
            params=[_query("key_id", TEXT, "the target or the acting key"),
                    _query("actor", TEXT, "the acting principal or key ID"),
                    _query("action", TEXT, "e.g. key.revoked, admin.auth_failed"),
                    _query("since", TIME, "at or after this instant"),
                    _query("until", TIME, "before this instant"),
                    _query("limit", LIMIT, "page size"),
                    _query("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                           "next_cursor of the previous page")])},
        "/v1/events": {"get": _op(
            "listEvents", "Lifecycle events and their webhook delivery state, oldest first",
            "admin:audit:read", "200", _ref("EventPage"),
            params=[_query("type", {"enum": list(EVENT_TYPES)}, "only this event type"),
                    _query("target", TEXT, "only events about this key ID (or kek:N)"),
                    _query("status", {"enum": list(DELIVERY_STATES)}, "only this status"),
                    _query("since", TIME, "occurred at or after this instant"),
                    _query("limit", LIMIT, "page size"),
                    _query("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                           "next_cursor of the previous page")])},
        "/v1/events/{event_id}/redeliver": {"post": _op(
            "redeliverEvent", "Send an event again, now, to every webhook subscribed to its "
            "type (same event ID and body)", WRITE, "200", _ref("Event"),
            params=[{"name": "event_id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": "^evt_[0-9a-f]{32}$"},
                     "description": "an event ID (a malformed one is 400 invalid_request)"}],
            codes=FOUND)},
        "/v1/mfa/enroll": {"post": _op(
            "enrollMfa", "Enrol a TOTP seed for the calling key's principal (once)", WRITE,
            "201", _ref("MfaEnrolment"), codes=("400", "401", "403", "422", "503"))},
        "/v1/leaks": {"post": _op(
            "reportLeaks", "Report found tokens: each live secret's key is revoked at once "
            "(reason `leaked`); anything else, well-formed or not, is `not_ours`",
            "leaks:report", "200", _ref("LeakResults"), body="LeakReport", body_required=True,
            codes=("400", "401", "403", "413", "503"))},
        "/v1/whoami": {"get": _op("whoami", "The calling key", "any admin scope", "200",
                                  _ref("KeyRecord"))},
    }
    ready = "Readiness (503 only while draining)"
    for path, text in (("/healthz", "Liveness"), ("/readyz", ready)):
        paths[path] = {"get": {"operationId": path.strip("/"), "summary": text,
                               "description": "Unsigned.", "security": [],
                               "responses": {"200": _json(_ref("Health"), "serving"),
                                             "default": _json(_ref("Health"), "not ready")}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "HMAC gateway admin API", "version": "1",
                 "description": "Every /v1 call is signed like a data-plane request (AWS "
                 "SigV4 with service `gateway`, or RFC 9421 hmac-sha256) by a key holding "
                 "`admin` or the operation's finer scope, and follows the replay rule: send "
                 "a fresh signed `x-gateway-nonce` header. Errors are "
                 "`{\"error\": code, \"message\": sentence}`."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


def render() -> bytes:
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2) + b"\n"
