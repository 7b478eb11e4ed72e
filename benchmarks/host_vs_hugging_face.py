"""Time the host executor, ideal and tensix numerics, against Hugging Face eager bf16 in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/host_vs_hugging_face.py [--model random:base ...] [--batch 8]
        [--policy bf8] [--rounds 3] [--profile]

Per model, the two host pipelines and Hugging Face's model in bfloat16 are built and warmed up first; then each
round times one forward of each, in turn, so load that comes and goes on a shared machine falls on all three.
Prints the best time of each and the ratios host / HF bf16 (issue 25: ideal <= 1.3, tensix <= 1.6 for
random:base, batch 8, bf8, on a CPU with a native bfloat16 GEMM), with the CPU capability and the load average.
The host ``tensix`` numerics is a model of a Tensix core built from sources, not yet compared with a card.

``--profile`` also runs one forward of each numerics under torch.profiler and prints where the time goes: by
ttnn op (the executor's ``run``) and by primitive (GEMM, block-float rounding, softmax, LayerNorm, copies and
layout, other elementwise work, and the compiled kernels of ``deit_tt.backends.native``: block-float rounding,
the tensix linear, the tensix softmax's exps), each aten op's own time attributed to the innermost of these it
runs in, and each compiled kernel's by a profiler scope around it.

OpenMP's threads wait for work passively here (``OMP_WAIT_POLICY=PASSIVE`` unless set otherwise, before torch
loads): with the default spinning wait, on 2 cores shared with other processes, a 2-thread host forward of
random:small took 28-38 s against 2.8 s passive (1 thread: 2.4-3.0 s either way), because the host executor
runs thousands of short parallel regions and each one waits for a descheduled spinning thread.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when OpenMP loads with torch (see above)

import torch  # noqa: E402
import ttnn  # noqa: E402

from deit_tt.backends import native  # noqa: E402
from deit_tt.backends import executor as executor_module  # noqa: E402
from deit_tt.backends import tensix_numerics  # noqa: E402
from deit_tt.backends.executor import HostExecutor, native_bfloat16_matmul  # noqa: E402
from deit_tt.checkpoints.loading import load_checkpoint  # noqa: E402
from deit_tt.pipeline import build_pipeline  # noqa: E402

TARGET_RATIOS = {"ideal": 1.3, "tensix": 1.6}
NUMERICS = ("ideal", "tensix")


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def interleaved_best(functions: dict, rounds: int) -> dict[str, float]:
    """Best time of each function over ``rounds`` rounds, one call of each per round (after one warm-up call)."""
    for function in functions.values():
        function()
    seconds = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            seconds[name].append(timed(function))
    return {name: min(times) for name, times in seconds.items()}


# -- profile --------------------------------------------------------------------------------------

# aten ops by primitive (their own time); anything else is "elementwise / other".
_PRIMITIVE_OF_ATEN = {
    "GEMM": {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear", "aten::_addmm_activation"},
    "softmax": {"aten::_softmax", "aten::softmax"},
    "LayerNorm": {"aten::native_layer_norm", "aten::layer_norm"},
    "copies / layout": {
        "aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::constant_pad_nd", "aten::pad",
        "aten::_to_copy", "aten::to", "aten::index", "aten::index_put_", "aten::empty", "aten::empty_like",
        "aten::empty_strided", "aten::zeros", "aten::new_zeros", "aten::permute", "aten::reshape", "aten::view",
        "aten::slice", "aten::select", "aten::transpose", "aten::t", "aten::_unsafe_view", "aten::expand",
        "aten::unsqueeze", "aten::squeeze", "aten::as_strided", "aten::split", "aten::narrow", "aten::flatten",
        "aten::unflatten", "aten::detach", "aten::alias", "aten::resize_", "aten::fill_", "aten::zero_",
    },
}
_BLOCK_FLOAT_SCOPE = "block-float rounding"
_BFLOAT16_SCOPE = "bfloat16 rounding"
# The tensix numerics' compiled kernels (deit_tt.backends.native), each its own primitive.
_COMPILED_SCOPES = {"blocked_linear": "GEMM + K-block sums (compiled)", "softmax_exps": "softmax exps (compiled)"}
_SCOPES = {_BLOCK_FLOAT_SCOPE, _BFLOAT16_SCOPE, *_COMPILED_SCOPES.values()}


def _labelled(function, label: str):
    def wrapper(*args, **kwargs):
        with torch.profiler.record_function(label):
            return function(*args, **kwargs)

    return wrapper


class _Labels:
    """record_function scopes around each executor op and each storage rounding, for the duration of a profile."""

    def __enter__(self):
        self.patched = []
        run = HostExecutor.run

        def labelled_run(executor, op, *args, **kwargs):
            with torch.profiler.record_function(f"op::{getattr(op, '__name__', str(op))}"):
                return run(executor, op, *args, **kwargs)

        self._patch(HostExecutor, "run", labelled_run)
        for module in (executor_module, tensix_numerics):
            original = module.round_to_dtype

            def round_to_dtype(tensor, dtype, _original=original):
                scope = _BLOCK_FLOAT_SCOPE if dtype in (ttnn.bfloat8_b, ttnn.bfloat4_b) else _BFLOAT16_SCOPE
                with torch.profiler.record_function(scope):
                    return _original(tensor, dtype)

            self._patch(module, "round_to_dtype", round_to_dtype)
        for name, scope in _COMPILED_SCOPES.items():
            self._patch(native, name, _labelled(getattr(native, name), scope))
        return self

    def _patch(self, owner, name, value):
        self.patched.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def __exit__(self, *exc):
        for owner, name, value in reversed(self.patched):
            setattr(owner, name, value)


def _primitive(event) -> str:
    parent = event
    while parent is not None:
        if parent.name in _SCOPES:
            return parent.name
        parent = parent.cpu_parent
    for primitive, names in _PRIMITIVE_OF_ATEN.items():
        if event.name in names:
            return primitive
    return "elementwise / other"


def _op(event) -> str:
    parent = event
    while parent is not None:
        if parent.name.startswith("op::"):
            return parent.name[4:]
        parent = parent.cpu_parent
    return "(outside ops)"


def profile_forward(pipeline, pixels) -> None:
    """One forward under torch.profiler: seconds by op and by primitive (self times of the aten ops)."""
    with _Labels(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        wall = timed(lambda: pipeline(pixels))
    by_op, by_primitive, by_both = collections.Counter(), collections.Counter(), collections.Counter()
    for event in profiler.events():
        if event.name in _SCOPES:
            seconds = event.self_cpu_time_total / 1e6  # outside aten ops: the compiled kernels (native)
        elif event.name.startswith("aten::") and not (event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::")):
            seconds = event.cpu_time_total / 1e6  # a top-level aten call: its total covers the aten ops it calls
        else:
            continue
        op, primitive = _op(event), _primitive(event)
        by_op[op] += seconds
        by_primitive[primitive] += seconds
        by_both[op, primitive] += seconds
    total = sum(by_op.values())
    print(f"  profile: {wall:.3f} s wall under the profiler, {total:.3f} s in aten ops and rounding")
    print("  by primitive:")
    for primitive, seconds in by_primitive.most_common():
        print(f"    {primitive:24s} {seconds:7.3f} s  {seconds / total:6.1%}")
    print("  by op (and its primitives above 2% of the total):")
    for op, seconds in by_op.most_common():
        parts = ", ".join(
            f"{primitive} {share:.3f}" for (name, primitive), share in by_both.most_common() if name == op and share > 0.02 * total
        )
        print(f"    {op:44s} {seconds:7.3f} s  {seconds / total:6.1%}  ({parts})")


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["random:base"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policy", "--dtype-policy", default="bf8")
    parser.add_argument("--profile", action="store_true", help="also print where one forward of each numerics spends its time")
    args = parser.parse_args()

    print(
        f"cpu capability: {torch.backends.cpu.get_cpu_capability()}  native bf16 GEMM: {native_bfloat16_matmul()}  "
        f"threads: {torch.get_num_threads()} of {os.cpu_count()} cores (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})  "
        f"block-float rounding: {'compiled' if native.available() else 'torch ops (no C compiler)'}  "
        f"tensix linear and softmax exps: {'compiled' if native.tensix_kernels_available() else 'torch ops'}  batch: {args.batch}  policy: {args.policy}  "
        f"best of {args.rounds} interleaved rounds",
        flush=True,
    )
    pixels = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for model in args.model:
        checkpoint = load_checkpoint(model)
        pipelines = {
            numerics: build_pipeline(checkpoint, executor="host", dtype_policy=args.policy, batch_size=args.batch, numerics=numerics)
            for numerics in NUMERICS
        }
        hugging_face = checkpoint.model.to(torch.bfloat16)
        hf_pixels = pixels.to(torch.bfloat16)

        def hugging_face_forward():
            with torch.no_grad():
                hugging_face(pixel_values=hf_pixels)

        functions = {numerics: (lambda pipeline=pipeline: pipeline(pixels)) for numerics, pipeline in pipelines.items()}
        functions["HF eager bf16"] = hugging_face_forward
        load_before = os.getloadavg()[0]
        best = interleaved_best(functions, args.rounds)
        checkpoint.model.float()
        print(f"{model}  (load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after)")
        print(f"  HF eager bf16: {best['HF eager bf16']:.3f} s/batch")
        for numerics in NUMERICS:
            ratio = best[numerics] / best["HF eager bf16"]
            print(f"  host {numerics:6s}:   {best[numerics]:.3f} s/batch  ratio {ratio:.2f}  (target <= {TARGET_RATIOS[numerics]})")
        if args.profile:
            for numerics, pipeline in pipelines.items():
                print(f"  {numerics}:", flush=True)
                profile_forward(pipeline, pixels)


if __name__ == "__main__":
    main()
