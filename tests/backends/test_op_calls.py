"""deit_tt.backends.op_calls: the calls of one encoder layer, recorded from the model itself (notebook 01b)."""

from __future__ import annotations

import pytest
import torch
import ttnn

from deit_tt.backends.op_calls import calls_table, describe_value, encoder_layer_calls, plan_objects
from deit_tt.pipeline import build_pipeline


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_checkpoint):
    return build_pipeline(tiny_checkpoint, executor="host", dtype_policy="bf8", batch_size=2)


@pytest.fixture(scope="module")
def layer_input(tiny_pipeline):
    model = tiny_pipeline.model
    pixels = torch.randn(model.images_per_forward, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    return model.embeddings(model.pixel_input(pixels))


def test_the_recorded_calls_are_the_layer_the_model_runs(tiny_pipeline, layer_input):
    model, plan = tiny_pipeline.model, tiny_pipeline.plan
    calls = encoder_layer_calls(model, layer_input, index=1)
    assert model.executor.__class__.__name__ == "HostExecutor"  # the recorder is taken out again
    expected = model.encoder_layer(layer_input, model.params.layers[1])
    assert torch.equal(calls[-1].output, expected)
    linears = [call for call in calls if call.op is ttnn.linear]
    assert [call.kwargs["program_config"] for call in linears] == [plan.qkv, plan.self_output, plan.ff1, plan.ff2]
    assert calls[0].op is ttnn.layer_norm and calls[-1].op is ttnn.add
    table = calls_table(calls, plan)
    assert len(table) == len(calls) == 15
    assert "program_config=plan.qkv" in table.loc[1, "plan configs"]
    assert table.loc[1, "output"] == "[2, 224, 576] bfloat8_b"
    used = plan_objects(calls, plan)
    assert list(used)[:4] == ["matmul_output_memory_config", "layernorm", "layernorm_compute", "qkv"]
    assert used["qkv_attention_memory_config"] is plan.qkv_attention_memory_config  # a positional argument
    assert "classifier" not in used


def test_a_call_runs_again_with_its_own_arguments_or_replaced_ones(tiny_pipeline, layer_input):
    model = tiny_pipeline.model
    qkv = [call for call in encoder_layer_calls(model, layer_input) if call.op is ttnn.linear][0]
    assert torch.equal(qkv.run(model.executor), qkv.output)
    assert "dtype" in qkv.kwargs  # the host executor pops it from its own copy, not from the record
    zero_input = qkv.run(model.executor, torch.zeros_like(qkv.args[0]))  # the output is then the bias alone
    assert torch.equal(zero_input[0, 0], qkv.kwargs["bias"][0])


def test_a_missing_layer_is_a_clear_error(tiny_pipeline, layer_input):
    with pytest.raises(ValueError, match="layer 12 does not exist; the model has 12 encoder layers"):
        encoder_layer_calls(tiny_pipeline.model, layer_input, index=12)


def test_compute_configs_print_their_fields():
    config = ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi2, math_approx_mode=True,
                                              fp32_dest_acc_en=False, packer_l1_acc=True)
    assert describe_value(config) == (
        "WormholeComputeKernelConfig(math_fidelity=HiFi2, math_approx_mode=True, fp32_dest_acc_en=False, packer_l1_acc=True)"
    )
    assert describe_value(ttnn.bfloat8_b) == "bfloat8_b"
