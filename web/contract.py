"""The API's contract: each route's input models, validated here, and its OpenAPI entry.

`@documented` parses a route's query string and body with the pydantic models it
names and hands the parsed models to the route; spectree builds the route's
OpenAPI entry from the very same models, so the document served at /openapi.json
cannot drift from what the API accepts. Validation stays ours (spectree's is
skipped) so that every refusal keeps the one error shape of `web.errors`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from flask import current_app, request
from pydantic import BaseModel, ValidationError
from spectree import Response, SecurityScheme, SpecTree
from spectree.models import InType, SecureType, SecuritySchemeData
from werkzeug.exceptions import RequestEntityTooLarge

from web.answers import Error
from web.errors import ApiError, from_validation

API_KEY_SCHEME = "apiKey"

spec = SpecTree(
    "flask",
    title="ticker service",
    description="Kite market-data subscriptions: HTTP requests in, ticks and events "
    "out on Redis.",
    version="1",
    annotations=False,
    mode="strict",
    validation_error_status=422,
    validation_error_model=Error,
    # Model names alone: the API's models are few and each name is unique.
    naming_strategy=lambda model: model.__name__,
    security_schemes=[
        SecurityScheme(
            name=API_KEY_SCHEME,
            data=SecuritySchemeData(type=SecureType.API_KEY, name="X-API-Key",
                                    field_in=InType.HEADER),
        )
    ],
)

# Answers every route can give: a body too large, a wrong method, a part down.
_ALWAYS = (405, 413, 503)


def documented(
    answers: Mapping[int, type[BaseModel] | None],
    *,
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (),
    writes: bool = False,
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Validate `query`/`body` into the route's keyword arguments, and document it.

    `answers` are the route's successful statuses and their models; `errors` the
    statuses it refuses with (all in the one error shape). `writes` marks a route
    that needs the API key when one is configured.
    """
    statuses: dict[str, Any] = {f"HTTP_{code}": model for code, model in answers.items()}
    refusals = set(errors) | set(_ALWAYS) | ({422} if query or body else set())
    if body:
        refusals.add(400)
    if writes:
        refusals.add(401)
    statuses.update({f"HTTP_{code}": Error for code in sorted(refusals - set(answers))})

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def validated(*args: Any, **kwargs: Any) -> Any:
            kwargs["query"] = query_args(query, body)
            if body is not None:
                kwargs["body"] = parse(body, json_body())
            elif request.content_length or request.get_data(cache=True):
                raise ApiError(
                    422, "unexpected_body",
                    f"{request.method} takes no body; send its parameters in the "
                    "query string", field="body")
            if query is None:
                del kwargs["query"]
            return view(*args, **kwargs)

        return spec.validate(
            query=query,
            json=body,
            resp=Response(**statuses),
            tags=tags,
            security={API_KEY_SCHEME: []} if writes else None,
            skip_validation=True,
        )(validated)

    return decorate


def query_args(model: type[BaseModel] | None, body: type[BaseModel] | None) -> Any:
    """The query string parsed by `model`; a refusal for what nobody would read.

    A parameter given twice, or given to a route that reads none, is refused
    rather than half-used: acting on the wrong requester is worse than a 422.
    """
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            raise ApiError(422, "invalid_field", f"{name}: given more than once; give it once",
                           field=name)
    if model is None:
        if request.args:
            name = next(iter(request.args))
            where = ("; send it in the JSON body"
                     if body is not None and name in body.model_fields else "")
            raise ApiError(422, "invalid_field",
                           f"{name}: this route takes no query parameters{where}",
                           field=name)
        return None
    return parse(model, request.args.to_dict())


def parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def json_body() -> Any:
    if not request.is_json:
        raise ApiError(400, "invalid_json",
                       "send the body as JSON with Content-Type: application/json")
    raw = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if len(raw) >= limit:
        # A chunked body carries no length to refuse up front: the server reads it up
        # to the limit and stops, so reaching the limit means it was too large.
        raise RequestEntityTooLarge(f"the body must be under {limit} bytes")
    try:
        body = json.loads(raw, object_pairs_hook=_refuse_repeated_keys)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        if "integer string conversion" in reason:
            # Python's own wording names an interpreter setting, not the input.
            reason = "a number has more digits than any field takes"
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {reason}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json",
                       f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refused if it names a key twice.

    Python's JSON reader would keep the last of them silently: a body saying two
    different tokens must not subscribe one of them at random.
    """
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ApiError(422, "invalid_field", f"{key}: given more than once; give it once",
                           field=key)
        found[key] = value
    return found
