"""The probe engines: the native fatbin reader, and NVIDIA's cuobjdump parsed."""

from typing import Literal

Engine = Literal["native", "cuobjdump"]
ENGINES: tuple[Engine, ...] = ("native", "cuobjdump")
DEFAULT_ENGINE: Engine = "native"
