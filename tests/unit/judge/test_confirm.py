"""``check --confirm-with-driver`` around the CUDA driver: the rules that compare the
driver's answer with the prediction, the fatbin containers handed to it, and the
bookkeeping of its two passes. The driver itself is faked here only where the real
one was exercised on an H100 (docs/gpu-verification.md, "Confirmed by the driver")."""

from __future__ import annotations

import ctypes
import itertools
import struct
from pathlib import Path
from typing import Any

import pytest
from synth import (
    EM_AARCH64,
    KIND_ELF,
    KIND_PTX,
    MANGLED_HOLLOW,
    MANGLED_WORK,
    EntrySpec,
    build_container,
    build_shared_object,
    ptx_module,
    two_kernel_cubin,
)

from orchestrator.archs import ComputeCapability
from orchestrator.common.errors import InfraError
from orchestrator.judge import confirm as confirm_module
from orchestrator.judge import driver
from orchestrator.judge.confirm import CUBIN, JIT, NONE, KernelConfirmation, confirm
from orchestrator.judge.driver import LocalDevice, distinct_devices
from orchestrator.judge.expect import HOLLOW, MISSING, PRESENT
from orchestrator.probe import probe
from orchestrator.read.library import container_spans
from orchestrator.symbols import FamilyRule

FATBIN_MAGIC = 0xBA55ED50
H100 = LocalDevice(0, ComputeCapability(9, 0), "NVIDIA H100 80GB HBM3")


# --- the rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "loaded", "binary", "agrees"),
    [
        ("sm_90a", CUBIN, 90, True),  # the cubin it predicted (the variant is not reported)
        ("sm_90", CUBIN, 90, True),
        ("sm_86", CUBIN, 86, True),  # an older cubin of the same major, on 8.9
        ("sm_90a", CUBIN, 80, False),  # a cubin, but of another arch
        ("sm_90a", JIT, 90, False),  # predicted a cubin, the driver had to JIT
        ("sm_90a", NONE, 0, False),  # predicted present, the driver found nothing
        ("compute_80", JIT, 90, True),  # predicted PTX: a JIT load
        ("compute_80", CUBIN, 90, False),  # a cubin served it: the prediction missed it
        ("compute_80", NONE, 0, False),
        ("", NONE, 0, True),  # predicted missing, and not found
        ("", CUBIN, 90, False),  # predicted missing, but the driver found a cubin
        ("", JIT, 90, False),  # ... or JIT-compiled it
    ],
)
def test_a_kernel_agrees_only_when_the_driver_loads_what_was_predicted(
    predicted: str, loaded: str, binary: int, agrees: bool
) -> None:
    kernel = KernelConfirmation("lib.so", "_Z1kv", predicted, loaded, binary, 80)
    assert kernel.agrees is agrees
    assert (predicted or "no code") in kernel.describe()


def test_one_gpu_per_compute_capability() -> None:
    gpus = [
        LocalDevice(0, ComputeCapability(9, 0), "H100"),
        LocalDevice(1, ComputeCapability(9, 0), "H100"),
        LocalDevice(2, ComputeCapability(12, 1), "GB10"),
    ]
    assert [g.ordinal for g in distinct_devices(gpus)] == [0, 2]


# --- the containers handed to the driver ------------------------------------------------


def containers() -> list[bytes]:
    return [
        build_container([EntrySpec(KIND_ELF, 90, two_kernel_cubin(90), "a")]),
        build_container(
            [
                EntrySpec(KIND_ELF, 80, two_kernel_cubin(80)),
                EntrySpec(KIND_PTX, 80, ptx_module("sm_80", {"_Z1kPf": "ret;"})),
            ]
        ),
        build_container([EntrySpec(KIND_ELF, 100, two_kernel_cubin(100), "f", compression="zstd")]),
    ]


@pytest.mark.parametrize("layout", ["x86_64", "aarch64"])
def test_container_spans_are_each_whole_container(tmp_path: Path, layout: str) -> None:
    """Each span is one container (magic, header, entries) as the driver takes it,
    back to back or padded to 256 bytes: the concatenated spans are the containers."""
    made = containers()
    data = (
        build_shared_object(made, align=256, machine=EM_AARCH64)
        if layout == "aarch64"
        else build_shared_object(made)
    )
    path = tmp_path / "lib.so"
    path.write_bytes(data)
    spans = container_spans(path)
    assert [length for _, length in spans] == [len(c) for c in made]
    assert [data[o : o + n] for o, n in spans] == made
    assert all(struct.unpack_from("<I", data, o)[0] == FATBIN_MAGIC for o, _ in spans)


