"""The README's data-layer example runs as printed (it needs no cluster)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_data_layer_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    example = next((b for b in blocks if "herd.platform.crdt" in b), None)
    assert example is not None, "README has no data-layer example"
    script = tmp_path / "data_layer.py"
    script.write_text(example)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
