"""The CUDA driver (``libcuda``), asked directly through ctypes: no torch, no toolkit.

Three questions, each answered by the driver that will really run the kernels:

* which GPUs this machine has (``local_devices``: ``cuDeviceGetCount`` and the
  compute-capability attributes);
* which kernels of a library the driver finds for a device, and from which code
  object (``look_up``): each fatbin container (one per translation unit) is handed to
  ``cuModuleLoadData`` and each kernel fetched with ``cuModuleGetFunction``; its
  ``CU_FUNC_ATTRIBUTE_BINARY_VERSION`` / ``_PTX_VERSION`` say what was loaded.
  A first pass runs with ``CUDA_DISABLE_PTX_JIT=1`` (and the JIT cache off), so
  what it finds came from a cubin; containers it could not load are loaded again
  with JIT allowed, and what only that second pass finds was JIT-compiled from PTX;
* what an arch-guard stub does when launched (``launch``): one block of one thread,
  zeroed arguments, in its own process -- the guard's message and the trap error.

The lookups and launches run in child processes (``python -m orchestrator.judge.driver``):
the JIT switch is read when the driver starts, and a trapping kernel poisons its
context for good.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.archs import ComputeCapability
from orchestrator.common.errors import InfraError

LIBCUDA = "libcuda.so.1"
SUCCESS = 0
NOT_FOUND = 500  # CUDA_ERROR_NOT_FOUND: no such kernel in the module
NO_BINARY_FOR_GPU = 209  # CUDA_ERROR_NO_BINARY_FOR_GPU: no image of the container fits
ATTR_MAJOR, ATTR_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_{MAJOR,MINOR}
FUNC_PTX_VERSION, FUNC_BINARY_VERSION = 5, 6  # CU_FUNC_ATTRIBUTE_*
LOOKUP_TIMEOUT_S = 600  # a JIT pass compiles whole PTX modules
LAUNCH_TIMEOUT_S = 60
RESULT_START = "<<kernel-matrix-driver>>"
RESULT_END = "<</kernel-matrix-driver>>"


@dataclass(frozen=True)
class LocalDevice:
    ordinal: int
    capability: ComputeCapability
    name: str


def open_driver() -> Any:
    """libcuda, initialised; InfraError (exit 3) with one clear line when there is no
    driver or no GPU."""
    try:
        cuda = ctypes.CDLL(LIBCUDA)
    except OSError:
        raise InfraError(
            f"no NVIDIA driver on this machine ({LIBCUDA} not found): this needs a GPU"
        ) from None
    code = cuda.cuInit(0)
    if code != SUCCESS:
        raise InfraError(
            f"the NVIDIA driver found no usable GPU (cuInit: {error_name(cuda, code)})"
        )
    return cuda


def error_name(cuda: Any, code: int) -> str:
    """``CUDA_ERROR_NO_BINARY_FOR_GPU`` for 209 (or the bare number)."""
    name = ctypes.c_char_p()
    if cuda.cuGetErrorName(code, ctypes.byref(name)) == SUCCESS and name.value:
        return str(name.value.decode())
    return f"CUDA error {code}"


def local_devices(cuda: Any | None = None) -> list[LocalDevice]:
    """Every GPU the driver sees, with its compute capability and name."""
    cuda = cuda or open_driver()
    count = ctypes.c_int()
    code = cuda.cuDeviceGetCount(ctypes.byref(count))
    if code != SUCCESS or count.value == 0:
        raise InfraError("the NVIDIA driver reports no GPU on this machine")
    found = []
    for ordinal in range(count.value):
        device = ctypes.c_int()
        major, minor = ctypes.c_int(), ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        if (
            cuda.cuDeviceGet(ctypes.byref(device), ordinal) != SUCCESS
            or cuda.cuDeviceGetAttribute(ctypes.byref(major), ATTR_MAJOR, device) != SUCCESS
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), ATTR_MINOR, device) != SUCCESS
        ):
            raise InfraError(f"the NVIDIA driver could not describe GPU {ordinal}")
        cuda.cuDeviceGetName(name, len(name), device)
        capability = ComputeCapability(major.value, minor.value)
        found.append(LocalDevice(ordinal, capability, name.value.decode(errors="replace")))
    return found


def distinct_devices(devices: Sequence[LocalDevice]) -> list[LocalDevice]:
    """One GPU per compute capability (the first of each): eight H100s are judged once."""
    seen: dict[ComputeCapability, LocalDevice] = {}
    for device in devices:
        seen.setdefault(device.capability, device)
    return sorted(seen.values(), key=lambda d: d.capability)


# --- the child's side ---------------------------------------------------------------


def _context(cuda: Any, ordinal: int) -> None:
    device, context = ctypes.c_int(), ctypes.c_void_p()
    _ok(cuda, cuda.cuDeviceGet(ctypes.byref(device), ordinal), "cuDeviceGet")
    _ok(cuda, cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), "context")
    _ok(cuda, cuda.cuCtxSetCurrent(context), "cuCtxSetCurrent")


def _ok(cuda: Any, code: int, what: str) -> None:
    if code != SUCCESS:
        raise RuntimeError(f"{what}: {error_name(cuda, code)}")


def _read_span(path: str, offset: int, length: int) -> ctypes.Array[ctypes.c_char]:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise RuntimeError(f"{path}: the fatbin container at {offset} is truncated")
    return ctypes.create_string_buffer(data, length)


def _function_versions(cuda: Any, function: ctypes.c_void_p) -> tuple[int, int]:
    binary, ptx = ctypes.c_int(), ctypes.c_int()
    cuda.cuFuncGetAttribute(ctypes.byref(binary), FUNC_BINARY_VERSION, function)
    cuda.cuFuncGetAttribute(ctypes.byref(ptx), FUNC_PTX_VERSION, function)
    return binary.value, ptx.value


def child_look_up(request: dict[str, Any], cuda: Any = None) -> dict[str, Any]:
    """In the child: load each container, fetch each kernel. Returns, per kernel found,
    ``[container offset, binary version, PTX version]``, and per container that did
    not load, its error name."""
    cuda = cuda or open_driver()
    _context(cuda, request["ordinal"])
    found: dict[str, list[int]] = {}
    failed: dict[str, str] = {}
    names = [name.encode() for name in request["kernels"]]
    for offset, length in request["containers"]:
        image = _read_span(request["library"], offset, length)
        module = ctypes.c_void_p()
        code = cuda.cuModuleLoadData(ctypes.byref(module), image)
        if code != SUCCESS:
            failed[str(offset)] = error_name(cuda, code)
            continue
        for name in names:
            if name.decode() in found:
                continue
            function = ctypes.c_void_p()
            code = cuda.cuModuleGetFunction(ctypes.byref(function), module, name)
            if code == SUCCESS:
                found[name.decode()] = [offset, *_function_versions(cuda, function)]
            elif code != NOT_FOUND:
                failed[str(offset)] = f"{name.decode()}: {error_name(cuda, code)}"
        cuda.cuModuleUnload(module)
    return {"found": found, "failed": failed}


def child_launch(request: dict[str, Any], cuda: Any = None) -> dict[str, Any]:
    """In the child: launch one kernel on one thread with zeroed arguments; the error
    the launch and the synchronisation return."""
    cuda = cuda or open_driver()
    _context(cuda, request["ordinal"])
    offset, length = request["container"]
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    _ok(
        cuda,
        cuda.cuModuleLoadData(ctypes.byref(module), _read_span(request["library"], offset, length)),
        "cuModuleLoadData",
    )
    _ok(
        cuda,
        cuda.cuModuleGetFunction(ctypes.byref(function), module, request["kernel"].encode()),
        "cuModuleGetFunction",
    )
    size = _parameter_bytes(cuda, function)
    arguments = ctypes.create_string_buffer(max(size, 8))
    buffer_size = ctypes.c_size_t(size)
    # CU_LAUNCH_PARAM_BUFFER_POINTER = 1, _BUFFER_SIZE = 2, _END = 0
    extra = (ctypes.c_void_p * 5)(
        ctypes.c_void_p(1),
        ctypes.cast(arguments, ctypes.c_void_p),
        ctypes.c_void_p(2),
        ctypes.cast(ctypes.byref(buffer_size), ctypes.c_void_p),
        ctypes.c_void_p(0),
    )
    launched = cuda.cuLaunchKernel(function, 1, 1, 1, 1, 1, 1, 0, None, None, extra)
    synced = cuda.cuCtxSynchronize() if launched == SUCCESS else launched
    return {
        "launch": error_name(cuda, launched) if launched else "CUDA_SUCCESS",
        "sync": error_name(cuda, synced) if synced else "CUDA_SUCCESS",
        "parameter_bytes": size,
    }


def _parameter_bytes(cuda: Any, function: ctypes.c_void_p) -> int:
    """The size of a kernel's parameter buffer (``cuFuncGetParamInfo``, driver >= 12.4)."""
    end, index = 0, 0
    offset, size = ctypes.c_size_t(), ctypes.c_size_t()
    while (
        cuda.cuFuncGetParamInfo(
            function, ctypes.c_size_t(index), ctypes.byref(offset), ctypes.byref(size)
        )
        == SUCCESS
    ):
        end = max(end, offset.value + size.value)
        index += 1
    return end


