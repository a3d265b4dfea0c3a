"""The machine a benchmark ran on, as one block printed above its table.

A timing means little without the CPU it came from: the vector units (AVX2, AVX-512,
bfloat16 dot products, AMX) decide which kernels torch and oneDNN run, ``ATEN_CPU_CAPABILITY``
can force lower ones, and the BLAS behind ``torch.mm`` differs between builds.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""The instruction-set flags that change which retrieval and matmul kernels run."""


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    return (
        model.group(1).strip() if model else platform.machine(),
        set(flags.group(1).split()) if flags else set(),
    )


def _blas() -> str:
    config = torch.__config__.show()
    found = re.search(r"BLAS_INFO=(\w+)", config)
    name = found.group(1) if found else "unknown"
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    return f"{name} {mkl.group(1)}" if name == "mkl" and mkl else name


def machine_line() -> str:
    """``cpu: <model>; flags: ...; torch <v>, capability <C>, BLAS <b>, <n> threads``."""
    model, flags = _cpuinfo()
    have = " ".join(f if f in flags else f"-{f}" for f in FLAGS) if flags else "unknown"
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    capability = torch.backends.cpu.get_cpu_capability()
    capability += f" (ATEN_CPU_CAPABILITY={forced})" if forced else ""
    onednn = "oneDNN" if torch.backends.mkldnn.is_available() else "no oneDNN"  # type: ignore[no-untyped-call]
    return (
        f"cpu: {model}, {os.cpu_count()} cores; flags: {have}; torch {torch.__version__}, "
        f"capability {capability}, BLAS {_blas()}, {onednn}, {torch.get_num_threads()} threads"
    )


def print_machine() -> None:
    """Print :func:`machine_line` (every benchmark does, above its table)."""
    print(machine_line(), flush=True)
