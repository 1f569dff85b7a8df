"""The admin API: register, replace, list and remove instances (JSON, bearer-token protected).

It listens on its own address (``admin_listen``), never on the guest-facing one::

    POST   /v1/instances           {"spec": {…instance spec…}, "imds": "optional|required"}
                                   -> 201 {"uuid", "generation", "fixed_ips"}; 409 when that
                                   uuid is registered already (replacing is explicit: PUT)
    PUT    /v1/instances/{uuid}    same body, creates or replaces; the spec's uuid, if given,
                                   must match
    GET    /v1/instances           -> {"generation", "instances": [uuid, …]}
    GET    /v1/instances/{uuid}    -> {"uuid", "name", "imds", "generation", "fixed_ips"}
    DELETE /v1/instances/{uuid}    -> 204, or 404
    GET    /healthz                -> {"status": "ok", "instances", "generation"} (no token)

Specs are validated by :func:`configdrive.spec.instance_from_mapping` (through
:func:`~configdrive.service.registry.prepare_spec`); a bad one is a 400 naming the field.
Bodies are bounded before they are parsed (``ADMIN_MAX_BODY``, 413 above it) and after
(:data:`configdrive.spec.Limits.nesting` levels of nesting, 400 deeper), and nothing is
stored unless the whole registration is valid: an unexpected failure is a 500 that wrote
nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from configdrive.errors import ConfigDriveError, SpecError
from configdrive.service.registry import Conflict, Registry
from configdrive.service.views import InstanceView
from configdrive.spec import Limits, check_nesting

__all__ = ["make_admin_app"]

log = logging.getLogger("configdrive.service")

ADMIN_MAX_BODY = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, data: Any) -> web.Response:
    return web.json_response(data, status=status)


def _error(status: int, message: str, hint: str | None = None) -> web.Response:
    return _json(status, {"error": message, **({"hint": hint} if hint else {})})


def _describe(view: InstanceView) -> dict[str, Any]:
    return {
        "uuid": view.uuid,
        "name": view.instance.name,
        "imds": view.imds,
        "generation": view.generation,
        "fixed_ips": list(view.instance.fixed_ips),
    }


def make_admin_app(registry: Registry, token: str) -> web.Application:
    if not token:
        raise ConfigDriveError("the admin API needs a non-empty admin_token")
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            return _error(401, "missing or wrong admin token")
        return await handler(request)

    async def health(request: web.Request) -> web.Response:
        return _json(
            200, {"status": "ok", "instances": len(registry), "generation": registry.generation}
        )

    async def body(request: web.Request) -> tuple[dict[str, Any], str]:
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            raise SpecError("body", "is not valid JSON") from None
        except RecursionError:  # the C decoder's own depth guard (~1,000 levels)
            raise SpecError("body", f"is nested more than {Limits.nesting} levels deep") from None
        check_nesting(data, "body", Limits.nesting + 2)  # + {"spec": …}
        if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
            raise SpecError("spec", "the body must be a JSON object with a 'spec' object")
        unknown = sorted(set(data) - {"spec", "imds"})
        if unknown:
            raise SpecError(unknown[0], "unknown field (known: imds, spec)")
        imds = data.get("imds", "optional")
        if not isinstance(imds, str):
            raise SpecError("imds", "must be a string")
        return data["spec"], imds

    async def register(request: web.Request, uuid: str | None = None) -> web.Response:
        try:
            spec, imds = await body(request)
            if uuid is not None:
                if spec.get("uuid", uuid) != uuid:
                    raise SpecError("uuid", "differs from the uuid in the URL")
                spec = {**spec, "uuid": uuid}
            view = await asyncio.to_thread(registry.register, spec, imds, replace=uuid is not None)
        except SpecError as exc:
            return _error(400, str(exc), exc.hint)
        except Conflict as exc:
            return _error(409, str(exc), exc.hint)
        except web.HTTPException:  # aiohttp's own answers (413 for an oversized body)
            raise
        except Exception:  # noqa: BLE001 - a bug of ours; the registry wrote nothing
            log.exception("registration failed unexpectedly; nothing was stored")
            return _error(500, "internal error; nothing was stored")
        return _json(201 if uuid is None else 200, _describe(view))

    async def create(request: web.Request) -> web.Response:
        return await register(request)

    async def replace(request: web.Request) -> web.Response:
        return await register(request, request.match_info["uuid"])

    async def listing(request: web.Request) -> web.Response:
        return _json(200, {"generation": registry.generation, "instances": registry.uuids()})

    async def show(request: web.Request) -> web.Response:
        view = registry.by_uuid(request.match_info["uuid"])
        return _error(404, "no such instance") if view is None else _json(200, _describe(view))

    async def delete(request: web.Request) -> web.Response:
        found = await asyncio.to_thread(registry.unregister, request.match_info["uuid"])
        return web.Response(status=204) if found else _error(404, "no such instance")

    app = web.Application(middlewares=[auth], client_max_size=ADMIN_MAX_BODY)
    app.router.add_get("/healthz", health)
    app.router.add_get("/v1/instances", listing)
    app.router.add_post("/v1/instances", create)
    app.router.add_get("/v1/instances/{uuid}", show)
    app.router.add_put("/v1/instances/{uuid}", replace)
    app.router.add_delete("/v1/instances/{uuid}", delete)
    return app
