"""The ttnn calls of one encoder layer, exactly as ``TtDeiT.encoder_layer`` issues them.

``encoder_layer_calls`` runs one layer of a built model with a ``CallRecorder`` as its executor: every
``executor.run(op, *args, **kwargs)`` goes to the model's own executor unchanged and is kept as an
:class:`OpCall` (the op, its arguments, its output). Nothing here knows the op sequence; it is
whatever ``deit_tt.model.deit`` does. A recorded call can be issued again with the same arguments
(``OpCall.run``), on the executor it came from or, with its tensors replaced, on another one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import ttnn

from deit_tt.sharding.dims import describe_compute_config, dtype_name, op_name


@dataclass
class OpCall:
    index: int
    op: object  # the ttnn op
    args: tuple
    kwargs: dict
    output: object

    @property
    def name(self) -> str:
        return op_name(self.op)

    def run(self, executor, *args, **kwargs):
        """Issue the op again on ``executor``: the recorded arguments, with ``args`` (positional, from the first)
        and ``kwargs`` replacing the recorded ones where given."""
        positional = tuple(args) + self.args[len(args):]
        return executor.run(self.op, *positional, **{**self.kwargs, **kwargs})


class CallRecorder:
    """Wraps an executor; ``run`` records each call (see the module docstring), the rest is the executor's."""

    def __init__(self, executor):
        self.executor = executor
        self.calls: list[OpCall] = []

    def run(self, op, *args, **kwargs):
        output = self.executor.run(op, *args, **dict(kwargs))  # the host executor pops ``dtype`` from its copy
        self.calls.append(OpCall(len(self.calls), op, args, dict(kwargs), output))
        return output

    @property
    def tensor_type(self):
        return self.executor.tensor_type

    @property
    def data_parallel(self) -> int:
        return self.executor.data_parallel

    def from_torch(self, tensor, **kwargs):
        return self.executor.from_torch(tensor, **kwargs)

    def parameter(self, tensor):
        return self.executor.parameter(tensor)

    def to_torch(self, tensor):
        return self.executor.to_torch(tensor)

    def deallocate(self, tensor) -> None:
        self.executor.deallocate(tensor)


def encoder_layer_calls(model, hidden, index: int = 0) -> list[OpCall]:
    """Run encoder layer ``index`` of ``model`` (a ``TtDeiT``) on ``hidden`` and return its calls in order.

    ``hidden`` is the layer's input as the model holds it (on the host: the torch tensor ``model.embeddings``
    returns). The layer frees its input on a device, as it does in a forward.
    """
    if not 0 <= index < len(model.params.layers):
        raise ValueError(f"layer {index} does not exist; the model has {len(model.params.layers)} encoder layers")
    recorder = CallRecorder(model.executor)
    model.with_executor(recorder).encoder_layer(hidden, model.params.layers[index])
    return recorder.calls


def calls_table(calls: list[OpCall], plan) -> pd.DataFrame:
    """One row per call: #, op, the tensors it takes (shape and dtype), the plan objects among its arguments by
    name, its other arguments, and its output."""
    names = plan.config_names()
    rows = []
    for call in calls:
        tensors, configs, others = [], [], []
        for key, value in [(None, value) for value in call.args] + list(call.kwargs.items()):
            for item in value if isinstance(value, (list, tuple)) else (value,):
                if _is_tensor(item):
                    tensors.append(describe_tensor(item))
                elif id(item) in names:
                    configs.append(f"{key}=plan.{names[id(item)]}" if key else f"plan.{names[id(item)]}")
                elif item is not None:
                    others.append(f"{key}={describe_value(item)}" if key else describe_value(item))
        outputs = call.output if isinstance(call.output, (list, tuple)) else (call.output,)
        rows.append(
            {
                "#": call.index,
                "op": call.name,
                "tensors in": "; ".join(tensors),
                "plan configs": ", ".join(configs),
                "other arguments": ", ".join(others),
                "output": "; ".join(describe_tensor(t) for t in outputs),
            }
        )
    return pd.DataFrame(rows)


def plan_objects(calls: list[OpCall], plan) -> dict[str, object]:
    """The plan's config objects the calls take, by attribute name, in the order they are first used."""
    names = plan.config_names()
    used: dict[str, object] = {}
    for call in calls:
        for value in (*call.args, *call.kwargs.values()):
            if id(value) in names:
                used.setdefault(names[id(value)], value)
    return used


def describe_tensor(tensor) -> str:
    """``[1792, 192] bfloat8_b``: shape and the ttnn dtype it is stored in (host tensors carry ``ttnn_dtype``)."""
    dtype = tensor.dtype if isinstance(tensor, ttnn.Tensor) else getattr(tensor, "ttnn_dtype", tensor.dtype)
    return f"{list(tensor.shape)} {dtype_name(dtype)}"


def describe_value(value) -> str:
    """A readable form of an op argument; ttnn's compute kernel configs have no repr of their own."""
    if isinstance(value, ttnn.WormholeComputeKernelConfig):
        return describe_compute_config(value)
    if isinstance(value, ttnn.DataType):
        return dtype_name(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _is_tensor(value) -> bool:
    return isinstance(value, (ttnn.Tensor, torch.Tensor))
