"""Prune OpenAI's OpenAPI spec down to what the fake OpenAI validates, and check that the bundled copy is current.

Why: the full spec (``shared/openai/openapi.json``, over 3 MB) lives beside the repo, so a fresh clone with nothing
beside it would fall back to the SDK's TypedDicts, which miss unknown tools and misspelt nested types. The repo
therefore carries ``tests/fakes/openai_spec/openapi.pruned.json``: the request schemas in ``spec.REQUEST_SCHEMAS``
and every ``#/components/...`` they reach through ``$ref``, copied verbatim, so the spec check is exactly as strict
as with the full file. Beside them it keeps the spec's ``openapi`` and ``info`` (version, MIT licence) and, for each
route in ``REQUEST_SCHEMAS``, only the ``requestBody`` schema of the content types the fake reads — so tests can
still confirm that each route's body schema is the one ``REQUEST_SCHEMAS`` names. Nothing else.

Usage (from the repo root)::

    python -m tests.fakes.prune_spec            # rewrite the bundled copy from the full spec
    python -m tests.fakes.prune_spec --check    # exit 1 if the bundled copy is stale, 2 if no full spec is found

The full spec is found as ``tests.fakes.spec`` finds it (``$THREADLINE_OPENAI_SPEC``, then
``shared/openai/openapi.json`` walking up), never the bundled copy; ``--spec`` and ``--output`` override both ends.
The output is deterministic (sorted keys, one-space indent, trailing newline), so ``--check`` compares text.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.fakes import spec

CONTENT_TYPES = {"json": "application/json", "multipart": "multipart/form-data"}
REGENERATE = "python -m tests.fakes.prune_spec"


def prune(document: Mapping[str, Any], requests: Mapping[tuple[str, str, str], str] | None = None) -> dict[str, Any]:
    """The pruned document: ``openapi``, ``info``, the request bodies of ``requests`` (default
    ``spec.REQUEST_SCHEMAS``) under ``paths``, and the ``components`` they reach. Raises ``KeyError`` naming
    what the spec lacks."""
    requests = spec.REQUEST_SCHEMAS if requests is None else requests
    paths: dict[str, Any] = {}
    for method, path, kind in sorted(requests):
        try:
            body = document["paths"][path][method.lower()]["requestBody"]["content"][CONTENT_TYPES[kind]]["schema"]
        except KeyError:
            raise KeyError(f"the spec has no {CONTENT_TYPES[kind]} request body for {method} {path}") from None
        content = paths.setdefault(path, {}).setdefault(method.lower(), {"requestBody": {"content": {}}})
        content["requestBody"]["content"][CONTENT_TYPES[kind]] = {"schema": body}
    roots = [f"#/components/schemas/{name}" for name in sorted(set(requests.values()))]
    components: dict[str, dict[str, Any]] = {}
    pending = [*roots, *refs_in(paths)]
    while pending:
        section, name = _component(pending.pop())
        if name in components.get(section, {}):
            continue
        try:
            node = document["components"][section][name]
        except KeyError:
            raise KeyError(f"the spec has no #/components/{section}/{name}") from None
        components.setdefault(section, {})[name] = node
        pending.extend(refs_in(node))
    return {"openapi": document["openapi"], "info": document["info"], "paths": paths, "components": components}


def refs_in(node: Any) -> Iterator[str]:
    """Every ``$ref`` string under ``node``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def _component(ref: str) -> tuple[str, str]:
    """``#/components/<section>/<name>[/...]`` → (section, name), JSON-pointer escapes undone."""
    parts = [part.replace("~1", "/").replace("~0", "~") for part in ref.split("/")]
    if len(parts) < 4 or parts[:2] != ["#", "components"]:
        raise ValueError(f"unsupported $ref {ref!r}: only #/components/... is followed")
    return parts[2], parts[3]


def dangling_refs(document: Mapping[str, Any]) -> list[str]:
    """The ``$ref``s in ``document`` that point at nothing inside it (empty for a self-contained copy)."""
    missing = set()
    for ref in refs_in(document):
        try:
            section, name = _component(ref)
        except ValueError:
            missing.add(ref)
            continue
        if name not in document.get("components", {}).get(section, {}):
            missing.add(ref)
    return sorted(missing)


def render(document: Mapping[str, Any]) -> str:
    """The canonical text: sorted keys, one-space indent, UTF-8 as is, trailing newline."""
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def pruned_text(full_spec: Path) -> str:
    """The bundled copy's text as it should be for ``full_spec``."""
    return render(prune(json.loads(full_spec.read_text(encoding="utf-8"))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the bundled copy differs, write nothing")
    parser.add_argument("--spec", type=Path, help="the full spec (default: found as tests.fakes.spec finds it)")
    parser.add_argument("--output", type=Path, default=spec.BUNDLED_SPEC, help="default: %(default)s")
    args = parser.parse_args(argv)
    source = args.spec or spec.find_full_spec()
    if source is None:
        print(
            f"no full OpenAI spec found: set {spec.SPEC_ENV} to its path or put it at ../{spec.SPEC_RELATIVE}",
            file=sys.stderr,
        )
        return 2
    text = pruned_text(source)
    output: Path = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.is_file() else None
        if current == text:
            print(f"{output} is current with {source}")
            return 0
        state = "missing" if current is None else "stale"
        print(f"{output} is {state} for {source}: run `{REGENERATE}` and commit the result", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output} ({len(text.encode()):,} bytes) from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
