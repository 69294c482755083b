"""Rules of the code base that a test can hold: the core stays platform-neutral and off retired APIs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_LIBS = {"slack_bolt", "slack_sdk", "discord"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_a_platform_library() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & PLATFORM_LIBS) for path in (ROOT / "bot").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_assistants_api_or_retired_models_in_code() -> None:
    retired = ("beta.assistants", "beta.threads", '"dall-e-2"', '"dall-e-3"', '"gpt-image-1"', "create_variation")
    hits = [
        f"{path.relative_to(ROOT)}: {word}"
        for folder in ("bot", "adapters")
        for path in (ROOT / folder).rglob("*.py")
        for word in retired
        if word in path.read_text(encoding="utf-8")
    ]
    assert hits == []
