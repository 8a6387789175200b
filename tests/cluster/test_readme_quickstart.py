"""The README's Python quick start runs as printed (a user copies it into quickstart.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_python_quickstart_runs(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block is not None, "README has no python block"
    script = tmp_path / "quickstart.py"
    script.write_text(block.group(1))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=400, env={**os.environ, "HERD_LOG_LEVEL": "WARNING"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    lines = out.stdout.splitlines()
    first_line = next((line for line in lines if " runs on " in line), None)
    again_line = next((line for line in lines if " answers again: " in line), None)
    table_line = next((line for line in lines if line.startswith("{")), None)
    assert first_line and again_line and table_line, out.stdout
    first = int(first_line.rsplit("->", 1)[1])
    restarted = int(again_line.rsplit(":", 1)[1])
    assert restarted == first  # a fresh incarnation: its constructor ran again
    assert ", 2)" in table_line  # the killed node's child is in its second incarnation
