"""The Dockerfile and compose.yaml keep the promises the README makes about them: a slim, unprivileged image that
runs the real ``threadline`` command, and three replicas on one PostgreSQL with no secret written in the file."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
SECRET_NAME = re.compile(r"TOKEN|KEY|PASSWORD|SECRET")
REFERENCE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}$")


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def _args(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [args for name, args in stage if name == instruction]


def test_final_stage_is_slim_unprivileged_and_runs_the_real_command(capsys: pytest.CaptureFixture[str]):
    builder, final = _stages()[0], _stages()[-1]
    image = _args(final, "FROM")[0].split()[0]
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", image), image
    # The virtualenv's interpreter is a symlink into the builder's image: both stages must be the same Python.
    assert _args(builder, "FROM")[0].split()[0] == image
    users = _args(final, "USER")
    assert users, "the final stage must not run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert any("PYTHONUNBUFFERED=1" in env for env in _args(final, "ENV"))
    entrypoint = json.loads(_args(final, "ENTRYPOINT")[-1])
    command = json.loads(_args(final, "CMD")[-1])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert entrypoint == ["threadline"] and "threadline" in scripts
    with pytest.raises(SystemExit) as exited:  # argparse: 0 for a real subcommand's --help, 2 for an unknown one
        main([*command, "--help"])
    assert exited.value.code == 0, capsys.readouterr().err


def test_final_stage_has_no_build_tools_only_the_virtualenv():
    final = _stages()[-1]
    runs = " ".join(_args(final, "RUN"))
    for tool in ("build-essential", "gcc", "g++", "make", "apt-get install", "pip install", "libpq-dev"):
        assert tool not in runs, tool
    copies = _args(final, "COPY")
    assert copies and all(copy.startswith("--from=builder /opt/venv ") for copy in copies), copies


def test_builder_copies_everything_the_package_is_built_from():
    """What pyproject.toml builds (its readme, every package it finds) reaches the builder and is not ignored."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {"pyproject.toml", project["project"]["readme"], *packages}
    copied = {source.rstrip("/") for args in _args(_stages()[0], "COPY") for source in args.split()[:-1]}
    assert needed <= copied, needed - copied
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not needed & ignored
    assert {".env", ".git"} <= ignored


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_runs_three_replicas_on_its_postgres():
    services = _compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    bots = {name: service for name, service in services.items() if "build" in service}
    replicas = sum(service.get("deploy", {}).get("replicas", 1) for service in bots.values())
    assert replicas == 3
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, service in bots.items():
        url = service["environment"]["THREADLINE_DATABASE"]
        assert re.fullmatch(r"postgresql://\w+:\$\{POSTGRES_PASSWORD[^}]*\}@postgres:5432/\w+", url), (name, url)
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["restart"] == "unless-stopped"
        for key in service["environment"]:  # only real settings: a misspelt name would be silently ignored
            assert f"| `{key}` |" in readme, key


def test_compose_writes_no_secret_inline():
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert REFERENCE.fullmatch(str(value)), (name, key)