def test_container_spans_of_a_real_aarch64_library() -> None:
    """vLLM's aarch64 ``_flashmla_extension_C`` (padded layout): every span starts with
    the fatbin magic, in order, without overlap."""
    path = Path(__file__).parents[2] / "fixtures" / "aarch64" / "_flashmla_extension_C.abi3.so"
    data = path.read_bytes()
    spans = container_spans(path)
    assert spans
    for (offset, length), (next_offset, _) in itertools.pairwise(spans):
        assert offset + length <= next_offset
    assert all(struct.unpack_from("<I", data, o)[0] == FATBIN_MAGIC for o, _ in spans)


# --- the child's side, with libcuda faked ---------------------------------------------


class FakeCuda:
    """libcuda's calls the child makes, as the H100 answered them: a container loads
    when it holds a cubin for 9.0 (or, with JIT on, PTX it can compile); a kernel is
    found in a loaded module that has it."""

    def __init__(self, modules: dict[bytes, dict[str, tuple[int, int]] | int]) -> None:
        self.modules = modules  # container bytes -> {kernel: (binary, ptx)} or an error
        self.loaded: dict[int, dict[str, tuple[int, int]]] = {}
        self.unloaded = 0

    @staticmethod
    def _set(ref: Any, value: int) -> None:
        ref._obj.value = value

    def cuInit(self, _flags: int) -> int:
        return 0

    def cuDeviceGet(self, ref: Any, ordinal: int) -> int:
        self._set(ref, ordinal)
        return 0

    def cuDevicePrimaryCtxRetain(self, ref: Any, _device: Any) -> int:
        self._set(ref, 1)
        return 0

    def cuCtxSetCurrent(self, _context: Any) -> int:
        return 0

    def cuModuleLoadData(self, ref: Any, image: Any) -> int:
        answer = self.modules[bytes(image)]
        if isinstance(answer, int):
            return answer
        handle = len(self.loaded) + 1
        self.loaded[handle] = answer
        self._set(ref, handle)
        return 0

    def cuModuleGetFunction(self, ref: Any, module: Any, name: bytes) -> int:
        kernels = self.loaded[module.value]
        if name.decode() not in kernels:
            return driver.NOT_FOUND
        ref._obj.value = hash((module.value, name)) & 0xFFFF | 1
        self._function = kernels[name.decode()]
        return 0

    def cuFuncGetAttribute(self, ref: Any, attribute: int, _function: Any) -> int:
        binary, ptx = self._function
        self._set(ref, binary if attribute == driver.FUNC_BINARY_VERSION else ptx)
        return 0

    def cuModuleUnload(self, _module: Any) -> int:
        self.unloaded += 1
        return 0

    def cuGetErrorName(self, code: int, ref: Any) -> int:
        names = {209: b"CUDA_ERROR_NO_BINARY_FOR_GPU", 500: b"CUDA_ERROR_NOT_FOUND"}
        ref._obj.value = names.get(code, b"CUDA_ERROR_UNKNOWN")
        return 0

    def cuDeviceGetCount(self, ref: Any) -> int:
        self._set(ref, 2)
        return 0

    def cuDeviceGetAttribute(self, ref: Any, attribute: int, device: Any) -> int:
        capability = [(9, 0), (12, 1)][device.value]
        self._set(ref, capability[0] if attribute == driver.ATTR_MAJOR else capability[1])
        return 0

    def cuDeviceGetName(self, buffer: Any, _length: int, device: Any) -> int:
        buffer.value = [b"NVIDIA H100 80GB HBM3", b"NVIDIA GB10"][device.value]
        return 0


def test_local_devices_asks_the_driver_for_each_gpu() -> None:
    found = driver.local_devices(FakeCuda({}))
    assert [(d.ordinal, str(d.capability), d.name) for d in found] == [
        (0, "9.0", "NVIDIA H100 80GB HBM3"),
        (1, "12.1", "NVIDIA GB10"),
    ]


def test_no_driver_is_one_line_and_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "LIBCUDA", "libcuda-that-does-not-exist.so.1")
    with pytest.raises(InfraError, match="no NVIDIA driver on this machine") as caught:
        driver.open_driver()
    assert caught.value.exit_code == 3 and "\n" not in str(caught.value)


