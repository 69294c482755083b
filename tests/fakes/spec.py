"""Validate request bodies sent to the fake OpenAI against OpenAI's published OpenAPI spec.

Where the spec comes from, in order (``locate``):

1. the file named by ``$THREADLINE_OPENAI_SPEC`` (``THREADLINE_OPENAI_SPEC=bundled`` forces step 3);
2. a ``shared/openai/openapi.json`` found walking up from this file (the full spec lives beside the repo, design §2);
3. the pruned copy bundled with the repo, ``tests/fakes/openai_spec/openapi.pruned.json``: the same request schemas
   and everything they reference, verbatim, so a fresh clone with nothing beside it checks just as strictly
   (regenerate it with ``python -m tests.fakes.prune_spec``);
4. only if that is missing too, the SDK's own request TypedDicts through ``pydantic.TypeAdapter``, which catch
   wrong types but not unknown tools.

``spec.validator().source`` (also ``spec.SOURCE``) says which one is in use.

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
from typing import Any, Literal, Protocol, get_args, get_origin

import pydantic
import typing_extensions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

SPEC_ENV = "THREADLINE_OPENAI_SPEC"
SPEC_RELATIVE = Path("shared", "openai", "openapi.json")
BUNDLED = "bundled"  # the $THREADLINE_OPENAI_SPEC value that forces the bundled copy
BUNDLED_SPEC = Path(__file__).resolve().parent / "openai_spec" / "openapi.pruned.json"
BINARY = "<binary>"  # stands in for an uploaded file in a multipart body

# (method, path in the spec, body kind) → the request schema in #/components/schemas
REQUEST_SCHEMAS: dict[tuple[str, str, str], str] = {
    ("POST", "/responses", "json"): "CreateResponse",
    ("POST", "/chat/completions", "json"): "CreateChatCompletionRequest",
    ("POST", "/conversations", "json"): "CreateConversationBody",
    ("POST", "/conversations/{conversation_id}", "json"): "UpdateConversationBody",
    ("POST", "/files", "multipart"): "CreateFileRequest",
    ("POST", "/audio/transcriptions", "multipart"): "CreateTranscriptionRequest",
    ("POST", "/audio/speech", "json"): "CreateSpeechRequest",
    ("POST", "/images/generations", "json"): "CreateImageRequest",
    ("POST", "/images/edits", "multipart"): "CreateImageEditRequest",
    ("POST", "/images/edits", "json"): "EditImageBodyJsonParam",
    ("POST", "/vector_stores", "json"): "CreateVectorStoreRequest",
    ("POST", "/vector_stores/{vector_store_id}/files", "json"): "CreateVectorStoreFileRequest",
    ("POST", "/containers", "json"): "CreateContainerBody",
    ("POST", "/containers/{container_id}/files", "json"): "CreateContainerFileBody",
    ("POST", "/containers/{container_id}/files", "multipart"): "CreateContainerFileBody",
}

# The fallback: the SDK's params type for each schema ("module:attribute" under openai.types).
SDK_PARAMS: dict[str, str] = {
    "CreateResponse": "responses.response_create_params:ResponseCreateParams",
    "CreateChatCompletionRequest": "chat.completion_create_params:CompletionCreateParams",
    "CreateConversationBody": "conversations.conversation_create_params:ConversationCreateParams",
    "UpdateConversationBody": "conversations.conversation_update_params:ConversationUpdateParams",
    "CreateFileRequest": "file_create_params:FileCreateParams",
    "CreateTranscriptionRequest": "audio.transcription_create_params:TranscriptionCreateParams",
    "CreateSpeechRequest": "audio.speech_create_params:SpeechCreateParams",
    "CreateImageRequest": "image_generate_params:ImageGenerateParams",
    "CreateImageEditRequest": "image_edit_params:ImageEditParams",
    "EditImageBodyJsonParam": "image_edit_params:ImageEditParams",
    "CreateVectorStoreRequest": "vector_store_create_params:VectorStoreCreateParams",
    "CreateVectorStoreFileRequest": "vector_stores.file_create_params:FileCreateParams",
    "CreateContainerBody": "container_create_params:ContainerCreateParams",
    "CreateContainerFileBody": "containers.file_create_params:FileCreateParams",
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


Origin = Literal["setting", "shared", "bundled", "sdk"]


@dataclass(frozen=True, slots=True)
class SpecLocation:
    """Where the validator's schemas come from: a spec file (``path``) or, for ``origin="sdk"``, none."""

    origin: Origin
    path: Path | None = None

    def describe(self) -> str:
        """The validator's ``source`` for this location (the SDK fallback describes itself)."""
        if self.origin == "sdk":
            return "sdk:the openai SDK's request types (no spec file found, not even the bundled copy)"
        where = {
            "setting": f"from ${SPEC_ENV}",
            "shared": "the full spec, beside the repo",
            "bundled": "the pruned copy bundled with the repo",
        }
        return f"{'bundled' if self.origin == 'bundled' else 'spec'}:{self.path} ({where[self.origin]})"


