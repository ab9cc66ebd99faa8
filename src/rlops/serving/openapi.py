"""The OpenAPI 3.1 document of the serving API, written by hand (served at ``/openapi.json``).

Hand-written rather than generated so it states what the handlers really
enforce (shapes, error codes, back-pressure), filled in with the served
policy's observation shape and action space.

>>> doc = openapi_document(obs_shape=(4,), n_actions=2, version="sha256:x")
>>> sorted(doc["paths"])[:2]
['/healthz', '/metrics']
"""

from __future__ import annotations

from typing import Any

ERROR_CODES = {
    400: "malformed_json: the body is not valid JSON (NaN/Infinity literals included)",
    401: "unauthorized: no 'Authorization: Bearer <token>' header (admin endpoints)",
    403: "forbidden: wrong admin token",
    404: "unknown_decision (feedback for a decision_id never logged), not_found",
    405: "method_not_allowed",
    413: "body_too_large: the body exceeds max_body_bytes",
    415: "unsupported_media_type: Content-Type must be application/json",
    422: (
        "invalid_type, missing_field, unknown_field, invalid_shape, invalid_dtype, "
        "non_finite, invalid_mask, no_eligible_action, too_many_rows"
    ),
    409: "conflict: the admin action needs a canary, shadow or fallback that is not configured",
    503: (
        "admin_log_unavailable (the admin log fails verification; nothing was changed), "
        "log_backpressure (decision-log queue full; retry after Retry-After seconds), "
        "policy_unavailable (the policy failed and no fallback_action is configured)"
    ),
}
"""HTTP status -> the ``error.code`` values it carries."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": ERROR_CODES[s],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for s in statuses
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ADMIN_FIELDS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "canary": (
        "Set the fraction of units on the canary (0 to 1); raising it after a rollback "
        "starts a new guardrail comparison",
        {"share": {"type": "number", "minimum": 0, "maximum": 1}},
        ["share"],
    ),
    "shadow": (
        "Enable or disable the shadow policy (optionally change its unit share)",
        {"enabled": {"type": "boolean"}, "share": {"type": "number", "minimum": 0, "maximum": 1}},
        ["enabled"],
    ),
    "rollback": ("Send every assigned unit back to production now", {}, []),
    "override": (
        "Pin one unit to production, the canary or the fallback action",
        {
            "unit_id": {"type": "string", "minLength": 1},
            "arm": {"type": "string", "enum": ["production", "canary", "fallback"]},
        },
        ["unit_id", "arm"],
    ),
    "clear-override": (
        "Remove one unit's override",
        {"unit_id": {"type": "string", "minLength": 1}},
        ["unit_id"],
    ),
    "kill-switch": (
        "Serve the fallback action to every unit without an override (on), or release it",
        {"on": {"type": "boolean"}},
        ["on"],
    ),
}


def _admin_paths() -> dict[str, Any]:
    """``/v1/admin/*``: bearer token, ``actor`` and ``reason`` on every change."""
    who = {
        "actor": {"type": "string", "minLength": 1, "maxLength": 1000},
        "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
    }
    paths: dict[str, Any] = {
        "/v1/admin/state": {
            "get": {
                "summary": "Routing, guardrail verdict and admin-log head",
                "security": [{"bearer": []}],
                "responses": {"200": _ok("the state", {"type": "object"}), **_errors(401, 403)},
            }
        }
    }
    for action, (summary, fields, required) in _ADMIN_FIELDS.items():
        schema = {
            "type": "object",
            "additionalProperties": False,
            "required": ["actor", "reason", *required],
            "properties": {**who, **fields},
        }
        paths[f"/v1/admin/{action}"] = {
            "post": {
                "summary": summary + " (appended to the admin log with actor and reason)",
                "security": [{"bearer": []}],
                "requestBody": _json_body(schema),
                "responses": {
                    "200": _ok("applied", _ref("AdminResult")),
                    **_errors(400, 401, 403, 409, 413, 415, 422, 503),
                },
            }
        }
    return paths


def openapi_document(
    *, obs_shape: tuple[int, ...], n_actions: int | None, version: str
) -> dict[str, Any]:
    """Build the document for a policy with ``obs_shape`` and ``n_actions`` (None: continuous)."""
    discrete = n_actions is not None
    observation: dict[str, Any] = {
        "type": "array",
        "description": (
            f"One observation of shape {list(obs_shape)} (nested arrays, or flattened), "
            "finite numbers"
        ),
    }
    act_request: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["observation", "unit_id"],
        "properties": {
            "observation": observation,
            "unit_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "episode_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "step": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0},
            "context": {
                "type": "object",
                "description": "logged with the decision (at most 64 levels deep)",
            },
        },
    }
    decision: dict[str, Any] = {
        "type": "object",
        "required": ["action", "propensity", "decision_id", "policy_version", "arm"],
        "properties": {
            "decision_id": {"type": "string"},
            "policy_version": {"type": "string"},
            "arm": {
                "type": "string",
                "enum": ["production", "canary", "override", "fallback"],
                "description": "who decided: the sticky canary split, an operator's "
                "override, or the fallback action (kill switch, policy error or timeout)",
            },
            "propensity": {
                "type": "number",
                "description": "probability of the returned action under the served distribution"
                + ("" if discrete else " (density exp(logp) when sampled; 1 when deterministic)"),
            },
        },
    }
    if discrete:
        act_request["properties"]["action_mask"] = {
            "type": "array",
            "items": {"type": "boolean"},
            "minItems": n_actions,
            "maxItems": n_actions,
            "description": "true = eligible; at least one true",
        }
        decision["properties"]["action"] = {"type": "integer"}
        decision["properties"]["action_distribution"] = {
            "type": "array",
            "items": {"type": "number"},
            "description": "the distribution the action was drawn from",
        }
    else:
        decision["properties"]["action"] = {"type": "array", "items": {"type": "number"}}
        decision["properties"]["logp"] = {"type": "number"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rlops policy server",
            "version": "1",
            "description": f"Decisions from policy {version}, each logged with its propensity.",
        },
        "paths": {
            "/v1/act": {
                "post": {
                    "summary": "Decide for one request or a batch",
                    "requestBody": _json_body({"oneOf": [_ref("ActRequest"), _ref("ActBatch")]}),
                    "responses": {
                        "200": _ok(
                            "the decision(s)", {"oneOf": [_ref("Decision"), _ref("Decisions")]}
                        ),
                        **_errors(400, 413, 415, 422, 503),
                    },
                }
            },
            "/v1/feedback": {
                "post": {
                    "summary": "Join a reward (and outcome metrics) to a logged decision",
                    "requestBody": _json_body(_ref("Feedback")),
                    "responses": {
                        "200": _ok(
                            "queued for the join",
                            {
                                "type": "object",
                                "properties": {
                                    "decision_id": {"type": "string"},
                                    "status": {"const": "accepted"},
                                },
                            },
                        ),
                        **_errors(400, 404, 413, 415, 422, 503),
                    },
                }
            },
            "/v1/policies": {
                "get": {
                    "summary": "Policies served, by arm",
                    "responses": {"200": _ok("the policies", {"type": "object"})},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": _ok("the process is up", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: policy loaded, batcher and decision-log writer running",
                    "responses": {
                        "200": _ok("ready", {"type": "object"}),
                        "503": _ok("not ready (starting, draining or log failing)", {}),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text exposition",
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            **_admin_paths(),
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _ok("OpenAPI 3.1", {"type": "object"})},
                }
            },
        },
        "components": {
            "schemas": {
                "ActRequest": act_request,
                "ActBatch": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["requests"],
                    "properties": {
                        "requests": {"type": "array", "items": _ref("ActRequest"), "minItems": 1}
                    },
                },
                "Decision": decision,
                "Decisions": {
                    "type": "object",
                    "properties": {"decisions": {"type": "array", "items": _ref("Decision")}},
                },
                "Feedback": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["decision_id", "reward"],
                    "properties": {
                        "decision_id": {"type": "string"},
                        "reward": {"type": "number"},
                        "metrics": {"type": "object", "description": "at most 64 levels deep"},
                        "reward_version": {"type": "string"},
                    },
                },
                "AdminResult": {
                    "type": "object",
                    "properties": {
                        "action": {"type": "string"},
                        "applied": {"type": "object"},
                        "routing": {"type": "object"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": ["string", "null"]},
                            },
                        }
                    },
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