def test_child_look_up_loads_each_container_and_fetches_each_kernel(tmp_path: Path) -> None:
    made = containers()
    path = tmp_path / "lib.so"
    path.write_bytes(build_shared_object(made))
    spans = container_spans(path)
    fake = FakeCuda(
        {
            made[0]: {MANGLED_WORK: (90, 90), MANGLED_HOLLOW: (90, 90)},
            made[1]: driver.NO_BINARY_FOR_GPU,  # sm_80 cubin + compute_80 PTX, JIT off
            made[2]: driver.NO_BINARY_FOR_GPU,  # sm_100f
        }
    )
    request = {
        "library": str(path),
        "ordinal": 0,
        "containers": spans,
        "kernels": [MANGLED_WORK, MANGLED_HOLLOW, "_Z1kPf"],
    }
    answer = driver.child_look_up(request, fake)
    assert answer["found"] == {
        MANGLED_WORK: [spans[0][0], 90, 90],
        MANGLED_HOLLOW: [spans[0][0], 90, 90],
    }
    assert answer["failed"] == {
        str(spans[1][0]): "CUDA_ERROR_NO_BINARY_FOR_GPU",
        str(spans[2][0]): "CUDA_ERROR_NO_BINARY_FOR_GPU",
    }
    assert fake.unloaded == 1


# --- the parent's side: predictions, the two passes, the comparison ---------------------


def family(name: str, kernels: str, devices: tuple[str, ...] = ("9.0",)) -> FamilyRule:
    return FamilyRule(
        name=name, devices=tuple(ComputeCapability.parse(d) for d in devices), kernels=(kernels,)
    )


def test_confirm_runs_a_jit_pass_only_over_containers_the_first_could_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass 1 (JIT off) over every container; pass 2 (JIT on) over the failed ones,
    for the kernels still not found. What only pass 2 finds is a JIT load."""
    made = containers()
    path = tmp_path / "lib.so"
    path.write_bytes(build_shared_object(made))
    spans = container_spans(path)
    calls: list[tuple[bool, list[list[int]], list[str]]] = []
    launched: list[list[int]] = []

    def fake_child(verb: str, request: dict[str, Any], *, jit: bool, timeout: int) -> Any:
        if verb == "launch":  # --launch-stubs: the hollow kernel, in its container
            launched.append(request["container"])
            return {"launch": "CUDA_SUCCESS", "sync": "CUDA_ERROR_LAUNCH_FAILED"}, "guard\n"
        calls.append((jit, [list(c) for c in request["containers"]], request["kernels"]))
        if not jit:  # the sm_90a container loads; the others have no cubin for 9.0
            found = {
                name: [spans[0][0], 90, 90]
                for name in request["kernels"]
                if name in (MANGLED_WORK, MANGLED_HOLLOW)
            }
            failed = {str(o): "CUDA_ERROR_NO_BINARY_FOR_GPU" for o, _ in spans[1:]}
            return {"found": found, "failed": failed}, ""
        return {"found": {"_Z1kPf": [spans[1][0], 90, 80]}, "failed": {}}, ""

    monkeypatch.setattr(confirm_module, "run_child", fake_child)
    inventory = probe([path], jobs=1)
    rules = [
        family("work", "quant_kernel"),
        family("ptx", r"^k\(float"),
        family("late", "hollow", ("9.0",)),
    ]
    result = confirm(inventory, rules, [H100], launch_stubs=True, jobs=1)
    assert [jit for jit, _, _ in calls] == [False, True]
    assert calls[1][1] == [list(s) for s in spans[1:]]  # only the failed containers
    assert calls[1][2] == ["_Z1kPf"]  # only what pass 1 did not find
    by_name = {c.family: c for c in result}
    assert by_name["work"].status == PRESENT
    assert by_name["work"].counts() == {CUBIN: 1, JIT: 0, NONE: 0}
    assert by_name["ptx"].counts() == {CUBIN: 0, JIT: 1, NONE: 0}
    assert by_name["late"].status == HOLLOW and by_name["late"].kernels[0].hollow
    # only the hollow kernels, each in the container it was found in: the stub of
    # "late" (sm_90a cubin) and the empty PTX kernel of "ptx" (JIT)
    assert sorted(launched) == sorted([list(spans[0]), list(spans[1])])
    (stub,) = by_name["late"].stubs
    assert stub.trapped and stub.message == "guard"
    assert all(c.agrees for c in result)


def test_a_driver_that_finds_a_kernel_judged_missing_is_a_disagreement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = [build_container([EntrySpec(KIND_ELF, 100, two_kernel_cubin(100), "f")])]
    path = tmp_path / "lib.so"
    path.write_bytes(build_shared_object(made))
    spans = container_spans(path)

    def fake_child(verb: str, request: dict[str, Any], *, jit: bool, timeout: int) -> Any:
        return {"found": {MANGLED_WORK: [spans[0][0], 90, 90]}, "failed": {}}, ""

    monkeypatch.setattr(confirm_module, "run_child", fake_child)
    result = confirm(probe([path], jobs=1), [family("work", "quant_kernel")], [H100], jobs=1)
    assert result[0].status == MISSING
    assert not result[0].agrees
    assert result[0].disagreements[0].kernel == MANGLED_WORK


def test_a_driver_process_that_died_fails_the_confirmation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(build_shared_object(containers()))

    def fake_child(verb: str, request: dict[str, Any], *, jit: bool, timeout: int) -> Any:
        return {"error": "no answer within 600 s"}, ""

    monkeypatch.setattr(confirm_module, "run_child", fake_child)
    result = confirm(probe([path], jobs=1), [family("work", "quant_kernel")], [H100], jobs=1)
    assert not result[0].agrees and "no answer within 600 s" in result[0].errors[0]


def test_ctypes_buffers_carry_the_container_bytes(tmp_path: Path) -> None:
    """What cuModuleLoadData gets is the container's bytes, read from the file."""
    made = containers()
    path = tmp_path / "lib.so"
    path.write_bytes(build_shared_object(made, align=256, machine=EM_AARCH64))
    offset, length = container_spans(path)[2]
    image = driver._read_span(str(path), offset, length)
    assert isinstance(image, ctypes.Array) and bytes(image) == made[2]


