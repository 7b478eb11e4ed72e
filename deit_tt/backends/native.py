"""The host executor's hottest loops compiled from C: block-float rounding, the tensix linear and softmax exps.

They are compiled with the system C compiler at first use (0.4 s; no torch headers) into one library kept in the
cache folder for this source, compiler and CPU (``settings.CACHE``/native), which later processes load. They are
called through ctypes, which releases the GIL, so ranges of rows or columns run on torch's intra-op threads. Where
a function cannot be built, its wrapper returns None or False and the caller keeps its torch path; the tests run
both paths and require them to agree bit for bit.

**Block-float rounding** (``round_rows``, used by ``deit_tt.backends.blockfloat``). The host executor rounds every
op's output to bfloat8_b (or bfloat4_b): hundreds of millions of values per random:base forward. The torch path
needs about ten passes over each slice, and each pass broadcasts a per-row factor over rows of only 16 values,
which keeps torch's vectorised loops short: about 2.5 ns a value on 2 cores with AVX-512. The C function applies
``blockfloat._round_block_float_exact``'s bit-level rules (every case included: ties, clamping, subnormals, inf
and NaN) to each row of 16 in one pass, written with GCC's vector extensions (a row is one 16 x int32 vector) so
that it compiles on any CPU gcc or clang targets: about 0.75 ns a value on one core.

**The tensix linear** (``blocked_linear``, used by ``deit_tt.backends.tensix_numerics.blocked_matmul``). A matmul
whose partial sums stay bfloat16 adds its K blocks one after the other, each block's product and each sum rounded
to bfloat16. In torch that is one GEMM per block and one bfloat16 add per block, each add a pass over the output
(random:base: 8 blocks per linear). The C kernel keeps a 4 x 96 tile of the output in registers through all
blocks: each block's dot products accumulate in float32 with AVX512-BF16's ``vdpbf16ps`` (the instruction oneDNN's
bfloat16 GEMM uses on such a CPU, pairs of products in the same order, so each block rounds to the same bfloat16
as torch's GEMM: tests/backends/test_native.py), are rounded to bfloat16 and added to the running sum, then the
bias; the tile is written once.

**The tensix softmax's exps** (``softmax_exps``, used by ``tensix_numerics.softmax``): scale, mask, row max and
the approximate exp, each result rounded to bfloat16 as the torch path rounds it, in one pass per row instead of
a dozen passes over the scores. It is built with the linear, only where the compiler targets AVX512-BF16.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from deit_tt import settings

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef float f32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));

/* -- block-float rounding ---------------------------------------------------------------------------------- */

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

/* -- the tensix linear (AVX512-BF16) ------------------------------------------------------------------------ */
#if defined(__AVX512BF16__)
#include <immintrin.h>
#define TILE_ROWS 4
#define TILE_COLUMNS 96
#define VECTORS (TILE_COLUMNS / 16)

/* To bfloat16, nearest even, kept as float32; NaN as 0xFFFF, as ATen's AVX-512 cvtfp32_bf16 writes it. */
static inline __m512 to_bfloat16(__m512 x) {
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
    __m512i bits = _mm512_castps_si512(x);
    __m512i bias = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7FFF));
    __m512i rounded = _mm512_and_si512(_mm512_add_epi32(bits, bias), high);
    return _mm512_castsi512_ps(_mm512_mask_blend_epi32(_mm512_cmp_ps_mask(x, x, _CMP_ORD_Q), high, rounded));
}

static inline __m512 widen(const uint16_t *bfloat16) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)bfloat16)), 16));
}

/* A float32 vector holding bfloat16 values, stored as 16 bfloat16. */
static inline void store(uint16_t *bfloat16, __m512 x) {
    _mm256_storeu_si256((__m256i *)bfloat16, _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(x), 16)));
}

/* out [rows x columns] = sum over K blocks of (a [rows x depth] @ w), each block and each sum rounded to bfloat16,
   then + bias. pairs: w packed as [depth / 2][columns] 32-bit pairs (w[2k][n], w[2k + 1][n]). Computes the column
   tiles from first_column to last_column. rows % TILE_ROWS == 0, columns % TILE_COLUMNS == 0, block_depth even. */
void blocked_linear(const uint16_t *a, const uint32_t *pairs, const uint16_t *bias, uint16_t *out, int64_t rows,
                    int64_t columns, int64_t depth, int64_t block_depth, int64_t first_column, int64_t last_column) {
    for (int64_t column = first_column; column < last_column; column += TILE_COLUMNS) {
        for (int64_t row = 0; row < rows; row += TILE_ROWS) {
            __m512 total[TILE_ROWS][VECTORS];
            for (int64_t block = 0; block < depth; block += block_depth) {
                __m512 sum[TILE_ROWS][VECTORS];
                for (int i = 0; i < TILE_ROWS; ++i)
                    for (int j = 0; j < VECTORS; ++j) sum[i][j] = _mm512_setzero_ps();
                for (int64_t k = block; k < block + block_depth; k += 2) {
                    __m512bh w[VECTORS];
                    for (int j = 0; j < VECTORS; ++j) w[j] = (__m512bh)_mm512_loadu_si512(pairs + (k / 2) * columns + column + 16 * j);
                    for (int i = 0; i < TILE_ROWS; ++i) {
                        uint32_t pair;
                        memcpy(&pair, a + (row + i) * depth + k, 4);
                        __m512bh a_pair = (__m512bh)_mm512_set1_epi32((int)pair);
                        for (int j = 0; j < VECTORS; ++j) sum[i][j] = _mm512_dpbf16_ps(sum[i][j], a_pair, w[j]);
                    }
                }
                for (int i = 0; i < TILE_ROWS; ++i)
                    for (int j = 0; j < VECTORS; ++j)
                        total[i][j] = block == 0 ? to_bfloat16(sum[i][j]) : to_bfloat16(_mm512_add_ps(total[i][j], to_bfloat16(sum[i][j])));
            }
            for (int i = 0; i < TILE_ROWS; ++i) {
                for (int j = 0; j < VECTORS; ++j) {
                    __m512 value = bias ? to_bfloat16(_mm512_add_ps(total[i][j], widen(bias + column + 16 * j))) : total[i][j];
                    store(out + (row + i) * columns + column + 16 * j, value);
                }
            }
        }
    }
}

/* The approximate softmax's exps (see tensix_numerics.softmax), rows of width values: v = x (x scale) (+ mask row), each
   rounded to bfloat16; the row max; exp_approx(v - max) with v - max rounded to bfloat16, the result rounded to
   bfloat16. mask row of row r: r / rows_per_mask_row. exp_approx is Schraudolph's (tensix_numerics.fast_exp):
   constants[0..2] = threshold, A, B - C. first_row..last_row of the rows are computed. width % 16 == 0. */
void softmax_exps(const uint16_t *x, const uint16_t *mask, int64_t rows_per_mask_row, float scale, int use_scale,
                  const float *constants, uint16_t *out, int64_t width, int64_t first_row, int64_t last_row) {
    const __m512 threshold = _mm512_set1_ps(constants[0]), a = _mm512_set1_ps(constants[1]), b_minus_c = _mm512_set1_ps(constants[2]);
    for (int64_t row = first_row; row < last_row; ++row) {
        const uint16_t *in = x + row * width;
        uint16_t *exps = out + row * width;
        __m512 largest = _mm512_set1_ps(-__builtin_inff());
        for (int64_t column = 0; column < width; column += 16) {
            __m512 value = widen(in + column);
            if (use_scale) value = to_bfloat16(_mm512_mul_ps(value, _mm512_set1_ps(scale)));
            if (mask) value = to_bfloat16(_mm512_add_ps(value, widen(mask + (row / rows_per_mask_row) * width + column)));
            largest = _mm512_max_ps(largest, value);
            store(exps + column, value);
        }
        const __m512 row_max = _mm512_set1_ps(_mm512_reduce_max_ps(largest));
        for (int64_t column = 0; column < width; column += 16) {
            __m512 shifted = to_bfloat16(_mm512_sub_ps(widen(exps + column), row_max));
            __m512 mad = _mm512_add_ps(_mm512_mul_ps(_mm512_max_ps(threshold, shifted), a), b_minus_c);
            mad = _mm512_add_ps(_mm512_min_ps(_mm512_max_ps(mad, _mm512_setzero_ps()), _mm512_set1_ps(65535.0f)), _mm512_set1_ps(8388608.0f));
            store(exps + column, to_bfloat16(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(mad), 15))));
        }
    }
}
#endif
"""

