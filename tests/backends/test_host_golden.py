"""The host executor's outputs, bit for bit, against hashes recorded before it was made faster (issue 25).

Speed work on the host executor (``deit_tt.backends.executor``, ``blockfloat``, ``tensix_numerics``) must not
change a single stored value. A random:tiny forward (batch 2, seeded pixels) under both numerics and both dtype
policies is hashed stage by stage (every capture, padded tokens sliced away as captures are) and on the logits;
the hashes were recorded from the code before the speed work (commit 0070521). One modelling change since:
the softmax's last product (exps x 1/sum) lands in a Float16_b dest before the pack, as the kernel's ``ckl::mul``
does; that changed the tensix/bf8 hashes from layer 0's attention probabilities on (bfloat16 outputs round the
same either way), which were re-recorded with it and nothing else changed.

The matrix products' summation order belongs to torch's GEMM kernel, so the hashes hold for the kind of CPU
and torch they were recorded with; on another, the test says which it has and which were recorded.
Record a new kind into host_golden.json with ``python tests/backends/test_host_golden.py`` (from a tree whose numerics are
trusted, e.g. a checkout of that commit).
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from deit_tt.backends import native
from deit_tt.backends.executor import native_bfloat16_matmul
from deit_tt.pipeline import build_pipeline
from deit_tt.model.vocabulary import ALL_STAGES

CASES = [(numerics, policy) for numerics in ("ideal", "tensix") for policy in ("bf8", "bf16")]
BATCH = 2

# machine kind -> "numerics/policy" -> {stage: sha256 prefix}
GOLDEN_FILE = Path(__file__).with_name("host_golden.json")
GOLDEN: dict[str, dict[str, dict[str, str]]] = json.loads(GOLDEN_FILE.read_text())


def machine_kind() -> str:
    products = "bf16-gemm" if native_bfloat16_matmul() else "f32-products"
    return f"{torch.backends.cpu.get_cpu_capability()}/{products}/torch-{version('torch')}"


def digest(tensor: torch.Tensor) -> str:
    tensor = tensor.detach().contiguous()
    return hashlib.sha256(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode() + tensor.view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def stage_hashes(checkpoint, numerics: str, policy: str) -> dict[str, str]:
    pipeline = build_pipeline(checkpoint, executor="host", dtype_policy=policy, batch_size=BATCH, numerics=numerics)
    pixels = torch.randn(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    output = pipeline(pixels, stages=ALL_STAGES)
    hashes = {name: digest(value) for name, value in output.stages.items()}
    hashes["logits"] = digest(output.logits)
    return hashes


@pytest.mark.parametrize("numerics,policy", CASES)
def test_host_outputs_are_bit_identical_to_the_recorded_ones(tiny_checkpoint, numerics, policy):
    kind = machine_kind()
    if kind not in GOLDEN:
        pytest.skip(f"golden hashes recorded for {', '.join(GOLDEN)}; this machine is {kind}")
    expected = GOLDEN[kind][f"{numerics}/{policy}"]
    actual = stage_hashes(tiny_checkpoint, numerics, policy)
    differing = [name for name in expected if actual.get(name) != expected[name]]
    assert not differing, f"{len(differing)} of {len(expected)} stages changed, first: {differing[:5]}"
    assert actual.keys() == expected.keys()


@pytest.mark.parametrize("policy", ["bf8", "bf16"])
def test_tensix_outputs_are_the_same_without_the_compiled_kernels(tiny_checkpoint, monkeypatch, policy):
    # where the compiled tensix linear and softmax exps are not built, the torch path gives the same bits
    if not native.tensix_kernels_available():
        pytest.skip("the compiled tensix kernels are not built here: the torch path is the only one")
    compiled = stage_hashes(tiny_checkpoint, "tensix", policy)
    monkeypatch.setattr(native, "tensix_kernels_available", lambda: False)
    assert stage_hashes(tiny_checkpoint, "tensix", policy) == compiled


if __name__ == "__main__":
    from deit_tt.backends.runtime import prepare_host
    from deit_tt.checkpoints.loading import random_checkpoint

    prepare_host()
    checkpoint = random_checkpoint("tiny")
    GOLDEN[machine_kind()] = {f"{numerics}/{policy}": stage_hashes(checkpoint, numerics, policy) for numerics, policy in CASES}
    GOLDEN_FILE.write_text(json.dumps(GOLDEN, indent=1) + "\n")
    print(f"recorded {machine_kind()} in {GOLDEN_FILE}")
