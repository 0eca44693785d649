"""``/openapi.json``: an OpenAPI 3.1 description generated from the pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from projections.decide import WHITESPACE, user_id_refused_ranges
from server.models import (
    AddCollaboratorBody,
    AppendSegmentBody,
    ChangeRoleBody,
    CollaboratorModel,
    CreateDraftBody,
    DraftStateModel,
    DraftSummaryModel,
    ErrorModel,
    EventModel,
    PassRingBody,
    RingStateModel,
    SegmentModel,
    UpdateDraftBody,
)
from server.params import MAX_NUMBER_CHARS, MAX_SEQ, digits_at_most
from server.settings import Settings

REF = "#/components/schemas/{model}"
_WHITESPACE_ESCAPES = "".join(f"\\u{ord(ch):04x}" for ch in sorted(WHITESPACE))


def _class_char(code: int) -> str:
    # BMP as \uXXXX (ECMA-262 and Python agree); above it the character itself, which both
    # read as one code point in a Unicode-mode pattern (ECMA-262's \u{…} is not Python's).
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


def _user_id_pattern() -> str:
    parts = []
    for low, high in user_id_refused_ranges():
        # Only Unicode scalar values: JSON text and URLs cannot carry a lone surrogate as a
        # character, and regex engines such as Rust's (jsonschema-rs) refuse a surrogate range.
        pieces = [(low, min(high, 0xD7FF)), (max(low, 0xE000), high)]
        for a, b in pieces:
            if a <= b:
                parts.append(_class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}")
    return "^[^" + "".join(parts) + "]+$"


USER_ID_PATTERN = _user_id_pattern()
"""Exactly projections.decide.valid_user_id's characters, generated from
:func:`projections.decide.user_id_refused_ranges` (whitespace, Cc, Cf, Cs, Co, noncharacters).
Code points above U+FFFF appear as themselves, so consumers must apply it in Unicode mode;
surrogates (never scalar values) are left out of the class."""
SEQ_DIGITS = digits_at_most(MAX_SEQ)
NOT_BLANK_PATTERN = "[^" + _WHITESPACE_ESCAPES + "]"
"""A title must contain a character outside projections.decide.WHITESPACE (the server's blank
rule), spelled as explicit \\uXXXX escapes: ECMA-262's and Python's ``\\s`` differ (U+001C–U+001F,
U+0085, U+FEFF), so neither is used. ``pattern`` is unanchored: one such character suffices."""


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _data_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["data"], "properties": {"data": schema}}


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The whole document, with the server's configured field limits."""
    comps: dict[str, Any] = {}
    ref = {
        m.__name__: _schema(m, comps)
        for m in (
            CreateDraftBody,
            UpdateDraftBody,
            AppendSegmentBody,
            PassRingBody,
            AddCollaboratorBody,
            ChangeRoleBody,
            DraftStateModel,
            DraftSummaryModel,
            EventModel,
            ErrorModel,
            SegmentModel,
            CollaboratorModel,
            RingStateModel,
        )
    }
    comps["CreateDraftBody"]["properties"]["title"]["maxLength"] = settings.title_max
    comps["CreateDraftBody"]["properties"]["title"]["pattern"] = NOT_BLANK_PATTERN
    comps["CreateDraftBody"]["properties"]["description"]["maxLength"] = settings.description_max
    comps["AppendSegmentBody"]["properties"]["content"]["maxLength"] = settings.content_max
    # What the handlers check beyond the models' types (found by schemathesis: a schema that
    # allows more than the server accepts makes valid-looking requests fail).
    user_id = {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.user_id_max,
        "pattern": USER_ID_PATTERN,
    }
    comps["PassRingBody"]["properties"]["to_user_id"] = dict(user_id)
    comps["AddCollaboratorBody"]["properties"]["user_id"] = dict(user_id)
    update = comps["UpdateDraftBody"]
    update["properties"]["title"]["anyOf"][0]["maxLength"] = settings.title_max
    update["properties"]["title"]["anyOf"][0]["pattern"] = NOT_BLANK_PATTERN
    update["properties"]["description"]["anyOf"][0]["maxLength"] = settings.description_max
    update["anyOf"] = [  # at least one of the fields, not null
        {"required": [name], "properties": {name: {"type": "string"}}} for name in ("title", "description")
    ]

    def error(desc: str) -> dict[str, Any]:
        return {"description": desc, "content": {"application/json": {"schema": ref["ErrorModel"]}}}

    def ok(desc: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": desc, "content": {"application/json": {"schema": _data_of(schema)}}}

    def body(model: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": ref[model]}}}

    common_errors = {
        "400": error("invalid JSON or parameter"),
        "401": error("missing or invalid credentials"),
        "403": error("not allowed"),
        "404": error("no such draft"),
        "409": error(
            "ring rules, already_collaborator, not_collaborator, cannot_remove_creator, "
            "draft_archived, conflict"
        ),
        "412": error("If-Match does not match the draft's head"),
        "413": error("body over 64 KiB"),
        "415": error("not application/json"),
        "422": error("invalid fields, or Idempotency-Key reused"),
        "429": error("rate limited"),
        "503": error("storage unavailable"),
    }
    draft_id = {"name": "draft_id", "in": "path", "required": True, "schema": {"type": "string"}}
    member_id = {"name": "user_id", "in": "path", "required": True, "schema": dict(user_id)}
    mutation_headers = [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"},
        },
        {
            "name": "If-Match",
            "in": "header",
            "required": False,
            # exactly what server.params.parse_entity_tag_seq accepts: "<seq>" or <seq>, 0..MAX_SEQ
            "schema": {"type": "string", "pattern": f'^("{SEQ_DIGITS}"|{SEQ_DIGITS})$'},
        },
    ]

    def seq_of(key: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": [key, "seq"],
            "properties": {key: schema, "seq": {"type": "integer"}},
        }

    presence_member = {
        "type": "object",
        "required": ["user_id", "state", "since"],
        "properties": {
            "user_id": {"type": "string"},
            "state": {"type": "object", "description": "at most 512 bytes as JSON"},
            "since": {"type": "string", "format": "date-time"},
        },
    }
    paths: dict[str, Any] = {
        "/v1/collab/drafts": {
            "post": {
                "operationId": "createDraft",
                "requestBody": body("CreateDraftBody"),
                "parameters": mutation_headers,
                "responses": {"201": ok("created", ref["DraftStateModel"]), **common_errors},
            },
            "get": {
                "operationId": "listDrafts",
                "parameters": [
                    {
                        "name": "archived",
                        "in": "query",
                        "description": "true: only archived drafts; false (default): only the others",
                        "schema": {"type": "boolean"},
                    }
                ],
                "responses": {
                    "200": ok("drafts", {"type": "array", "items": ref["DraftSummaryModel"]}),
                    **common_errors,
                },
            },
        },
        "/v1/collab/drafts/{draft_id}": {
            "get": {
                "operationId": "getDraft",
                "parameters": [
                    draft_id,
                    {
                        "name": "at_seq",
                        "in": "query",
                        "description": "the state as of this seq (1..head, else 400), cacheable forever",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SEQ},
                    },
                ],
                "responses": {
                    "200": ok("state", ref["DraftStateModel"]),
                    "304": {"description": "not modified"},
                    **common_errors,
                },
            },
            "patch": {
                "operationId": "updateDraft",
                "parameters": [draft_id, *mutation_headers],
                "requestBody": body("UpdateDraftBody"),
                "responses": {"200": ok("state", ref["DraftStateModel"]), **common_errors},
            },
        },
        "/v1/collab/drafts/{draft_id}/segments": {
            "post": {
                "operationId": "appendSegment",
                "parameters": [draft_id, *mutation_headers],
                "requestBody": body("AppendSegmentBody"),
                "responses": {"201": ok("appended", seq_of("segment", ref["SegmentModel"])), **common_errors},
            },
        },
        "/v1/collab/drafts/{draft_id}/ring/pass": {
            "post": {
                "operationId": "passRing",
                "parameters": [draft_id, *mutation_headers],
                "requestBody": body("PassRingBody"),
                "responses": {
                    "200": ok("passed", seq_of("ring_state", ref["RingStateModel"])),
                    **common_errors,
                },
            },
        },
        "/v1/collab/drafts/{draft_id}/collaborators": {
            "post": {
                "operationId": "addCollaborator",
                "parameters": [draft_id, *mutation_headers],
                "requestBody": body("AddCollaboratorBody"),
                "responses": {
                    "201": ok("added", seq_of("collaborator", ref["CollaboratorModel"])),
                    **common_errors,
                },
            },
        },
        "/v1/collab/drafts/{draft_id}/collaborators/{user_id}": {
            "delete": {
                "operationId": "removeCollaborator",
                "description": "the creator: anyone but themselves; a contributor: viewers and "
                "themselves; a viewer: themselves. A removed ring holder's ring returns to the creator.",
                "parameters": [draft_id, member_id, *mutation_headers],
                "responses": {
                    "200": ok("removed", seq_of("ring_state", ref["RingStateModel"])),
                    **common_errors,
                },
            },
            "patch": {
                "operationId": "changeRole",
                "description": "the creator only; the same role appends nothing",
                "parameters": [draft_id, member_id, *mutation_headers],
                "requestBody": body("ChangeRoleBody"),
                "responses": {
                    "200": ok("changed", seq_of("collaborator", ref["CollaboratorModel"])),
                    **common_errors,
                },
            },
        },
        "/v1/collab/drafts/{draft_id}/archive": {
            "post": {
                "operationId": "archiveDraft",
                "description": "the creator only; every other mutation is then 409 draft_archived",
                "parameters": [draft_id, *mutation_headers],
                "responses": {"200": ok("state", ref["DraftStateModel"]), **common_errors},
            },
        },
        "/v1/collab/drafts/{draft_id}/unarchive": {
            "post": {
                "operationId": "unarchiveDraft",
                "description": "the creator only",
                "parameters": [draft_id, *mutation_headers],
                "responses": {"200": ok("state", ref["DraftStateModel"]), **common_errors},
            },
        },
        "/v1/collab/drafts/{draft_id}/events": {
            "get": {
                "operationId": "listEvents",
                "parameters": [
                    draft_id,
                    {
                        "name": "since",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "number", "minimum": 0, "maximum": settings.longpoll_max},
                        "description": (
                            "seconds; written as ASCII digits with at most one decimal point and an "
                            "optional exponent (5, 0.5, .5, 5., 1e-05), at most "
                            f"{MAX_NUMBER_CHARS} characters; no sign, inf or nan"
                        ),
                    },
                ],
                "responses": {
                    "200": {
                        "description": "events",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["data", "head_seq"],
                                    "properties": {
                                        "data": {"type": "array", "items": ref["EventModel"]},
                                        "head_seq": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    },
                    **common_errors,
                },
            },
        },
        "/v1/me/events": {
            "get": {
                "operationId": "listMyEvents",
                "description": (
                    "the caller's own feed (docs/API.md): events of every draft that concern the "
                    "caller, oldest first, served from the feed index; resume with after = last_position"
                ),
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "description": "a global position (default 0)",
                        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "default 500",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "number", "minimum": 0, "maximum": settings.longpoll_max},
                        "description": "seconds to long-poll for a first entry, written as for /events",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "feed entries",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["data", "last_position"],
                                    "properties": {
                                        "data": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "required": ["position", "event"],
                                                "properties": {
                                                    "position": {"type": "integer", "minimum": 1},
                                                    "event": ref["EventModel"],
                                                },
                                            },
                                        },
                                        "last_position": {"type": "integer", "minimum": 0},
                                    },
                                }
                            }
                        },
                    },
                    "400": error("invalid parameter"),
                    "401": error("missing or invalid credentials"),
                    "503": error("storage unavailable"),
                },
            },
        },
        "/v1/collab/drafts/{draft_id}/presence": {
            "get": {
                "operationId": "getPresence",
                "description": (
                    "who is present on the draft now (ephemeral, never in the log); viewers only"
                ),
                "parameters": [draft_id],
                "responses": {
                    "200": ok("present users", {"type": "array", "items": presence_member}),
                    **{k: common_errors[k] for k in ("400", "401", "403", "404", "429", "503")},
                },
            },
        },
        "/healthz": {
            "get": {"operationId": "healthz", "security": [], "responses": {"200": {"description": "alive"}}}
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "security": [],
                "responses": {"200": {"description": "ready"}, "503": error("not ready")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    schemes: dict[str, Any] = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    if settings.dev_auth:
        schemes["devUser"] = {"type": "apiKey", "in": "header", "name": "X-User-Id"}
        security.append({"devUser": []})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ringlog",
            "version": "1",
            "description": "Event-sourced collaboration on shared drafts",
        },
        "paths": paths,
        "components": {"schemas": comps, "securitySchemes": schemes},
        "security": security,
    }
