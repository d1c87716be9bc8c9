"""Fast inference for a ``TrueVAREmitterPredictor``: precision, memory layout, compilation.

``InferenceRunner(net, device, precision, compile)`` is what prediction calls instead of the bare
network. It runs without autograd, in channels-last memory, in bfloat16 where the hardware has fast
bfloat16 (CUDA; CPUs with AMX or AVX-512 BF16), with the heads kept in float32
(``TrueVAREmitterPredictor._head``), and optionally through ``torch.compile``.

bfloat16 is a bfloat16 copy of the network (the caller's network is left as it is), not autocast:
autocast runs the channel norms in float32 and mixes dtypes in the AdaLN modulations, and the
conversions back and forth cost more than the convolutions on a CPU. In that copy the MLPs' tanh
GELU becomes the exact GELU (at most 5e-4 apart, below bfloat16's resolution for activations
above 0.1; ~2x faster on a CPU). Measured on 64 x 64 frames, 2 threads of an AVX-512 BF16 CPU,
network alone: fp32 139, bf16 autocast 183, this 243 frames/s.

On Linux (glibc) the runner also keeps freed memory in the process (:func:`keep_freed_memory`):
glibc returns every large tensor's memory to the system when it is freed, so the next one of the
same size page-faults its way back in; at 64 x 64 x 16 frames that tripled the time of a conv-GELU-
conv sequence. PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for the same reason.

With ``sparse``, the last level is computed only around the cells where the level before sees
emitters (``TrueVAREmitterPredictor.forward``'s ``sparse_gate``, ``SPARSE_GATE``): the same
numbers at those cells, probability ~0 elsewhere; on sparse frames most of the finest level's
work is skipped. Not with ``compile`` (the number of cells changes from batch to batch).

A compiled graph is specialised to one input shape, so batches are padded to the runner's batch
size and the padding is dropped from the outputs: a stack compiles once per frame size.
"""

from __future__ import annotations

import copy
import ctypes
import itertools
import platform
import weakref

import torch
from torch import nn

from ..errors import InputError
from .sparse import SPARSE_GATE
from .var import TrueVAREmitterPredictor

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" takes CUDA, then Apple MPS, then the CPU; an unavailable explicit device is an error."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for, but no CUDA GPU is available (use 'auto' or 'cpu')")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' was asked for, but Apple MPS is not available (use 'auto' or 'cpu')")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise InputError(f"unknown device {name!r}: choose auto, cpu, cuda or mps")
    return torch.device(name)


# glibc mallopt parameters: serve allocations up to this size from the heap (not fresh mmaps) and
# keep up to this much freed memory at the heap's top instead of returning it to the system.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_ALLOCATION_LIMIT = 256 << 20
KEEP_FREED = 1 << 30
_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Make glibc reuse freed tensor memory instead of unmapping it (once per process; Linux/glibc
    only, else nothing). Returns whether the setting is in effect. Costs: the process keeps up to
    ``KEEP_FREED`` of freed memory for reuse instead of returning it to the system."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, HEAP_ALLOCATION_LIMIT) == 1
        ok = ok or libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1  # older glibc: at most 32 MiB
        _allocator_tuned = ok and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED) == 1
    except (OSError, AttributeError):
        return False
    return _allocator_tuned


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bfloat16 natively (AMX / AVX-512 BF16), so bf16 is faster than fp32."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        if device.type == "mps":
            raise InputError("bf16 is not supported on Apple MPS here: use fp32 or auto")
        return torch.bfloat16
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return torch.float32


def bfloat16_copy(net: TrueVAREmitterPredictor) -> TrueVAREmitterPredictor:
    """The network in bfloat16 for inference, heads in float32, exact GELU (see the module doc)."""
    fast = copy.deepcopy(net).to(torch.bfloat16)
    if isinstance(getattr(fast, "heads", None), nn.Module):
        fast.heads.float()
    for module in fast.modules():
        if isinstance(module, nn.GELU):
            module.approximate = "none"
    return fast


class InferenceRunner:
    """``runner(x, num_levels)`` -> the network's per-level outputs, computed fast.

    x: (B, window, H, W) photons on any device; outputs are float32 dicts on ``device``.
    """

    def __init__(
        self,
        net: TrueVAREmitterPredictor,
        device: torch.device,
        precision: str = "auto",
        compile: bool = False,
        sparse: bool = False,
        local_attention: bool = False,
    ):
        self.device = device
        self.dtype = resolve_precision(precision, device)
        if device.type == "cpu":
            keep_freed_memory()
        net = net.to(device).eval()
        if self.dtype == torch.bfloat16:
            net = bfloat16_copy(net)
        self.net = net.to(memory_format=torch.channels_last)
        self.compiled = compile
        # the sparse last level's cell count depends on the data: not for a compiled graph
        self.sparse_gate = SPARSE_GATE if (sparse and not compile) else None
        self.local_attention = local_attention
        self._forward = torch.compile(self.net, dynamic=False) if compile else self.net
        self._batch = 0  # compiled: the padded batch size, fixed by the first call

    @property
    def precision(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def __call__(self, x: torch.Tensor, num_levels: int) -> list[dict]:
        B = x.shape[0]
        if self.compiled:  # one shape per frame size: pad the batch, drop the padding after
            self._batch = max(self._batch, B)
            if B < self._batch:
                x = torch.cat([x, x[-1:].expand(self._batch - B, *x.shape[1:])])
        x = x.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            outputs = self._forward(
                x, num_levels=num_levels, sparse_gate=self.sparse_gate, local_attention=self.local_attention
            )
        if x.shape[0] != B:
            outputs = [{k: (v[:B] if torch.is_tensor(v) else v) for k, v in o.items()} for o in outputs]
        return outputs


_runners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_state(net: nn.Module) -> tuple:
    """Changes when any weight is replaced or changed in place (optimizer steps, load_state_dict)."""
    return tuple((id(t), t._version) for t in itertools.chain(net.parameters(), net.buffers()))


def runner_for(net: TrueVAREmitterPredictor, device: torch.device, **options) -> InferenceRunner:
    """An :class:`InferenceRunner` for ``net`` (``options``: its keyword arguments); one that runs a
    bfloat16 copy is made once and reused while the net's weights stay the same (the copy costs
    ~30 ms on a 2-core CPU, 7 % of a 100-frame run). Runners of ``net`` itself are cheap and not kept
    (they would keep ``net`` alive)."""
    key = (str(device), tuple(sorted(options.items())))
    cached = _runners.setdefault(net, {})
    if key in cached and cached[key][0] == _weights_state(net):
        return cached[key][1]
    runner = InferenceRunner(net, device, **options)
    if runner.net is not net:
        cached[key] = (_weights_state(net), runner)  # after: the runner may move the net
    return runner
