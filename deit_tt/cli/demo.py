"""``python -m deit_tt demo``: what ``make demo`` runs, and works on any machine.

With the real checkpoint (the hub answers, or it is in the local cache, or ``settings.MODEL`` names a model)
it classifies the bundled photos (data/images). Otherwise it says so in one line and classifies the bundled
generated scenes (data/scenes, one per class) with ``shapes:tiny``, the DeiT-tiny trained on them, which
ships inside the package.
"""

from __future__ import annotations

import argparse

from deit_tt.cli import classify
from deit_tt.cli.common import add_executor_argument, add_numerics_argument
from deit_tt.model.policy import DEFAULT_POLICY

HELP = "classify the bundled photos with the real checkpoint, or offline the bundled scenes with shapes:tiny"
OFFLINE_MODEL = "shapes:tiny"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_executor_argument(parser)
    add_numerics_argument(parser)


def run(args: argparse.Namespace) -> int:
    from deit_tt.checkpoints.fallback import choose_model
    from deit_tt.classify import DEFAULT_TOP_K
    from deit_tt.data.images import BUNDLED_IMAGES, image_paths
    from deit_tt.data.scenes import BUNDLED_SCENES

    choice = choose_model(OFFLINE_MODEL)
    if choice.fell_back:
        print(f"offline: {choice.reason}; classifying the generated scenes of data/scenes with {choice.model} instead", flush=True)
    images = image_paths(BUNDLED_SCENES if choice.fell_back else BUNDLED_IMAGES)
    return classify.run(argparse.Namespace(
        images=[str(path) for path in images], model=choice.model, executor=args.executor, numerics=args.numerics,
        devices=None, dtype_policy=DEFAULT_POLICY, top_k=DEFAULT_TOP_K, batch_size=None, json=False,
    ))