# The linear kernel's output tile (TILE_ROWS x TILE_COLUMNS in the C source).
LINEAR_TILE = (4, 96)
# Dot products up to this long are summed by oneDNN's bfloat16 GEMM (AVX512-BF16, torch 2.14) in the kernel's order
# (checked once per process, ``tensix_kernels_available``); longer ones in an order of its own (1.3 in 10,000 outputs
# differ at K = 768), so longer K blocks keep torch's GEMM: the host's results do not depend on the path.
GEMM_K_IN_ORDER = 512
_MIN_VALUES_PER_THREAD = 131072  # below this a thread's start-up costs more than its share of the work
_LOCK = threading.Lock()
_STATE: dict = {}


def _library():
    """The compiled functions, or None when there is no C compiler (or it fails). Loaded (or built) once per process."""
    with _LOCK:
        if "library" not in _STATE:
            _STATE["library"] = _build()
        return _STATE["library"]


def _build():
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    flags = ["-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC"]
    cached = _cache_path(compiler, flags)
    library = None
    if cached is not None and cached.exists():
        try:
            library = ctypes.CDLL(str(cached))
        except OSError:  # damaged: built again below
            pass
    if library is None:
        library = _compile(compiler, flags, cached)
    if library is None:
        return None
    pointer, count = ctypes.c_void_p, ctypes.c_int64
    for name in ("round_float32_rows", "round_bfloat16_rows"):
        getattr(library, name).argtypes = [pointer, pointer, count, ctypes.c_int]
        getattr(library, name).restype = None
    if hasattr(library, "blocked_linear"):  # built only for AVX512-BF16, with softmax_exps
        library.blocked_linear.argtypes = [pointer, pointer, pointer, pointer] + [count] * 6
        library.softmax_exps.argtypes = [pointer, pointer, count, ctypes.c_float, ctypes.c_int, pointer, pointer, count, count, count]
        for function in (library.blocked_linear, library.softmax_exps):
            function.restype = None
    return library


