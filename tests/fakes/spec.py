"""Validate request bodies sent to the fake OpenAI against OpenAI's published OpenAPI spec.

Where the spec comes from, in order: the file named by ``$THREADLINE_OPENAI_SPEC``; a
``shared/openai/openapi.json`` found walking up from this file (the spec lives beside the repo, design §2);
otherwise the SDK's own request TypedDicts through ``pydantic.TypeAdapter``, which catch wrong types but not
unknown tools. ``spec.SOURCE`` says which one is in use.

How the spec is read (design §8): ``oneOf`` is read as ``anyOf`` (the spec uses it for discriminated unions
whose branches overlap), ``nullable: true`` is honoured, and every ``model`` property is an open string
because the spec's model enums lag the SDK. Top-level keys that neither the schema nor the SDK's params type
declares are reported, as the real API answers ``unknown_parameter``.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, get_args, get_origin

import pydantic
import typing_extensions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

SPEC_ENV = "THREADLINE_OPENAI_SPEC"
SPEC_RELATIVE = Path("shared", "openai", "openapi.json")
BINARY = "<binary>"  # stands in for an uploaded file in a multipart body

# (method, path in the spec, body kind) → the request schema in #/components/schemas
REQUEST_SCHEMAS: dict[tuple[str, str, str], str] = {
    ("POST", "/responses", "json"): "CreateResponse",
    ("POST", "/conversations", "json"): "CreateConversationBody",
    ("POST", "/conversations/{conversation_id}", "json"): "UpdateConversationBody",
    ("POST", "/files", "multipart"): "CreateFileRequest",
    ("POST", "/audio/transcriptions", "multipart"): "CreateTranscriptionRequest",
    ("POST", "/audio/speech", "json"): "CreateSpeechRequest",
    ("POST", "/images/generations", "json"): "CreateImageRequest",
    ("POST", "/images/edits", "multipart"): "CreateImageEditRequest",
    ("POST", "/images/edits", "json"): "EditImageBodyJsonParam",
}

# The fallback: the SDK's params type for each schema ("module:attribute" under openai.types).
SDK_PARAMS: dict[str, str] = {
    "CreateResponse": "responses.response_create_params:ResponseCreateParams",
    "CreateConversationBody": "conversations.conversation_create_params:ConversationCreateParams",
    "UpdateConversationBody": "conversations.conversation_update_params:ConversationUpdateParams",
    "CreateFileRequest": "file_create_params:FileCreateParams",
    "CreateTranscriptionRequest": "audio.transcription_create_params:TranscriptionCreateParams",
    "CreateSpeechRequest": "audio.speech_create_params:SpeechCreateParams",
    "CreateImageRequest": "image_generate_params:ImageGenerateParams",
    "CreateImageEditRequest": "image_edit_params:ImageEditParams",
    "EditImageBodyJsonParam": "image_edit_params:ImageEditParams",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One way a body disagrees with its schema; ``param`` is a JSON path like ``$.input[0].content``."""

    param: str
    message: str
    code: str = "invalid_value"

    def __str__(self) -> str:
        return f"{self.param}: {self.message}"


class BodyValidator(Protocol):
    source: str

    def check(self, schema: str, body: Any) -> list[Problem]:
        """Problems with a JSON body."""
        ...

    def check_form(self, schema: str, form: Mapping[str, Any]) -> list[Problem]:
        """Problems with a multipart body: text fields as strings, files as ``BINARY`` (lists for ``x[]``)."""
        ...


def schema_for(method: str, path: str, kind: str) -> str | None:
    """The request schema for a spec path (``/responses``, not ``/v1/responses``), if it has a body."""
    return REQUEST_SCHEMAS.get((method.upper(), path, kind))


