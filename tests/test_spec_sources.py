"""Where the fake OpenAI's spec comes from, and the bundled pruned copy that makes a fresh clone check as strictly
as a checkout with the full spec beside it (``tests.fakes.spec``, ``tests.fakes.prune_spec``).

Nothing here is skipped when the full spec is absent: the currency check then becomes a self-consistency check of
the bundled copy, which a fresh clone can still run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import prune_spec, spec


def _write(path: Path, text: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- the lookup -----------------------------------------------------------------------------------


def test_lookup_order(tmp_path: Path):
    """$THREADLINE_OPENAI_SPEC, then shared/ walking up, then the bundled copy, then the SDK fallback."""
    start = tmp_path / "work" / "repo" / "tests" / "fakes"
    start.mkdir(parents=True)
    bundled = tmp_path / "bundled.json"
    setting = _write(tmp_path / "elsewhere" / "openapi.json")
    assert spec.locate("", start=start, bundled=bundled) == spec.SpecLocation("sdk")
    _write(bundled)
    assert spec.locate("", start=start, bundled=bundled) == spec.SpecLocation("bundled", bundled)
    shared = _write(tmp_path / "work" / spec.SPEC_RELATIVE)
    assert spec.locate("", start=start, bundled=bundled) == spec.SpecLocation("shared", shared)
    assert spec.locate(str(setting), start=start, bundled=bundled) == spec.SpecLocation("setting", setting)
    assert spec.locate(spec.BUNDLED, start=start, bundled=bundled) == spec.SpecLocation("bundled", bundled)
    assert spec.find_full_spec(spec.BUNDLED, start=start) == shared  # the pruner never reads the bundled copy
    assert spec.find_full_spec(str(setting), start=start) == setting


def test_settings_that_point_nowhere_are_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=spec.SPEC_ENV):
        spec.locate(str(tmp_path / "missing.json"), start=tmp_path)
    with pytest.raises(FileNotFoundError, match="bundled copy"):
        spec.locate(spec.BUNDLED, start=tmp_path, bundled=tmp_path / "missing.json")


def test_the_environment_variable_forces_the_bundled_copy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(spec.SPEC_ENV, spec.BUNDLED)
    location = spec.locate()
    assert location == spec.SpecLocation("bundled", spec.BUNDLED_SPEC)
    assert (
        spec.open_validator(location).source == f"bundled:{spec.BUNDLED_SPEC} (the pruned copy bundled with the repo)"
    )


def test_the_source_says_which_spec_is_in_use():
    location = spec.locate()
    prefix = {"setting": "spec:", "shared": "spec:", "bundled": "bundled:"}[location.origin]  # never "sdk" here
    assert spec.validator().source == location.describe() and location.describe().startswith(prefix)
    assert spec.validator(spec.BUNDLED).source.startswith(f"bundled:{spec.BUNDLED_SPEC} ")
    assert spec.SdkValidator().source.startswith("sdk:")
    assert spec.SpecLocation("sdk").describe().startswith("sdk:")


# --- the bundled copy -----------------------------------------------------------------------------


def test_bundled_copy_is_current_and_self_contained():
    """With the full spec reachable, the bundled copy is exactly what the pruner makes of it; either way it holds
    every request schema, every ``$ref`` in it resolves inside it, and it holds nothing the pruner would drop."""
    text = spec.BUNDLED_SPEC.read_text(encoding="utf-8")
    bundled = json.loads(text)
    assert prune_spec.dangling_refs(bundled) == []
    assert set(spec.REQUEST_SCHEMAS.values()) <= set(bundled["components"]["schemas"])
    assert prune_spec.render(prune_spec.prune(bundled)) == text  # a fixed point: nothing unreachable, canonical form
    full = spec.find_full_spec()
    if full is not None:
        assert prune_spec.pruned_text(full) == text, f"{spec.BUNDLED_SPEC} is stale: run {prune_spec.REGENERATE}"


def test_bundled_copy_keeps_the_licence_beside_it():
    folder = spec.BUNDLED_SPEC.parent
    licence = (folder / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("The MIT License") and "OpenAI" in licence
    assert json.loads(spec.BUNDLED_SPEC.read_text(encoding="utf-8"))["info"]["license"]["name"] == "MIT"
    assert prune_spec.REGENERATE in (folder / "README.md").read_text(encoding="utf-8")


# --- the pruner -----------------------------------------------------------------------------------

TINY_SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "tiny", "version": "1"},
    "servers": [{"url": "https://example.invalid"}],
    "paths": {
        "/things": {
            "post": {
                "summary": "dropped",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/CreateThing"}},
                        "text/plain": {"schema": {"$ref": "#/components/schemas/Unused"}},
                    }
                },
                "responses": {"200": {"$ref": "#/components/responses/Ok"}},
            },
            "get": {"responses": {"200": {"$ref": "#/components/responses/Ok"}}},
        },
        "/other": {"post": {"requestBody": {"content": {}}}},
    },
    "components": {
        "schemas": {
            "CreateThing": {"type": "object", "properties": {"part": {"$ref": "#/components/schemas/Part"}}},
            "Part": {"anyOf": [{"$ref": "#/components/schemas/Part~1Text"}, {"type": "null"}]},
            "Part/Text": {"type": "string"},
            "Unused": {"type": "string"},
        },
        "responses": {"Ok": {"description": "ok"}},
    },
    "x-oaiMeta": {"dropped": True},
}


def test_prune_keeps_only_what_the_request_schemas_reach():
    pruned = prune_spec.prune(TINY_SPEC, {("POST", "/things", "json"): "CreateThing"})
    schemas = TINY_SPEC["components"]["schemas"]
    create_ref = {"$ref": "#/components/schemas/CreateThing"}
    assert pruned == {
        "openapi": "3.1.0",
        "info": {"title": "tiny", "version": "1"},
        "paths": {"/things": {"post": {"requestBody": {"content": {"application/json": {"schema": create_ref}}}}}},
        "components": {"schemas": {name: schemas[name] for name in ("CreateThing", "Part", "Part/Text")}},
    }
    assert prune_spec.dangling_refs(pruned) == []
    assert prune_spec.render(pruned) == prune_spec.render(json.loads(prune_spec.render(pruned)))


def test_prune_names_what_the_spec_lacks():
    with pytest.raises(KeyError, match="POST /nowhere"):
        prune_spec.prune(TINY_SPEC, {("POST", "/nowhere", "json"): "CreateThing"})
    with pytest.raises(KeyError, match="multipart/form-data request body for POST /things"):
        prune_spec.prune(TINY_SPEC, {("POST", "/things", "multipart"): "CreateThing"})
    broken = {**TINY_SPEC, "components": {"schemas": {"CreateThing": {"$ref": "#/components/schemas/Gone"}}}}
    with pytest.raises(KeyError, match="#/components/schemas/Gone"):
        prune_spec.prune(broken, {("POST", "/things", "json"): "CreateThing"})
    assert prune_spec.dangling_refs({"a": {"$ref": "#/components/schemas/Gone"}, "b": {"$ref": "#/x"}}) == [
        "#/components/schemas/Gone",
        "#/x",
    ]


def test_cli_writes_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """``--check`` exits 0 when current, 1 when missing or stale (naming the command to run). The input is the
    full spec when found, otherwise the bundled copy itself (pruning it again is a fixed point)."""
    source = spec.find_full_spec() or spec.BUNDLED_SPEC
    output = tmp_path / "openapi.pruned.json"
    args = ["--spec", str(source), "--output", str(output)]
    assert prune_spec.main([*args, "--check"]) == 1
    assert "is missing" in capsys.readouterr().err
    assert prune_spec.main(args) == 0
    assert output.read_text(encoding="utf-8") == spec.BUNDLED_SPEC.read_text(encoding="utf-8")
    assert prune_spec.main([*args, "--check"]) == 0
    assert "is current" in capsys.readouterr().out
    output.write_text(output.read_text(encoding="utf-8").replace('"CreateResponse"', '"CreateResponses"', 1))
    assert prune_spec.main([*args, "--check"]) == 1
    assert f"is stale for {source}: run `{prune_spec.REGENERATE}`" in capsys.readouterr().err


def test_cli_without_a_full_spec_says_where_to_put_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(spec, "find_full_spec", lambda setting=None, start=None: None)
    assert prune_spec.main(["--check", "--output", str(tmp_path / "out.json")]) == 2
    assert spec.SPEC_ENV in capsys.readouterr().err and not (tmp_path / "out.json").exists()
