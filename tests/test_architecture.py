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


# Core modules an adapter may not import: it reaches the core only through the gateway (and the plain types,
# errors, replies and settings base it shares with the core).
CORE_INTERNALS = {
    "bot.store",
    "bot.runtime",
    "bot.turns",
    "bot.commands",
    "bot.engine",
    "bot.access",
    "bot.access_rules",
    "bot.admins",
    "bot.audit",
}


def _module_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_adapters_reach_the_core_only_through_the_gateway() -> None:
    offenders: dict[str, list[str]] = {}
    for path in (ROOT / "adapters").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bad = sorted(
            name
            for name in _module_imports(path)
            if any(name == core or name.startswith(core + ".") for core in CORE_INTERNALS)
        )
        bad += sorted(
            f".{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in {"runtime", "store", "turns", "commands"}
        )
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_each_platform_is_one_package_with_its_own_settings() -> None:
    flat = sorted(p.name for p in (ROOT / "adapters").glob("*.py") if p.name not in {"__init__.py", "console.py"})
    assert flat == [], "platform modules live in adapters/<platform>/"
    for platform in ("slack", "discord"):
        folder = ROOT / "adapters" / platform
        assert {"__init__.py", "settings.py", "adapter.py", "convert.py"} <= {p.name for p in folder.glob("*.py")}
    core_settings = (ROOT / "bot" / "settings.py").read_text(encoding="utf-8")
    assert "slack_" not in core_settings and "discord_" not in core_settings, "platform settings sit in adapters/"


def test_the_architecture_rule_catches_a_reach_into_the_store(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("from bot.store import open_store\nfrom bot import runtime\n", encoding="utf-8")
    assert {"bot.store", "bot.store.open_store", "bot.runtime"} <= _module_imports(sneaky)
