"""deit_tt.evaluation.agreement_labels: a dataset labelled by the fp32 PyTorch model's own top-1."""

from __future__ import annotations

import torch

from deit_tt.evaluation.agreement_labels import label_with_reference
from deit_tt.data.imagenet import make_synthetic_dataset, open_dataset
from deit_tt.data.preprocessing import official_transform


def test_labels_become_the_reference_models_top1(tiny_checkpoint, tmp_path):
    dataset = open_dataset(make_synthetic_dataset(tmp_path / "val", num_classes=3, images_per_class=2, corrupt_images=1))
    relabelled = label_with_reference(dataset, tiny_checkpoint.model, official_transform, batch_size=4)
    assert [s.image_id for s in relabelled.samples] == [s.image_id for s in dataset.samples]
    corrupt = dataset.samples[-1]  # the truncated file keeps its folder label
    assert relabelled.find(corrupt.image_id).label == corrupt.label
    for sample in relabelled.samples[:-1]:
        with torch.no_grad():
            logits = tiny_checkpoint.model(pixel_values=official_transform(dataset.load(sample))[None]).logits
        assert sample.label == int(logits.argmax())
    assert relabelled.synthetic and "PyTorch" in relabelled.notes[-1]
    assert relabelled.fingerprint() != dataset.fingerprint()  # a results file of the folder labels is not resumed
