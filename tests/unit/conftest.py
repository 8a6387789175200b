"""Hypothesis runs derandomized in CI (same examples every run, no flaky shrinking across runs)
with enough examples to matter; ``HYPOTHESIS_PROFILE=dev`` explores randomly."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