class FakeStubCuda(FakeCuda):
    """A module whose one kernel takes 12 bytes of parameters and traps when run: what
    the driver returns for a CUTLASS arch-guard stub (the launch queues, the
    synchronisation reports the trap)."""

    def __init__(self, container: bytes) -> None:
        super().__init__({container: {"_Z4stubPfi": (90, 90)}})
        self.launched: list[tuple[Any, ...]] = []

    def cuFuncGetParamInfo(self, _fn: Any, index: Any, offset: Any, size: Any) -> int:
        if index.value >= 2:
            return 1  # CUDA_ERROR_INVALID_VALUE: no such parameter
        self._set(offset, [0, 8][index.value])
        self._set(size, [8, 4][index.value])
        return 0

    def cuLaunchKernel(self, fn: Any, *args: Any) -> int:
        self.launched.append(args)
        return 0

    def cuCtxSynchronize(self) -> int:
        return 719

    def cuGetErrorName(self, code: int, ref: Any) -> int:
        if code == 719:
            ref._obj.value = b"CUDA_ERROR_LAUNCH_FAILED"
            return 0
        return super().cuGetErrorName(code, ref)


def test_a_stub_is_launched_on_one_thread_with_zeroed_arguments(tmp_path: Path) -> None:
    made = containers()
    path = tmp_path / "lib.so"
    path.write_bytes(build_shared_object(made))
    offset, length = container_spans(path)[0]
    fake = FakeStubCuda(made[0])
    request = {
        "library": str(path),
        "ordinal": 0,
        "container": [offset, length],
        "kernel": "_Z4stubPfi",
    }
    answer = driver.child_launch(request, fake)
    assert answer == {
        "launch": "CUDA_SUCCESS",
        "sync": "CUDA_ERROR_LAUNCH_FAILED",
        "parameter_bytes": 12,
    }
    ((grid_x, grid_y, grid_z, block_x, block_y, block_z, shared, stream, params, extra),) = (
        fake.launched
    )
    assert (grid_x, grid_y, grid_z, block_x, block_y, block_z, shared) == (1, 1, 1, 1, 1, 1, 0)
    assert stream is None and params is None
    # the arguments go as one buffer: BUFFER_POINTER (1), its address, BUFFER_SIZE (2), END
    assert (extra[0], extra[2], extra[4]) == (1, 2, None) and extra[1]
