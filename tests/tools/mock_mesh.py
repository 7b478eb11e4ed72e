"""One data-parallel forward on a mocked multi-chip system: weights on every chip, the batch split across them.

    python tests/tools/mock_mesh.py --chip t3k [--mesh-shape 2x4]

Prints one JSON line: the mesh, how many images went in, the gathered logits' shape and whether any value
came back (none should: the mock computes nothing), and the ops ttnn accepted on the mesh.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import ttnn

from deit_tt.checkpoints.loading import random_checkpoint
from deit_tt.model.conversion import fold_pixels
from deit_tt.backends.recording import dry_run
from deit_tt.pipeline import DeiTPipeline
from deit_tt.model.policy import get_policy
from deit_tt.backends.runtime import open_mock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chip", required=True)
    parser.add_argument("--mesh-shape", default=None, help="ROWSxCOLS (default 1xN)")
    parser.add_argument("--batch", type=int, default=8, help="images per chip")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.mesh_shape.split("x")) if args.mesh_shape else None
    runtime = open_mock(args.chip, mesh_shape=shape)
    pipeline = DeiTPipeline(random_checkpoint("base"), runtime, get_policy("bf8"), args.batch)
    images = pipeline.images_per_forward + 3  # one full forward and a padded one
    output = pipeline(torch.zeros(images, 3, 224, 224))
    records = dry_run(pipeline)
    # Which images each chip gets, and the order they come back in: image i carries the value i everywhere.
    executor = pipeline.model.executor
    numbered = torch.arange(pipeline.images_per_forward, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 3, 224, 224)
    split = executor.host_tensor(fold_pixels(numbered), dtype=ttnn.bfloat16, layout=ttnn.ROW_MAJOR_LAYOUT, batch_sharded=True)
    per_chip = [ttnn.to_torch(shard)[:, 0, 0, 0].int().tolist() for shard in ttnn.get_device_tensors(split)]
    gathered = ttnn.to_torch(split, mesh_composer=ttnn.concat_mesh_to_tensor_composer(runtime.device, dim=0))[:, 0, 0, 0].int().tolist()
    print(json.dumps({
        "chips": runtime.num_devices,
        "mesh": list(runtime.device.shape),
        "banner": pipeline.banner(),
        "images": images,
        "logits": list(output.logits.shape),
        "distillation_logits": list(output.distillation_logits.shape),
        "any_value": bool(torch.isfinite(output.logits).any()),
        "ops": len(records),
        "input": records[0].inputs[0],
        "images_per_chip": per_chip,
        "gathered_order": gathered,
    }))
    pipeline.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