def _compile(compiler: str, flags: list[str], cached: Path | None):
    """Compile ``_SOURCE`` and load it; the library is moved to ``cached`` (atomically) when that is given and writable."""
    directory = Path(tempfile.mkdtemp(prefix="deit_tt_native_"))
    source, library_path = directory / "native.c", directory / "native.so"
    source.write_text(_SOURCE)
    try:
        subprocess.run([compiler, *flags, "-o", str(library_path), str(source)], check=True, capture_output=True, timeout=120)
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                os.replace(library_path, cached)
                library_path = cached
            except OSError:  # a read-only cache: this process keeps its own copy
                pass
        return ctypes.CDLL(str(library_path))
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # a loaded library stays mapped


def _cache_path(compiler: str, flags: list[str]) -> Path | None:
    """Where the library built from this source, compiler, flags and CPU is kept (under ``settings.CACHE``), so that
    only the first process compiles it (0.4 s). None where the CPU's features cannot be read (Linux's /proc/cpuinfo):
    ``-march=native`` makes the library specific to them."""
    try:
        cpu_flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        compiler_identity = f"{os.path.realpath(compiler)}:{os.stat(compiler).st_mtime_ns}"
    except (OSError, StopIteration):
        return None
    key = hashlib.sha256("\n".join([_SOURCE, compiler_identity, " ".join(flags), cpu_flags]).encode()).hexdigest()[:16]
    return settings.CACHE.path() / "native" / f"native-{key}.so"


def available() -> bool:
    """True when the compiled block-float rounding can be used in this process."""
    return _library() is not None


def tensix_kernels_available() -> bool:
    """True when the compiled tensix linear and softmax exps can be used in this process: built (a C compiler
    targeting AVX512-BF16) and, checked once, summing a dot product of ``GEMM_K_IN_ORDER`` as torch's bfloat16 GEMM
    does here (on a CPU where oneDNN takes another kernel, AMX for one, it may not)."""
    if "tensix" not in _STATE:
        _STATE["tensix"] = hasattr(_library(), "blocked_linear") and _sums_as_torch_does()
    return _STATE["tensix"]


def _sums_as_torch_does() -> bool:
    generator = torch.Generator().manual_seed(0)
    activations = torch.randn(LINEAR_TILE[0] * 4, GEMM_K_IN_ORDER, generator=generator).bfloat16()
    weight = (torch.randn(GEMM_K_IN_ORDER, LINEAR_TILE[1], generator=generator) / 16).bfloat16()
    out = torch.empty(activations.shape[0], weight.shape[1], dtype=torch.bfloat16)
    _run_linear(activations, weight_pairs(weight), None, GEMM_K_IN_ORDER, out, 0, 1)
    return torch.equal(out, activations @ weight)


def round_rows(groups: torch.Tensor, out: torch.Tensor, mantissa_bits: int) -> bool:
    """Round contiguous rows of 16 (``groups``: [n, 16] float32 or bfloat16) into ``out`` ([n, 16] bfloat16).
    False (and ``out`` untouched) when the compiled function is not available."""
    library = _library()
    if library is None:
        return False
    function = library.round_float32_rows if groups.dtype == torch.float32 else library.round_bfloat16_rows
    in_size, out_size = groups.element_size() * 16, 2 * 16

    def rows(start: int, stop: int) -> None:
        function(groups.data_ptr() + start * in_size, out.data_ptr() + start * out_size, stop - start, mantissa_bits)

    _in_parallel(rows, groups.shape[0], 16)
    return True


