"""Job submission to a Ray cluster through the Ray Jobs API (``JobSubmissionClient``).

herd travels with the job as a wheel in the runtime environment's ``py_modules``, next to the
user's working directory. The wheel is built from the installed ``herd`` package itself (so it
works for editable and regular installs alike) and declares only ``structlog`` as a dependency:
Ray installs ``py_modules`` wheels with ``pip install --target``, and the nodes already run Ray
with its own dependencies (pydantic, pyyaml, click), which must not be reinstalled per job.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from herd.platform.errors import ClusterError, HerdTimeoutError

DIST_NAME = "ray_herd"
JOB_DEPENDENCIES = ("structlog",)
TERMINAL_STATES = {"SUCCEEDED", "FAILED", "STOPPED"}
SKIP_SUFFIXES = (".pyc", ".pyo")
HERD_PACKAGES = ("platform", "supervisors", "registry", "replication", "consensus",
                 "eventsourcing", "chaos", "cli")
PACKAGE_DATA = ("*.py", "static/*")  # the dashboard's page ships beside its code


def _version() -> str:
    try:
        return metadata.version("ray-herd")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _package_files() -> Iterator[tuple[str, Path]]:
    """(path inside the wheel, file on disk) for every source file of herd's subpackages
    (named here, not discovered: an editable install maps them from one folder each)."""
    for name in HERD_PACKAGES:
        module = importlib.import_module(f"herd.{name}")
        for location in module.__path__:
            yield from _walk(Path(location), f"herd/{name}")


def _walk(directory: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    if not directory.is_dir():
        return
    found = {path for pattern in PACKAGE_DATA for path in directory.rglob(pattern)}
    for path in sorted(found):
        if "__pycache__" in path.parts or path.suffix in SKIP_SUFFIXES or not path.is_file():
            continue
        yield f"{prefix}/{path.relative_to(directory).as_posix()}", path


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def package_wheel(dest: Path) -> Path:
    """Write ``ray_herd-<version>-py3-none-any.whl`` into ``dest`` and return its path."""
    version = _version()
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{DIST_NAME}-{version}-py3-none-any.whl"
    info = f"{DIST_NAME}-{version}.dist-info"
    files = dict(_package_files())
    if not any(name.startswith("herd/supervisors/") for name in files):
        raise ClusterError("cannot find herd's sources to package")
    meta = "\n".join(["Metadata-Version: 2.1", "Name: ray-herd", f"Version: {version}",
                      *(f"Requires-Dist: {dep}" for dep in JOB_DEPENDENCIES)]) + "\n"
    wheel_meta = "Wheel-Version: 1.0\nGenerator: herd\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in sorted(files.items()):
            data = path.read_bytes()
            archive.writestr(name, data)
            records.append(_record_line(name, data))
        for name, text in ((f"{info}/METADATA", meta), (f"{info}/WHEEL", wheel_meta)):
            archive.writestr(name, text)
            records.append(_record_line(name, text.encode()))
        records.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return wheel


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # the SDK raises ConnectionError/RuntimeError for unreachable hosts
        raise ClusterError(f"cannot reach the Ray Jobs API at {address}: {exc}") from exc


def submit(address: str, entrypoint: str, working_dir: Path, wheel_dir: Path,
           env: dict[str, str] | None = None) -> str:
    """Submit ``entrypoint`` with herd's wheel and ``working_dir``; returns the job id."""
    wheel = package_wheel(wheel_dir)
    runtime_env: dict[str, Any] = {"working_dir": str(working_dir), "py_modules": [str(wheel)]}
    if env:
        runtime_env["env_vars"] = env
    return _client(address).submit_job(entrypoint=entrypoint, runtime_env=runtime_env)


def follow(address: str, job_id: str, echo: Callable[[str], None], timeout_s: float) -> str:
    """Print the job's logs as they grow until it ends; returns its final status."""
    client = _client(address)
    deadline = time.monotonic() + timeout_s
    printed = 0
    while True:
        status = str(client.get_job_status(job_id))
        status = status.split(".")[-1]
        logs = client.get_job_logs(job_id)
        if len(logs) > printed:
            echo(logs[printed:].rstrip("\n"))
            printed = len(logs)
        if status in TERMINAL_STATES:
            return status
        if time.monotonic() >= deadline:
            raise HerdTimeoutError(f"job {job_id} still {status} after {timeout_s:.0f} s")
        time.sleep(0.5)


def list_jobs(address: str) -> list[dict[str, Any]]:
    jobs = _client(address).list_jobs()
    return [{"job_id": job.submission_id or job.job_id, "status": str(job.status).split(".")[-1],
             "entrypoint": job.entrypoint, "start_time": job.start_time} for job in jobs]


def job_logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)


def job_env_from_process() -> dict[str, str]:
    """Environment a submitted herd job passes on (log settings only; auth comes from the node)."""
    return {key: value for key, value in os.environ.items() if key.startswith("HERD_LOG")}
