"""Every executor implements the ``Executor`` protocol the model issues everything through."""

from __future__ import annotations

import pytest

from deit_tt.backends.executor import DeviceExecutor, Executor, HostExecutor
from deit_tt.backends.op_calls import CallRecorder
from deit_tt.backends.recording import RecordingExecutor
from deit_tt.backends.runtime import CHIPS
from deit_tt.backends.tracing import OpCounter
from deit_tt.checkpoints.loading import random_config
from deit_tt.sharding import ModelDims, make_plan
from deit_tt.sharding.walk import PlanningExecutor


class _OneChip:
    """Stands in for an open mesh: the executors' constructors only ask it how many chips it has."""

    def get_num_devices(self) -> int:
        return 1


def _plan():
    chip = CHIPS["n150"]
    return make_plan(ModelDims.from_config(random_config("tiny")), 1, chip.grid, chip.l1_bytes_per_core)


EXECUTORS = {
    "host": lambda: HostExecutor(float32_products=True, numerics="ideal"),
    "device": lambda: DeviceExecutor(_OneChip()),
    "recording": lambda: RecordingExecutor(_OneChip(), _plan()),
    "call recorder": lambda: CallRecorder(HostExecutor(float32_products=True, numerics="ideal")),
    "op counter": OpCounter,
    "planning": lambda: PlanningExecutor(_plan()),
}


@pytest.mark.parametrize("name", EXECUTORS)
def test_every_executor_implements_the_protocol(name):
    assert isinstance(EXECUTORS[name](), Executor)


def test_an_executor_without_one_of_the_protocol_s_methods_is_not_one():
    class NoDeallocate(OpCounter):
        deallocate = None  # as if the method were missing

    assert not isinstance(NoDeallocate(), Executor)
    members = {"run", "from_torch", "parameter", "to_torch", "deallocate", "tensor_type", "data_parallel"}
    for member in members:
        missing = type("Missing", (), {name: (lambda self, *a, **k: None) for name in members - {member}})
        assert not isinstance(missing(), Executor), member
