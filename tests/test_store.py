"""The store keeps everything across a restart, migrates forward, and dedupes atomically."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.store import SCHEMA_VERSION, Store, UsageRow


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "threadline.db"
    store = Store(path)
    store.save_conversation("slack:T1:C1:1.0", platform="slack", channel="C1", conversation_id="conv_a", model="m1")
    store.mark_owned("discord:G1:42:42", platform="discord", channel="42")
    assert store.claim_events(["slack:event:Ev1", "slack:msg:C1:1.0"])
    store.save_file("slack:T1:C1:1.0", "ab" * 32, "file-1")
    store.record_usage(UsageRow("slack", "U1", "C1", "1.0", "m1", 120, 30))
    store.set_channel_model("slack", "C1", "gpt-6-luna")
    store.close()

    reopened = Store(path)
    record = reopened.thread("slack:T1:C1:1.0")
    assert record is not None and record.conversation_id == "conv_a" and record.model == "m1"
    assert reopened.is_owned("discord:G1:42:42")
    assert not reopened.claim_events(["slack:msg:C1:1.0"]), "a seen event must stay seen after a restart"
    assert reopened.file_id("slack:T1:C1:1.0", "ab" * 32) == "file-1"
    assert reopened.usage_since("slack", "U1", 0) == (1, 120, 30)
    assert reopened.channel_model("slack", "C1") == "gpt-6-luna"
    assert reopened.schema_version() == SCHEMA_VERSION
    assert reopened.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_claim_is_all_or_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    assert store.claim_events(["a"])
    assert not store.claim_events(["b", "a"]), "one known id makes the whole delivery a duplicate"
    assert store.claim_events(["b"]), "a refused claim must not have recorded its other ids"


def test_old_events_are_pruned_after_retention(tmp_path: Path) -> None:
    now = [1000.0]
    store = Store(tmp_path / "db.sqlite", clock=lambda: now[0])
    store.claim_events(["old"])
    now[0] += 3600
    store.claim_events(["new"])
    assert store.prune_events(retention_secs=1800) == 1
    assert store.claim_events(["old"]) and not store.claim_events(["new"])


def test_files_are_per_thread(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    store.save_file("t1", "ff" * 32, "file-1")
    assert store.file_id("t2", "ff" * 32) is None, "another thread must never get this thread's file"


def test_reset_forgets_conversation_but_keeps_ownership(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    store.mark_owned("k", platform="discord", channel="c")
    store.save_conversation("k", platform="discord", channel="c", conversation_id="conv_1", model="m")
    store.forget_conversation("k")
    record = store.thread("k")
    assert record is not None and record.conversation_id is None and record.owned


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this threadline"):
        Store(path)


def test_migrates_an_empty_v0_file(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sqlite3.connect(path).close()
    assert Store(path).schema_version() == SCHEMA_VERSION