def weight_pairs(weight: torch.Tensor) -> torch.Tensor:
    """A bfloat16 weight [K, N] as ``blocked_linear`` reads it: [K/2, N, 2], rows 2k and 2k+1 side by side."""
    K, N = weight.shape
    return weight.reshape(K // 2, 2, N).transpose(1, 2).contiguous()


def linear_fits(rows: int, K: int, N: int, block_k: int) -> bool:
    """True when ``blocked_linear`` is built and takes these shapes: whole output tiles (rows a multiple of 4, N of
    96) and whole pairs of K."""
    tile_rows, tile_columns = LINEAR_TILE
    return tensix_kernels_available() and rows % tile_rows == 0 and N % tile_columns == 0 and K % block_k == 0 and block_k % 2 == 0


def blocked_linear(activations: torch.Tensor, pairs: torch.Tensor, bias: torch.Tensor | None, block_k: int) -> torch.Tensor:
    """bfloat16 ``activations [..., K] @ weight [K, N]`` summed over K blocks of ``block_k``, each block's product
    and each running sum rounded to bfloat16, then ``+ bias`` [N] rounded the same way. ``pairs`` is
    ``weight_pairs(weight)``; the shapes must pass ``linear_fits``."""
    K = activations.shape[-1]
    N = pairs.shape[1]
    rows = activations.numel() // K
    if not linear_fits(rows, K, N, block_k):
        raise ValueError(f"the compiled linear does not take {rows} x {K} @ {K} x {N} in K blocks of {block_k}")
    activations = activations.contiguous()
    bias = None if bias is None else bias.reshape(-1).contiguous()
    out = torch.empty(*activations.shape[:-1], N, dtype=torch.bfloat16)
    _in_parallel(lambda start, stop: _run_linear(activations, pairs, bias, block_k, out, start, stop), N // LINEAR_TILE[1], rows * LINEAR_TILE[1])
    return out


def _run_linear(activations, pairs, bias, block_k: int, out: torch.Tensor, first_tile: int, last_tile: int) -> None:
    """The kernel on column tiles first_tile..last_tile of ``out`` (contiguous tensors; no checks)."""
    K, N = activations.shape[-1], out.shape[-1]
    bias_pointer = None if bias is None else bias.data_ptr()
    first_column, last_column = first_tile * LINEAR_TILE[1], last_tile * LINEAR_TILE[1]
    _library().blocked_linear(activations.data_ptr(), pairs.data_ptr(), bias_pointer, out.data_ptr(), out.numel() // N, N, K, block_k, first_column, last_column)


def softmax_exps(x: torch.Tensor, scale: float | None, mask: torch.Tensor | None, constants: tuple[float, float, float]) -> torch.Tensor | None:
    """The approximate softmax's exps of bfloat16 ``x`` [..., W] (see the C source): one pass per row instead of a
    dozen torch passes. ``constants``: the approximate exp's (threshold, A, B - C). ``mask`` broadcasts over x as
    [B or 1, 1, ..., W] does. None where the kernel is not built or the shapes do not fit (W a multiple of 16)."""
    width = x.shape[-1]
    rows = x.numel() // width
    if not tensix_kernels_available() or x.dtype != torch.bfloat16 or width % 16:
        return None
    rows_per_mask_row = rows
    if mask is not None:
        if mask.dtype != torch.bfloat16 or mask.dim() != x.dim() or mask.shape[-1] != width or any(size != 1 for size in mask.shape[1:-1]) or mask.shape[0] not in (1, x.shape[0]):
            return None
        rows_per_mask_row = rows // mask.shape[0]
        mask = mask.contiguous()
    x = x.contiguous()
    out = torch.empty_like(x)
    table = torch.tensor(constants, dtype=torch.float32)
    arguments = (x.data_ptr(), None if mask is None else mask.data_ptr(), rows_per_mask_row, scale or 0.0, scale is not None, table.data_ptr(), out.data_ptr(), width)
    _in_parallel(lambda start, stop: _library().softmax_exps(*arguments, start, stop), rows, width)
    return out


def _in_parallel(function, items: int, values_per_item: int) -> None:
    """``function(start, stop)`` over ``items`` split evenly over torch's intra-op threads (no more threads than
    have ``_MIN_VALUES_PER_THREAD`` values each); the first share runs on this thread."""
    threads = max(1, min(torch.get_num_threads(), items, items * values_per_item // _MIN_VALUES_PER_THREAD))
    bounds = [items * index // threads for index in range(threads + 1)]
    jobs = [_pool().submit(function, start, stop) for start, stop in zip(bounds[1:-1], bounds[2:])]
    function(bounds[0], bounds[1])
    for job in jobs:
        job.result()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """Worker threads for all but the first share of the work; a forked child (a data-loading worker) makes its own,
    since it inherits the pool but not its threads."""
    with _LOCK:
        if _STATE.get("pool_pid") != os.getpid():
            _STATE["pool"] = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads() - 1), thread_name_prefix="native")
            _STATE["pool_pid"] = os.getpid()
        return _STATE["pool"]
