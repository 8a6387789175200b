"""``herd events`` on a SQLite store (no cluster): streams, show, tail, projections, errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from herd.cli.main import main
from herd.eventsourcing.store.open import open_store
from herd.eventsourcing.store.records import NewEvent, Parked


def _store(path: Path) -> str:
    url = f"sqlite://{path / 'events.db'}"

    async def fill() -> None:
        store = await open_store(url)
        await store.append("Account-a", [NewEvent("Opened", json.dumps({"owner": "x"}))], 0,
                           fence=4)
        await store.append("Account-b", [NewEvent("Opened", json.dumps({"owner": "y"}))], 0)
        await store.save_checkpoint("balances", 2)
        await store.park(Parked("picky", 1, "ValueError: bad", 3, 0.0))
        await store.close()

    asyncio.run(fill())
    return url


def test_events_commands(tmp_path: Path) -> None:
    url = _store(tmp_path)
    runner = CliRunner()
    streams = runner.invoke(main, ["events", "streams", "--store", url])
    assert streams.exit_code == 0 and "Account-a" in streams.output and " 4" in streams.output
    shown = runner.invoke(main, ["events", "show", "Account-b", "--json", "--store", url])
    assert shown.exit_code == 0
    assert json.loads(shown.output)["data"] == {"owner": "y"}
    tail = runner.invoke(main, ["events", "tail", "--from-position", "0", "--count", "2",
                                "--store", url])
    assert tail.exit_code == 0 and tail.output.count("Opened") == 2
    report = runner.invoke(main, ["events", "projections", "--store", url])
    assert report.exit_code == 0
    assert "at 1 after 3 attempts: ValueError: bad" in report.output


def test_events_errors_are_one_line(tmp_path: Path) -> None:
    url = _store(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(main, ["events", "show", "nope", "--store", url])
    assert missing.exit_code == 1 and "has no events" in missing.output
    bad = runner.invoke(main, ["events", "streams", "--store", "mysql://x"])
    assert bad.exit_code == 1 and "unknown store URL" in bad.output
    unset = runner.invoke(main, ["events", "streams"], env={"HERD_EVENT_STORE": ""})
    assert unset.exit_code == 2 and "--store" in unset.output
