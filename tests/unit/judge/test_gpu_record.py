"""The records of ``check --confirm-with-driver`` on an H100 and an H200
(docs/gpu-verification.md, "Confirmed by the driver"): each file is what the command
wrote there, valid against
``check.schema.json``, and the driver's answer holds the rules' meaning -- a cubin
load reports the predicted cubin's SM, a JIT load the predicted PTX's arch."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import orchestrator
from orchestrator.archs import Target

GPU = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu"
RECORDS = {
    "h100-2026-12-07-confirm": "NVIDIA H100 80GB HBM3",
    "h200-2026-12-07-confirm": "NVIDIA H200",
}


def documents() -> dict[str, dict[str, Any]]:
    found = {}
    for folder in RECORDS:
        record = GPU / folder
        found |= {f"{folder}/{p.name}": json.loads(p.read_text()) for p in record.glob("*.json")}
        found |= {
            f"{folder}/{p.name}": json.loads(gzip.decompress(p.read_bytes()))
            for p in record.glob("*.json.gz")
        }
    return found


@pytest.mark.parametrize("name", sorted(documents()))
def test_the_driver_agreed_with_every_verdict(name: str) -> None:
    document = documents()[name]
    schema = Path(orchestrator.__file__).parent / "schemas" / "check.schema.json"
    jsonschema.validate(document, json.loads(schema.read_text()))
    assert document["local_gpus"][0]["name"] == RECORDS[name.split("/")[0]]
    confirmations = document["confirmation"]
    assert confirmations and all(c["agrees"] and not c["errors"] for c in confirmations)
    for c in confirmations:
        for kernel in c["kernels"]:
            if kernel["loaded"] == "none":
                continue
            target = Target.parse(kernel["predicted"])
            if target.ptx:  # JIT: compiled for the device, from the predicted PTX
                assert (kernel["binary_version"], kernel["ptx_version"]) == (90, target.cc.sm)
            else:
                assert kernel["binary_version"] == target.cc.sm


def test_the_record_covers_cubin_jit_and_no_code() -> None:
    loads = {
        k["loaded"] for d in documents().values() for c in d["confirmation"] for k in c["kernels"]
    }
    assert loads == {"cubin", "jit", "none"}