def locate(setting: str | None = None, *, start: Path | None = None, bundled: Path = BUNDLED_SPEC) -> SpecLocation:
    """Where the spec is, in the order of the module docstring. ``setting`` stands for ``$THREADLINE_OPENAI_SPEC``
    (read when None; ``""`` means unset), ``start`` is where the walk up begins (this file's folder), ``bundled``
    the bundled copy. A setting that points nowhere is an error, and so is ``bundled`` when that copy is missing."""
    setting = os.environ.get(SPEC_ENV, "") if setting is None else setting
    if setting == BUNDLED:
        if not bundled.is_file():
            raise FileNotFoundError(f"{SPEC_ENV}={BUNDLED} but the bundled copy {bundled} is missing")
        return SpecLocation("bundled", bundled)
    full = _find_full(setting, start)
    if full is not None:
        return full
    return SpecLocation("bundled", bundled) if bundled.is_file() else SpecLocation("sdk")


def find_full_spec(setting: str | None = None, *, start: Path | None = None) -> Path | None:
    """The full spec (steps 1 and 2 of the lookup, never the bundled copy), or None. What the pruner reads."""
    setting = os.environ.get(SPEC_ENV, "") if setting is None else setting
    full = _find_full("" if setting == BUNDLED else setting, start)
    return full.path if full else None


def find_spec() -> Path | None:
    """The spec file the lookup picks (the bundled copy included), or None for the SDK fallback."""
    return locate().path


def _find_full(setting: str, start: Path | None) -> SpecLocation | None:
    if setting:
        path = Path(setting).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{SPEC_ENV}={setting} but no file is there")
        return SpecLocation("setting", path)
    folder = start.resolve() if start else Path(__file__).resolve().parent
    for parent in (folder, *folder.parents):
        candidate = parent / SPEC_RELATIVE
        if candidate.is_file():
            return SpecLocation("shared", candidate)
    return None


@functools.cache
def validator(setting: str | None = None) -> BodyValidator:
    """The process-wide validator for ``setting`` (see ``locate``; None reads ``$THREADLINE_OPENAI_SPEC``), built on
    first use because loading the spec takes a moment. ``validator("bundled")`` is the bundled copy's."""
    return open_validator(locate(setting))


def open_validator(location: SpecLocation) -> BodyValidator:
    """A new validator for ``location`` (uncached: prefer ``validator``)."""
    if location.path is None:
        return SdkValidator()
    return SpecValidator(location.path, location.describe())


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

    def __init__(self, path: Path, source: str | None = None) -> None:
        self.path = path
        self.source = source or f"spec:{path}"
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
        required = error.validator_value if isinstance(error.validator_value, list) else []
        missing = [key for key in required if key not in error.instance]
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

        self.source = f"sdk:openai {openai.__version__} request types (no spec file found, not even the bundled copy)"

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