# --- the parent's side --------------------------------------------------------------


def run_child(
    verb: str, request: dict[str, Any], *, jit: bool, timeout: int
) -> tuple[dict[str, Any], str]:
    """Run ``verb`` (look-up or launch) in a fresh process: its answer and what the
    process printed beside it (a stub's device printf). ``jit``: False starts the
    driver with PTX JIT (and its cache) off."""
    env = dict(os.environ, CUDA_MODULE_LOADING="EAGER")
    if not jit:
        env.update(CUDA_DISABLE_PTX_JIT="1", CUDA_CACHE_DISABLE="1")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(request, f)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.judge.driver", verb, f.name],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {timeout} s"}, ""
    finally:
        Path(f.name).unlink(missing_ok=True)
    start = done.stdout.rfind(RESULT_START)
    end = done.stdout.find(RESULT_END, start)
    if start < 0 or end < 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return {"error": f"the driver process died ({last})"}, done.stdout
    answer: dict[str, Any] = json.loads(done.stdout[start + len(RESULT_START) : end])
    return answer, done.stdout[:start]


def _main(argv: Sequence[str]) -> int:
    verb, request_file = argv
    request = json.loads(Path(request_file).read_text())
    try:
        answer = child_look_up(request) if verb == "look-up" else child_launch(request)
    except (RuntimeError, InfraError, OSError) as e:
        answer = {"error": str(e)}
    print(f"\n{RESULT_START}{json.dumps(answer)}{RESULT_END}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
