"""Device and precision choice, memory facts and freeing, out-of-memory recognition."""

from __future__ import annotations

import ctypes
import gc
import os
import sys

from ..config import Settings


def pick_device(settings: Settings):
    """CUDA, then MPS, then CPU; ``--use-cpu all`` and ``--device`` override."""
    import torch

    if settings.use_cpu == "all":
        return torch.device("cpu")
    if settings.device and settings.device != "auto":
        dev = torch.device(settings.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"--device {settings.device}: this torch build sees no CUDA GPU")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RuntimeError(f"--device {settings.device}: MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(settings: Settings, device):
    """fp16 (or bf16) on a GPU; fp32 on the CPU always, so "slow_conv2d_cpu not implemented for
    'Half'" cannot happen; fp32 everywhere with --no-half / --precision full."""
    import torch

    if device.type == "cpu" or settings.full_precision:
        return torch.float32
    if settings.half_dtype == "bf16":
        return torch.bfloat16
    return torch.float16


def cpu():
    import torch

    return torch.device("cpu")


def float32():
    import torch

    return torch.float32


def is_accelerator(device) -> bool:
    return device.type in ("cuda", "mps")


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text
    return False


def free_memory() -> None:
    """Give freed tensors back: Python's cycles, the CUDA cache, and glibc's heap (without
    malloc_trim, RSS stays high after a model is dropped and seems to grow on every switch)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    if hasattr(torch, "mps") and hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


def total_ram_bytes() -> int:
    try:
        import psutil

        return psutil.virtual_memory().total
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_ram_bytes() -> int:
    """RAM the system can give without swapping (MemAvailable)."""
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def ram_reserve_bytes() -> int:
    """RAM kept free for the work itself and the rest of the machine: the cache never eats into it
    (15% of RAM, at least 2 GB)."""
    return max(2 * 1024**3, int(total_ram_bytes() * 0.15))


def default_cache_budget() -> int:
    """The RAM cache's budget without --ram-cache-gb: what is available now less the reserve, so that
    two SD 1.5 models (about 4 GB each in fp32) stay cached on a 24 GB machine; never less than a
    quarter of RAM. The cache also gives models back whenever available RAM falls under the reserve."""
    return max(total_ram_bytes() // 4, available_ram_bytes() - ram_reserve_bytes())


def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def module_bytes(pipe) -> int:
    """Bytes held by a pipeline's weights and buffers (shared tensors counted once)."""
    import torch

    seen, total = set(), 0
    for comp in getattr(pipe, "components", {}).values():
        if isinstance(comp, torch.nn.Module):
            for t in list(comp.parameters()) + list(comp.buffers()):
                key = t.data_ptr()
                if key not in seen:
                    seen.add(key)
                    total += t.numel() * t.element_size()
    return total


def memory_report(device) -> dict:
    import torch

    report = {"ram_rss_bytes": rss_bytes(), "ram_total_bytes": total_ram_bytes()}
    if device.type == "cuda" and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(device)
        report.update(vram_total_bytes=total, vram_free_bytes=free,
                      vram_allocated_bytes=torch.cuda.memory_allocated(device),
                      vram_peak_bytes=torch.cuda.max_memory_allocated(device))
    return report
