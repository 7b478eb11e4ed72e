"""Block-float rounding as one compiled pass over memory (used by ``deit_tt.backends.blockfloat`` when it can be built).

The host executor rounds every op's output to bfloat8_b (or bfloat4_b): hundreds of millions of values per
random:base forward. ``blockfloat``'s torch path needs about ten passes over each slice, and each pass broadcasts a
per-row factor over rows of only 16 values, which keeps torch's vectorised loops short: about 2.5 ns a value on
2 cores with AVX-512. The C function below applies ``blockfloat._round_block_float_exact``'s bit-level rules (the
rules tests/test_blockfloat.py checks against ttnn's own packing, every case included: ties, clamping, subnormals,
inf and NaN) to each row of 16 in one pass, written with GCC's vector extensions (a row is one 16 x int32 vector: one
AVX-512 register) so that it needs no intrinsics and compiles on any CPU gcc or clang targets. About 0.75 ns a
value on one core, bit for bit the same as the exact rules (tests/test_blockfloat.py runs both paths).

It is compiled with the system C compiler at first use in each process (about 0.1 s; no torch headers, called
through ctypes, which releases the GIL, so row ranges run on torch's intra-op thread count). Without a compiler,
``round_rows`` returns False and ``blockfloat`` keeps its torch path.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef float f32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));

/* One row of 16 as bfloat16 bits: sign | shared exponent | m (see blockfloat._round_block_float_exact). */
static inline u16x16 round_row(u32x16 bits, int mantissa_bits) {
    const uint32_t step_bits = 24 - mantissa_bits;
    const u32x16 half = (u32x16){0} + (1u << (step_bits - 1)), largest = (u32x16){0} + ((1u << mantissa_bits) - 1);
    u32x16 exponent = (bits >> 23) & 0xFF;
    uint32_t shared = 0;
    for (int i = 0; i < 16; ++i) shared = exponent[i] > shared ? exponent[i] : shared;
    u32x16 drop = shared - exponent;
    drop = drop + ((u32x16)(drop > 31) & (31 - drop));  /* min(drop, 31) */
    u32x16 mantissa = ((bits & 0x7FFFFF) | 0x800000) >> drop;
    u32x16 remainder = mantissa & ((1u << step_bits) - 1), m = mantissa >> step_bits;
    m += (u32x16)((remainder > half) | ((remainder == half) & (i32x16)((m & 1) == 1))) & 1;
    u32x16 over = (u32x16)(m > largest);
    m = (m & ~over) | (largest & over);
    m &= (u32x16)(exponent != 0);
    f32x16 as_float = __builtin_convertvector((i32x16)(m | 1), f32x16);
    i32x16 leading = (i32x16)(((u32x16)as_float) >> 23) - 127;  /* floor(log2 m) */
    u32x16 value = (bits & 0x80000000u) | ((shared - (u32x16)((mantissa_bits - 1) - leading)) << 23)
                 | ((m << (u32x16)(23 - leading)) & 0x7FFFFF);
    value &= (u32x16)(m != 0);
    return __builtin_convertvector(value >> 16, u16x16);
}

void round_float32_rows(const uint32_t *in, uint16_t *out, int64_t rows, int mantissa_bits) {
    for (int64_t row = 0; row < rows; ++row) {
        u32x16 bits;
        memcpy(&bits, in + 16 * row, 64);
        u16x16 result = round_row(bits, mantissa_bits);
        memcpy(out + 16 * row, &result, 32);
    }
}

void round_bfloat16_rows(const uint16_t *in, uint16_t *out, int64_t rows, int mantissa_bits) {
    for (int64_t row = 0; row < rows; ++row) {
        u16x16 half_bits;
        memcpy(&half_bits, in + 16 * row, 32);
        u16x16 result = round_row(__builtin_convertvector(half_bits, u32x16) << 16, mantissa_bits);
        memcpy(out + 16 * row, &result, 32);
    }
}
"""

_MIN_ROWS_PER_THREAD = 8192  # below this a thread's start-up costs more than its share of the work
_LOCK = threading.Lock()
_STATE: dict = {}


def _library():
    """The compiled functions, or None when there is no C compiler (or it fails). Built once per process."""
    with _LOCK:
        if "library" not in _STATE:
            _STATE["library"] = _build()
        return _STATE["library"]


def _build():
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    directory = Path(tempfile.mkdtemp(prefix="deit_tt_blockfloat_"))
    source, library_path = directory / "blockfloat.c", directory / "blockfloat.so"
    source.write_text(_SOURCE)
    command = [compiler, "-O3", "-march=native", "-shared", "-fPIC", "-o", str(library_path), str(source)]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        library = ctypes.CDLL(str(library_path))
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # the loaded library stays mapped
    for name in ("round_float32_rows", "round_bfloat16_rows"):
        getattr(library, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        getattr(library, name).restype = None
    return library


def available() -> bool:
    """True when the compiled rounding can be used in this process."""
    return _library() is not None


def round_rows(groups: torch.Tensor, out: torch.Tensor, mantissa_bits: int) -> bool:
    """Round contiguous rows of 16 (``groups``: [n, 16] float32 or bfloat16) into ``out`` ([n, 16] bfloat16).
    False (and ``out`` untouched) when the compiled function is not available."""
    library = _library()
    if library is None:
        return False
    function = library.round_float32_rows if groups.dtype == torch.float32 else library.round_bfloat16_rows
    rows = groups.shape[0]
    in_size, out_size = groups.element_size() * 16, 2 * 16
    threads = max(1, min(torch.get_num_threads(), rows // _MIN_ROWS_PER_THREAD))
    bounds = [rows * index // threads for index in range(threads + 1)]
    parts = [(groups.data_ptr() + start * in_size, out.data_ptr() + start * out_size, stop - start) for start, stop in zip(bounds[:-1], bounds[1:])]
    jobs = [_pool().submit(function, *part, mantissa_bits) for part in parts[1:]]
    function(*parts[0], mantissa_bits)  # the first share on this thread
    for job in jobs:
        job.result()
    return True


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """Worker threads for all but the first share of rows; a forked child (a data-loading worker) makes its own,
    since it inherits the pool but not its threads."""
    with _LOCK:
        if _STATE.get("pool_pid") != os.getpid():
            _STATE["pool"] = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads() - 1), thread_name_prefix="blockfloat")
            _STATE["pool_pid"] = os.getpid()
        return _STATE["pool"]
