"""Ray token authentication for the driver process.

Ray reads ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN_PATH`` from the environment and caches the token
in-process; switching clusters (tests start several) needs the cache reset as well.
"""

from __future__ import annotations

import os
from pathlib import Path


def use_token(token_path: Path | str | None) -> None:
    """Make this process (and the processes it starts) authenticate with the token at
    ``token_path``; ``None`` turns token authentication off for this process."""
    if token_path is None:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    else:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def forget_token(token_path: Path | str) -> None:
    """Undo ``use_token(token_path)`` in this process (its cluster is gone, and so is the file),
    so a later embedded ``connect()`` starts from Ray's defaults."""
    if os.environ.get("RAY_AUTH_TOKEN_PATH") != str(token_path):
        return
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ.pop("RAY_AUTH_MODE", None)
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
