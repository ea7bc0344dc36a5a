"""The docker tests skip where a machine cannot run them (no engine, no way to make
the offline base image); ``.ci/run`` sets ``KERNEL_MATRIX_REQUIRE_DOCKER=1`` where a
Docker engine answers, and there such a reason fails the test instead: CI cannot
pass with the docker path silently untested."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def skip_unless_required(reason: str) -> NoReturn:
    if os.environ.get("KERNEL_MATRIX_REQUIRE_DOCKER") == "1":
        pytest.fail(f"KERNEL_MATRIX_REQUIRE_DOCKER=1, but {reason}")
    pytest.skip(reason)
