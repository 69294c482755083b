"""Usage and cost reports add up to the ledger; prices and ``--since`` refuse typos with a line saying what is
accepted. The command line runs as a real ``threadline`` process on a real database."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.prices import ModelPrice, parse_prices, price_for
from bot.store import UsageRow
from bot.store.sqlite import SqliteStore
from bot.types import ThreadKey
from bot.usage_report import CSV_COLUMNS, parse_since
from tests.helpers import spawn_threadline, user_env

PRICES = (
    '{"gpt-6.2-sol": {"input": 1.25, "cached_input": 0.125, "output": 10}, "gpt-6-luna": {"input": 0.5, "output": 2}}'
)


# --- prices -------------------------------------------------------------------------------------------------------


def test_a_price_table_is_read_and_costs_count_cached_input_at_its_own_price() -> None:
    prices = parse_prices(PRICES)
    sol = prices["gpt-6.2-sol"]
    assert sol == ModelPrice(input=1.25, output=10, cached_input=0.125)
    assert prices["gpt-6-luna"].cached_input == 0.5, "no cached price: the input price"
    # 1M in of which 400k cached, 100k out: 600k × 1.25 + 400k × 0.125 + 100k × 10, per 1M
    assert sol.cost(1_000_000, 400_000, 100_000) == pytest.approx(0.75 + 0.05 + 1.0)
    assert price_for(prices, "gpt-6.2-sol-2026-10-01") is sol, "a dated snapshot costs what its model does"
    assert price_for(prices, "gpt-6.2-solar") is None and price_for(prices, "gpt-7") is None
    assert parse_prices("") == {} and parse_prices({}) == {}


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('{"gpt-x": {"inptu": 1, "output": 2}}', "model 'gpt-x': unknown key 'inptu' (accepted: input, cached_input"),
        ('{"gpt-x": {"input": -1, "output": 2}}', "model 'gpt-x': input must not be negative (got -1)"),
        ('{"gpt-x": {"input": "1.25", "output": 2}}', "model 'gpt-x': input must be a number of USD per 1M tokens"),
        ('{"gpt-x": {"input": true, "output": 2}}', "model 'gpt-x': input must be a number"),
        ('{"gpt-x": {"input": 1}}', "model 'gpt-x': missing 'output'"),
        ('{"gpt-x": 1.25}', "model 'gpt-x': expected a table of prices"),
        ('["gpt-x"]', "expected a table of models"),
        ('{"gpt-x": {"input": 1,}}', "not valid JSON"),
    ],
)
def test_a_price_table_with_a_typo_names_the_model_and_the_key(table: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_prices(table)
    assert problem in str(caught.value)


# --- --since --------------------------------------------------------------------------------------------------------


def test_since_takes_days_hours_or_a_date() -> None:
    now = 1_800_000_000.0
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("24h", now) == now - 24 * 3600
    assert parse_since(" 30D ", now) == now - 30 * 86400
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", ["", "0d", "yesterday", "7w", "-7d", "2026-13-01", "2026-11-01T10:00", "7 days"])
def test_since_garbage_says_what_is_accepted(text: str) -> None:
    with pytest.raises(
        ValueError, match=r"--since takes a number of days or hours \(7d, 24h\) or a date \(2026-11-01\)"
    ):
        parse_since(text)


# --- threadline usage ---------------------------------------------------------------------------------------------


async def _threadline(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await spawn_threadline(tmp_path, env, *args)
    out, err = await asyncio.wait_for(proc.communicate(b""), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _ledger(path: Path) -> list[UsageRow]:
    """A ledger with rows today, last week and 40 days ago, two users, two channels, three models (one unpriced)."""
    now = time.time()
    at = [now - 40 * 86400]
    store = SqliteStore(path, clock=lambda: at[0])
    rows = [
        UsageRow("slack", "U1", "C1", "t1", "gpt-6.2-sol", 1000, 100, cached_input_tokens=400),  # 40 days ago
        UsageRow("slack", "U1", "C1", "t1", "gpt-6.2-sol", 2000, 300, cached_input_tokens=1000),
        UsageRow("slack", "U2", "C2", "t2", "gpt-6-luna", 500, 50),
        UsageRow("discord", "U1", "9", "9", "gpt-6.2-sol", 700, 70),
        UsageRow("console", "alice", "console", "main", "local-model", 11, 22),
    ]
    asyncio.run(store.record_usage(rows[0]))
    at[0] = now - 7 * 86400
    asyncio.run(store.record_usage(rows[1]))
    asyncio.run(store.record_usage(rows[2]))
    at[0] = now - 60
    for row in rows[3:]:
        asyncio.run(store.record_usage(row))
    asyncio.run(store.record_feedback(ThreadKey("slack", "T1", "C1", "t1"), turn="a", user="U1", value="good"))
    asyncio.run(store.close())
    return rows


async def test_usage_csv_parses_and_adds_up_to_the_ledger(tmp_path: Path) -> None:
    database = tmp_path / "threadline.db"
    rows = await asyncio.to_thread(_ledger, database)
    env = user_env(tmp_path, "http://127.0.0.1:9/v1", THREADLINE_DATABASE=str(database), THREADLINE_PRICES=PRICES)
    code, out, err = await _threadline(tmp_path, env, "usage", "--since", "30d", "--csv")
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert tuple(table[0]) == CSV_COLUMNS
    recent = rows[1:]  # the row 40 days ago is before --since
    for column, field in (("turns", None), ("input_tokens", "input_tokens"), ("output_tokens", "output_tokens")):
        expected = len(recent) if field is None else sum(getattr(r, field) for r in recent)
        assert sum(int(line[column]) for line in table) == expected, column
    assert sum(int(line["cached_input_tokens"]) for line in table) == 1000
    assert {line["cost_usd"] for line in table if line["model"] == "local-model"} == {""}, "no price: no guess"
    sol = next(line for line in table if line["platform"] == "slack" and line["model"] == "gpt-6.2-sol")
    assert float(sol["cost_usd"]) == pytest.approx((1000 * 1.25 + 1000 * 0.125 + 300 * 10) / 1e6)
    assert {line["day"] for line in table} == {
        f"{datetime.fromtimestamp(time.time() - 7 * 86400, UTC):%Y-%m-%d}",
        f"{datetime.fromtimestamp(time.time() - 60, UTC):%Y-%m-%d}",
    }

    code, out, err = await _threadline(tmp_path, env, "usage", "--since", "30d")
    assert code == 0, err
    total_in = sum(r.input_tokens for r in recent)
    total_out = sum(r.output_tokens for r in recent)
    first = out.splitlines()[0]
    assert f"{total_in + total_out:,} tokens ({total_in:,} in, 1,000 of them cached; {total_out:,} out)" in first
    assert f"over {len(recent)} turns, about $" in first and "plus local-model (no price)" in first
    assert "Feedback: 1 👍, 0 👎." in out
    assert "slack:U1" in out and "console:alice" in out and "gpt-6-luna" in out
    assert "No price for local-model (set THREADLINE_PRICES or a [prices] table in threadline.toml)." in out

    code, out, _ = await _threadline(tmp_path, env, "usage", "--since", "2000-01-01", "--csv")
    assert code == 0 and sum(int(line["turns"]) for line in csv.DictReader(io.StringIO(out))) == len(rows)


async def test_usage_since_garbage_and_a_price_typo_are_refused_at_start(tmp_path: Path) -> None:
    env = user_env(tmp_path, "http://127.0.0.1:9/v1", THREADLINE_DATABASE=str(tmp_path / "threadline.db"))
    code, _, err = await _threadline(tmp_path, env, "usage", "--since", "last tuesday")
    assert code == 2
    assert "--since takes a number of days or hours (7d, 24h) or a date (2026-11-01), not 'last tuesday'" in err

    typo = {**env, "THREADLINE_PRICES": '{"gpt-6.2-sol": {"input": 1.25, "ouptut": 10}}'}
    code, _, err = await _threadline(tmp_path, typo, "run")
    assert code == 2
    assert "invalid settings: prices:" in err and "model 'gpt-6.2-sol': unknown key 'ouptut'" in err

    config = tmp_path / "threadline.toml"
    config.write_text('[prices."gpt-6.2-sol"]\ninput = "cheap"\noutput = 10\n')
    code, _, err = await _threadline(tmp_path, {**env, "THREADLINE_CONFIG": str(config)}, "usage")
    assert code == 2
    assert "model 'gpt-6.2-sol': input must be a number of USD per 1M tokens, not 'cheap'" in err
