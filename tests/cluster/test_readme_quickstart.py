"""The README's Python quick start runs as printed (a user copies it into quickstart.py), and a
new user's terminal shows only what the script prints: herd's actors keep their INFO events in
their log files and forward nothing below WARNING to the driver."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Ray's own notice (not herd's) when the script SIGKILLs a node: its error-message thread prints it
# to the driver's stdout whatever log_to_driver says; the first line names the node, the rest
# are the indented causes it lists.
RAY_NODE_DEAD = re.compile(r"^(\x1b\[\d+m)?\(raylet\)(\x1b\[0m)? The node with node id: \w+ .* "
                           r"has been marked dead")


def script_lines(stdout: str) -> list[str]:
    """stdout without Ray's node-death notice (its first line and the indented lines after)."""
    kept: list[str] = []
    in_notice = False
    for line in stdout.splitlines():
        if RAY_NODE_DEAD.match(line):
            in_notice = True
            continue
        if in_notice and line.startswith("\t"):
            continue
        in_notice = False
        kept.append(line)
    return kept


def test_readme_python_quickstart_runs(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block is not None, "README has no python block"
    script = tmp_path / "quickstart.py"
    script.write_text(block.group(1))
    env = {k: v for k, v in os.environ.items() if k not in ("HERD_LOG_LEVEL", "HERD_LOG_JSON")}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    lines = script_lines(out.stdout)
    assert len(lines) == 3, out.stdout  # the script's three prints and nothing else
    first_line, again_line, table_line = lines
    assert " runs on " in first_line and " answers again: " in again_line, out.stdout
    assert table_line.startswith("{"), out.stdout
    # what the actors forwarded: no INFO, no JSON (a WARNING would be one console line)
    forwarded = [line for line in out.stderr.splitlines() if " pid=" in line]
    assert not [line for line in forwarded if '{"logger"' in line or "[info" in line], \
        "\n".join(forwarded)
    first = int(first_line.rsplit("->", 1)[1])
    restarted = int(again_line.rsplit(":", 1)[1])
    assert restarted == first  # a fresh incarnation: its constructor ran again
    assert ", 2)" in table_line  # the killed node's child is in its second incarnation