def find_spec() -> Path | None:
    """The spec file to use, or None for the SDK fallback. A setting that points nowhere is an error."""
    configured = os.environ.get(SPEC_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{SPEC_ENV}={configured} but no file is there")
        return path
    for folder in Path(__file__).resolve().parents:
        candidate = folder / SPEC_RELATIVE
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def validator() -> BodyValidator:
    """The process-wide validator (built on first use; loading the spec takes a moment)."""
    path = find_spec()
    return SpecValidator(path) if path else SdkValidator()


def __getattr__(name: str) -> str:
    """``spec.SOURCE``: computed lazily so importing this module stays cheap."""
    if name == "SOURCE":
        return validator().source
    raise AttributeError(name)


# --- the spec -------------------------------------------------------------------------------------


@functools.cache
def load_components(path: Path) -> dict[str, Any]:
    """The spec's ``components``, rewritten for validation (see the module docstring)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    schemas = document["components"]["schemas"]
    return _rewrite(document["components"], schemas)


def _rewrite(node: Any, schemas: Mapping[str, Any]) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    out = {("anyOf" if key == "oneOf" else key): _rewrite(value, schemas) for key, value in node.items()}
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    properties = out.get("properties")
    if isinstance(properties, dict) and isinstance(properties.get("model"), dict):
        properties["model"] = _open_model_id(node["properties"]["model"], schemas)
    return out


def _open_model_id(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """A model id as any string (null too when the original allowed it)."""
    ref = schema.get("$ref")
    target = schemas.get(ref.rsplit("/", 1)[-1], {}) if isinstance(ref, str) else schema
    branches = target.get("anyOf", []) + schema.get("anyOf", [])
    nullable = schema.get("nullable") is True or any(b.get("type") == "null" for b in branches)
    return {"type": ["string", "null"]} if nullable else {"type": "string"}


class SpecValidator:
    """jsonschema Draft 2020-12 over the spec's components."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.source = f"spec:{path}"
        self._components = load_components(path)
        self._validators: dict[str, Draft202012Validator] = {}

    def _validator(self, schema: str) -> Draft202012Validator:
        if schema not in self._validators:
            root = {"$ref": f"#/components/schemas/{schema}", "components": self._components}
            self._validators[schema] = Draft202012Validator(root)
        return self._validators[schema]

    def known_keys(self, schema: str) -> set[str] | None:
        """Top-level properties the schema names (through ``$ref``/``allOf``) or the SDK's params type has (the
        spec lags the SDK); None if the schema is open."""
        names = _property_names(self._components["schemas"][schema], self._components["schemas"])
        return None if names is None else names | _sdk_keys(schema)

    def check(self, schema: str, body: Any) -> list[Problem]:
        problems = _unknown_keys(body, self.known_keys(schema))
        error = best_match(self._validator(schema).iter_errors(body))
        if error is not None:
            problems.append(_problem(error))
        return problems

    def check_form(self, schema: str, form: Mapping[str, Any]) -> list[Problem]:
        body = _coerce_form(self._validator(schema), dict(form))
        return self.check(schema, body)


def _property_names(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> set[str] | None:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _property_names(schemas[ref.rsplit("/", 1)[-1]], schemas)
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        more = _property_names(part, schemas)
        if more is None:
            return None
        names |= more
    if not names or schema.get("additionalProperties") not in (None, False):
        return None
    return names


def _unknown_keys(body: Any, known: set[str] | None) -> list[Problem]:
    if known is None or not isinstance(body, Mapping):
        return []
    return [
        Problem(f"$.{key}", f"Unknown parameter: '{key}'.", "unknown_parameter") for key in sorted(set(body) - known)
    ]


def _problem(error: ValidationError) -> Problem:
    message = error.message if len(error.message) <= 300 else error.message[:299] + "…"
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [key for key in error.validator_value if key not in error.instance]
        param = f"{error.json_path}.{missing[0]}" if missing else error.json_path
        return Problem(param, f"Missing required parameter: {message}", "missing_required_parameter")
    return Problem(error.json_path, message, "invalid_value")


def _coerce_form(validator: Draft202012Validator, body: dict[str, Any]) -> dict[str, Any]:
    """Multipart sends every value as text: turn ``"0.2"``/``"true"`` into JSON values where a field's
    schema rejects the string, so only real mismatches remain."""
    for _ in range(len(body)):
        changed = False
        for error in validator.iter_errors(body):
            key = error.path[0] if error.path else None
            if isinstance(key, str) and isinstance(body.get(key), str) and body[key] != BINARY:
                value = _json_scalar(body[key])
                if value is not None:
                    body[key] = value
                    changed = True
        if not changed:
            break
    return body


def _json_scalar(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return None if isinstance(value, str) else value


# --- the SDK fallback -----------------------------------------------------------------------------


class SdkValidator:
    """The openai SDK's request TypedDicts: wrong types and unknown top-level keys are caught; unknown tool
    types and misspelt nested keys are not. Multipart bodies only get key checks (file fields are typed
    ``IO[bytes]``, which pydantic can't build a schema for)."""

    def __init__(self) -> None:
        import openai

        self.source = f"sdk:openai {openai.__version__} request types (no spec file found)"

    def check(self, schema: str, body: Any) -> list[Problem]:
        params = _sdk_type(schema)
        problems = _key_problems(body, params)
        adapter = _adapter(params)
        if problems or adapter is None:
            return problems
        try:
            adapter.validate_python(body, strict=True)
        except pydantic.ValidationError as exc:
            deepest = max(exc.errors(), key=lambda error: len(error["loc"]))
            return [Problem(_loc_path(deepest["loc"]), deepest["msg"], "invalid_value")]
        return []

    def check_form(self, schema: str, form: Mapping[str, Any]) -> list[Problem]:
        return _key_problems(form, _sdk_type(schema))


def _sdk_type(schema: str) -> Any:
    module, _, name = SDK_PARAMS[schema].partition(":")
    return getattr(importlib.import_module(f"openai.types.{module}"), name)


@functools.cache
def _adapter(params: Any) -> pydantic.TypeAdapter[Any] | None:
    """None for params pydantic can't build (those with file fields)."""
    try:
        return pydantic.TypeAdapter(params)
    except pydantic.PydanticSchemaGenerationError:
        return None


@functools.cache
def _sdk_keys(schema: str) -> frozenset[str]:
    params = _sdk_type(schema)
    return frozenset().union(*(typing_extensions.get_type_hints(td) for td in _typed_dicts(params)))


def _typed_dicts(params: Any) -> Iterator[Any]:
    yield from (get_args(params) if get_origin(params) is not None else (params,))


def _key_problems(body: Any, params: Any) -> list[Problem]:
    if not isinstance(body, Mapping):
        return [Problem("$", "the body must be a JSON object")]
    members = [typing_extensions.get_type_hints(td, include_extras=True) for td in _typed_dicts(params)]
    known = set().union(*members)
    required = set.intersection(
        *({key for key, hint in hints.items() if get_origin(hint) is typing_extensions.Required} for hints in members)
    )
    problems = _unknown_keys(body, known)
    problems += [
        Problem(f"$.{key}", f"Missing required parameter: '{key}'.", "missing_required_parameter")
        for key in sorted(required - set(body))
    ]
    return problems


_PYDANTIC_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _loc_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a JSON path, without the union-member names pydantic inserts."""
    path = "$"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and not part[:1].isupper() and part not in _PYDANTIC_TAGS:
            path += f".{part}"
    return path
