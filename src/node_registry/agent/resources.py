"""What the machine offers, detected: CPU count, memory, NVIDIA GPUs, as Kubernetes quantities.

The kubelet reports a node's capacity itself rather than trusting a hand-written file; the
node runtime does the same, and the passport file may still override any value (an operator
who reserves half the machine for something else writes ``cpu: "2"``).

Memory is rounded *down* to whole MiB (and written in Gi when that is exact): a node must not
advertise capacity it does not have, and ``16012Mi`` compares exactly in ``Gt``/``Lt``
selectors where a byte count would only add noise. GPUs are counted through NVML when the
``pynvml`` module (package ``nvidia-ml-py``) is installed; without it, or without a driver or
a GPU, there is no ``gpu`` entry at all rather than ``gpu: "0"``, so that ``gpu`` selectors
keep meaning "has GPUs".
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

import psutil

log = logging.getLogger("node_registry.agent")

CPU = "cpu"
MEMORY = "memory"
GPU = "gpu"
_MI = 1024**2

#: A detector returns resource name -> Kubernetes quantity.
Detector = Callable[[], dict[str, str]]


def memory_quantity(total_bytes: int) -> str:
    """``total_bytes`` rounded down to MiB, as ``"15Gi"`` when whole GiB, else ``"16012Mi"``."""
    mebibytes = max(total_bytes, 0) // _MI
    if mebibytes and mebibytes % 1024 == 0:
        return f"{mebibytes // 1024}Gi"
    return f"{mebibytes}Mi"


def cpu_count() -> int | None:
    """Logical CPUs, or None when the platform does not say."""
    return psutil.cpu_count(logical=True) or os.cpu_count()


def gpu_count(nvml: Any | None = None) -> int:
    """NVIDIA GPUs NVML sees; 0 without ``pynvml``, a driver or a device.

    ``nvml`` is the ``pynvml`` module; None imports it (tests pass a stand-in).
    """
    if nvml is None:
        try:
            # importlib rather than ``import pynvml``: the module is optional and untyped.
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return 0
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError and its many subclasses: no driver, no device
        log.debug("NVML is not usable here: %s", exc)
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        log.debug("NVML could not count devices: %s", exc)
        return 0
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("NVML shutdown failed: %s", exc)


def detect_resources(*, nvml: Any | None = None) -> dict[str, str]:
    """This machine's ``cpu``, ``memory`` and (when there are any) ``gpu``, as quantities."""
    found: dict[str, str] = {}
    cpus = cpu_count()
    if cpus:
        found[CPU] = str(cpus)
    found[MEMORY] = memory_quantity(psutil.virtual_memory().total)
    gpus = gpu_count(nvml)
    if gpus > 0:
        found[GPU] = str(gpus)
    return found
