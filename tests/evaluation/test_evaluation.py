"""Evaluation loop: metrics against hand-computed values, resume after interrupts and kills, corrupt images,
refusal of mismatched results files, and one end-to-end run with the real host pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch

from deit_tt.evaluation import (
    RESULTS_FORMAT,
    EvaluationError,
    Preprocessor,
    compare_reference_for,
    default_results_path,
    deterministic_part,
    evaluate,
    format_summary,
    read_results,
    records_frame,
    running_accuracy,
    summarize,
    summary_table,
    wilson_interval,
)
from deit_tt.data.imagenet import make_synthetic_dataset, open_dataset
from deit_tt.data.preprocessing import official_transform

TESTS = Path(__file__).parent


class TtDeiTOutput(NamedTuple):
    """The fields of deit_tt.model.deit.TtDeiTOutput the evaluation reads (without importing ttnn in subprocesses)."""

    logits: torch.Tensor
    cls_logits: torch.Tensor
    distillation_logits: torch.Tensor | None


class ContentPredictor:
    """A stand-in pipeline: deterministic logits from pixel content (fixed random projection of pooled pixels).

    ``fail_after``: raise KeyboardInterrupt on that call (a user pressing Ctrl-C mid-run);
    ``delay``: seconds per call (lets a test kill a subprocess mid-run).
    """

    def __init__(self, batch_size=4, fail_after=None, delay=0.0, name="fake-predictor", distilled=True):
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(3 * 4 * 4, 1000, generator=generator)
        self.batch_size = self.images_per_forward = batch_size
        self.fail_after = fail_after
        self.delay = delay
        self.calls = 0
        self.images = 0
        self.distilled = distilled
        config = SimpleNamespace(hidden_size=192, image_size=224, patch_size=16, num_labels=1000, id2label={})
        self.checkpoint = SimpleNamespace(
            name=name, identity=f"{name}:v1", is_random=True, distilled=distilled, config=config, model=self._reference
        )
        self.runtime = SimpleNamespace(executor="host", chip=SimpleNamespace(name="n150"), require_values=lambda what: None)
        self.policy = SimpleNamespace(name="bf8")

    def _reference(self, pixel_values):
        """Stands in for the Hugging Face model: the same logits, slightly perturbed."""
        cls, dist = self.logits(pixel_values)
        return SimpleNamespace(logits=(cls + dist) / 2 + 0.01 * torch.cos(torch.arange(1000.0)))

    def logits(self, pixel_values):
        pooled = torch.nn.functional.adaptive_avg_pool2d(pixel_values, 4).flatten(1)
        cls = pooled @ self.weight
        dist = cls.roll(3, dims=1)
        return cls, dist

    def __call__(self, pixel_values):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        time.sleep(self.delay)
        self.images += pixel_values.shape[0]
        cls, dist = self.logits(pixel_values)
        if not self.distilled:
            return TtDeiTOutput(cls, cls, None)
        return TtDeiTOutput((cls + dist) / 2, cls, dist)


class TablePredictor(ContentPredictor):
    """Returns chosen logits per image (recognised by its exact pixel values): {image id: (cls top-5, distillation top-5)}."""

    def __init__(self, dataset, plan, batch_size=3):
        super().__init__(batch_size=batch_size)
        self.by_pixels = {official_transform(dataset.load(s)).numpy().tobytes(): s.image_id for s in dataset if s.image_id in plan}
        self.plan = plan

    def logits(self, pixel_values):
        cls = torch.zeros(pixel_values.shape[0], 1000)
        dist = torch.zeros(pixel_values.shape[0], 1000)
        for row, image in enumerate(pixel_values):
            cls_top, dist_top = self.plan[self.by_pixels[image.numpy().tobytes()]]
            for rank, index in enumerate(cls_top):
                cls[row, index] = 10.0 - rank
            for rank, index in enumerate(dist_top):
                dist[row, index] = 10.0 - rank
        return cls, dist


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_synthetic_dataset(tmp_path_factory.mktemp("eval") / "val", num_classes=5, images_per_class=3, seed=2)
    return open_dataset(root)


def _run(predictor, dataset, path, **kwargs):
    kwargs.setdefault("workers", 0)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", None)
    return evaluate(predictor, dataset, path, **kwargs)


# -- metrics ---------------------------------------------------------------------------------------------


def _hand_written_results(path: Path) -> Path:
    header = {
        "type": "header", "format": RESULTS_FORMAT, "model": "hand", "model_identity": "hand", "distilled": True,
        "model_size": "base", "preprocess": "official", "preprocess_description": "official", "compare_reference": True,
        "dataset": {"layout": "folder"}, "dataset_fingerprint": "x", "executor": "host", "dtype_policy": "bf8",
    }
    def rec(image_id, label, average, cls, dist, ref):
        return {"id": image_id, "label": label, "top5": {"average": average, "cls": cls, "distillation": dist},
                "reference": {"top5": ref, "pcc": 0.99}}
    records = [
        # label, average top-5, cls top-5, distillation top-5, reference top-5
        rec("a", 0, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]),  # all heads right
        rec("b", 0, [1, 0, 2, 3, 4], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [1, 0, 2, 3, 4]),  # avg top-5 only; cls right
        rec("c", 7, [5, 6, 8, 9, 10], [5, 6, 8, 9, 10], [7, 5, 6, 8, 9], [7, 5, 6, 8, 9]),  # only distillation right
        rec("d", 7, [5, 7, 8, 9, 10], [5, 7, 8, 9, 10], [5, 8, 9, 10, 11], [5, 6, 8, 9, 10]),
        {"id": "e", "label": 7, "error": "e: image data is truncated or corrupt"},
    ]
    records[3]["reference"]["pcc"] = 0.95
    lines = [header] + records[:3] + [{"type": "batch", "images": 3, "seconds": 2.0, "model_seconds": 1.0}]
    lines += records[3:] + [{"type": "batch", "images": 2, "seconds": 2.0, "model_seconds": 1.0}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_metrics_match_hand_computed_values(tmp_path):
    summary = summarize(_hand_written_results(tmp_path / "hand.jsonl"))
    heads = summary["heads"]
    assert summary["images"] == {
        "requested": 5, "evaluated": 4, "corrupt": 1, "not_yet_evaluated": 0,
        "corrupt_images": [{"id": "e", "label": 7, "error": "e: image data is truncated or corrupt"}],
    }
    assert (heads["average"]["correct_top1"], heads["average"]["correct_top5"]) == (1, 3)
    assert (heads["cls"]["correct_top1"], heads["cls"]["correct_top5"]) == (2, 3)
    assert (heads["distillation"]["correct_top1"], heads["distillation"]["correct_top5"]) == (2, 2)
    assert heads["average"]["top1"] == 25.0 and heads["average"]["top5"] == 75.0
    assert summary["head_disagreement"] == 50.0  # cls vs distillation top-1: a and d agree; b and c differ
    per_class = {row["index"]: row for row in summary["per_class"]}
    assert per_class[0]["images"] == 2 and per_class[0]["top1"] == 50.0 and per_class[0]["top5"] == 100.0
    assert per_class[7]["images"] == 2 and per_class[7]["top1"] == 0.0 and per_class[7]["top5"] == 50.0
    assert per_class[7]["synset"] == "n01514668" and per_class[7]["name"] == "cock"
    confused = [(row["true"], row["predicted"], row["count"]) for row in summary["most_confused"]]
    assert confused == [(7, 5, 2), (0, 1, 1)]
    assert summary["most_confused"][0]["predicted_name"] == "electric ray"
    reference = summary["reference"]
    assert reference["top1_agreement"] == 75.0  # a, b, d agree with the model's averaged top-1; c does not
    assert reference["reference_top1"] == 50.0 and reference["reference_top5"] == 75.0
    assert reference["logits_pcc_min"] == 0.95 and reference["logits_pcc_mean"] == pytest.approx(0.98)
    assert summary["published"]["top1"] == {"cls": 83.0, "distillation": 83.1, "average": 83.4}
    table = summary_table(summary)
    assert table.loc["average", "gap top-1"] == pytest.approx(25.0 - 83.4)
    assert summary["timing"]["images_per_second"] == pytest.approx(5 / 4.0)
    # restricted to chosen ids, in that order
    subset = summarize(tmp_path / "hand.jsonl", image_ids=["c", "a", "zz"])
    assert subset["images"]["evaluated"] == 2 and subset["images"]["not_yet_evaluated"] == 1
    running = running_accuracy(tmp_path / "hand.jsonl")
    assert list(running["top1"]) == [100.0, 50.0, 100.0 / 3, 25.0] and list(running["top5"]) == [100.0, 100.0, 200.0 / 3, 75.0]
    assert all(low <= top1 <= high for low, top1, high in zip(running["top1_low"], running["top1"], running["top1_high"]))
    assert wilson_interval(834, 1000) == pytest.approx((80.97, 85.58), abs=0.01)  # 83.4 % on 1,000 images: +-2.3 points


def test_chosen_logits_through_the_evaluation_loop(tmp_path, dataset):
    samples = dataset.samples[:6]
    plan = {}
    expected = {"average": [0, 0], "cls": [0, 0], "distillation": [0, 0]}
    for number, sample in enumerate(samples):
        other = (sample.label + 1) % 1000
        if number % 3 == 0:  # both heads right
            plan[sample.image_id] = ([sample.label, other, 2, 3, 4], [sample.label, 5, 6, 7, 8])
            hits = {"average": (1, 1), "cls": (1, 1), "distillation": (1, 1)}
        elif number % 3 == 1:  # cls right at rank 2, distillation wrong: the average puts the label 2nd
            plan[sample.image_id] = ([other, sample.label, 11, 12, 13], [other, 14, 15, 16, 17])
            hits = {"average": (0, 1), "cls": (0, 1), "distillation": (0, 0)}
        else:  # nothing right
            plan[sample.image_id] = ([other, 21, 22, 23, 24], [other, 25, 26, 27, 28])
            hits = {"average": (0, 0), "cls": (0, 0), "distillation": (0, 0)}
        for head, (top1, top5) in hits.items():
            expected[head][0] += top1
            expected[head][1] += top5
    predictor = TablePredictor(dataset, plan, batch_size=4)
    result = _run(predictor, dataset, tmp_path / "plan.jsonl", limit=6)
    for head, (top1, top5) in expected.items():
        assert (result.summary["heads"][head]["correct_top1"], result.summary["heads"][head]["correct_top5"]) == (top1, top5)
    assert predictor.calls == 2 and predictor.images == 6  # batches of 4 + 2
    frame = records_frame(result.results_path)
    assert list(frame["id"]) == [s.image_id for s in samples]


def test_checkpoint_without_distillation_head(tmp_path, dataset):
    result = _run(ContentPredictor(distilled=False), dataset, tmp_path / "plain.jsonl", limit=4)
    assert list(result.summary["heads"]) == ["average", "cls"]
    assert result.summary["heads"]["average"] == result.summary["heads"]["cls"]
    assert result.summary["head_disagreement"] is None


# -- resume -----------------------------------------------------------------------------------------------


def test_resume_after_keyboard_interrupt_gives_the_same_summary(tmp_path, dataset):
    full = _run(ContentPredictor(), dataset, tmp_path / "full.jsonl")
    assert full.evaluated == len(dataset) == 15

    with pytest.raises(KeyboardInterrupt):
        _run(ContentPredictor(fail_after=2), dataset, tmp_path / "resumed.jsonl")
    partial = read_results(tmp_path / "resumed.jsonl")
    assert len(partial.records) == 8 and len(partial.batches) == 2  # two finished batches were kept

    second = ContentPredictor()
    resumed = _run(second, dataset, tmp_path / "resumed.jsonl")
    assert resumed.resumed == 8 and resumed.evaluated == 7
    assert second.images == 7  # nothing evaluated twice
    assert deterministic_part(resumed.summary) == deterministic_part(full.summary)
    ids = [record["id"] for record in read_results(tmp_path / "resumed.jsonl").records]
    assert sorted(ids) == sorted(s.image_id for s in dataset) and len(ids) == len(set(ids))

    third = ContentPredictor()  # a finished run: nothing left to do
    again = _run(third, dataset, tmp_path / "resumed.jsonl")
    assert third.calls == 0 and again.evaluated == 0
    assert deterministic_part(again.summary) == deterministic_part(full.summary)


def test_truncated_last_line_and_uncommitted_batch_are_redone(tmp_path, dataset):
    full = _run(ContentPredictor(), dataset, tmp_path / "full.jsonl")
    path = tmp_path / "cut.jsonl"
    path.write_bytes((tmp_path / "full.jsonl").read_bytes())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 250])  # cuts into the last batch: its commit line and part of a record
    assert not path.read_bytes().endswith(b"\n")
    cut = read_results(path)
    assert len(cut.records) == 12 and cut.discarded_lines > 0

    predictor = ContentPredictor()
    resumed = _run(predictor, dataset, path)
    assert predictor.images == 3  # exactly the uncommitted last batch
    assert deterministic_part(resumed.summary) == deterministic_part(full.summary)
    assert len(read_results(path).batches) == len(read_results(tmp_path / "full.jsonl").batches)


def test_resume_after_sigkill_gives_the_same_summary(tmp_path, dataset):
    full = _run(ContentPredictor(), dataset, tmp_path / "full.jsonl")
    path = tmp_path / "killed.jsonl"
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from test_evaluation import ContentPredictor\n"
        "from deit_tt.evaluation import evaluate\n"
        "from deit_tt.data.imagenet import open_dataset\n"
        "if __name__ == '__main__':\n"
        f"    evaluate(ContentPredictor(delay=0.4), open_dataset({str(dataset.root)!r}), {str(path)!r},\n"
        "             workers=1, progress=False, log=None)\n"
    )
    process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b'"type": "batch"') >= 2:
                break
            if process.poll() is not None:
                pytest.fail(f"the evaluation subprocess ended early: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("the evaluation subprocess did not commit two batches within 60 s")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 15  # its decoding worker and fork server notice and exit, not linger
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(str(tmp_path))
    done = read_results(path)
    assert 8 <= len(done.records) < 15  # killed mid-run

    predictor = ContentPredictor()
    resumed = _run(predictor, dataset, path)
    assert predictor.images == 15 - len(done.records)
    assert deterministic_part(resumed.summary) == deterministic_part(full.summary)


def test_resume_into_a_different_run_is_refused(tmp_path, dataset):
    path = tmp_path / "r.jsonl"
    _run(ContentPredictor(), dataset, path, limit=4)
    before = path.read_bytes()
    with pytest.raises(EvaluationError, match="different model"):
        _run(ContentPredictor(name="another-model"), dataset, path)
    with pytest.raises(EvaluationError, match="different preprocessing"):
        _run(ContentPredictor(), dataset, path, preprocess=Preprocessor("hf", "random:tiny"))
    other = open_dataset(make_synthetic_dataset(tmp_path / "other", num_classes=2, images_per_class=2, seed=9))
    with pytest.raises(EvaluationError, match="different dataset"):
        _run(ContentPredictor(), other, path)
    with pytest.raises(EvaluationError, match="different --compare-reference setting"):
        _run(ContentPredictor(), dataset, path, compare_reference=True)
    assert path.read_bytes() == before  # refused runs leave the file alone
    # a larger --limit continues the same file; --restart starts over
    grown = _run(ContentPredictor(), dataset, path, limit=8)
    assert grown.resumed == 4 and grown.evaluated == 4
    restarted = _run(ContentPredictor(name="another-model"), dataset, path, limit=4, restart=True)
    assert restarted.resumed == 0 and read_results(path).header["model"] == "another-model"


def test_foreign_or_damaged_results_files_are_refused(tmp_path, dataset):
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text("my own notes\nsecond line\n")
    with pytest.raises(EvaluationError, match="not a deit-tt results file"):
        _run(ContentPredictor(), dataset, foreign)
    assert foreign.read_text() == "my own notes\nsecond line\n"

    path = tmp_path / "damaged.jsonl"
    _run(ContentPredictor(), dataset, path, limit=8)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "{garbage\n"  # inside the first committed batch
    path.write_text("".join(lines))
    with pytest.raises(EvaluationError, match="damaged at line 3"):
        _run(ContentPredictor(), dataset, path)


# -- corrupt images, workers, reporting ---------------------------------------------------------------------


def test_corrupt_images_are_counted_and_reported_not_fatal(tmp_path):
    data = open_dataset(make_synthetic_dataset(tmp_path / "val", num_classes=2, images_per_class=2, corrupt_images=2))
    (data.root / "n01440764" / "synthetic_val_00000099.JPEG").write_bytes(b"this is not a JPEG")
    data = open_dataset(data.root)
    result = _run(ContentPredictor(batch_size=2), data, tmp_path / "c.jsonl")
    images = result.summary["images"]
    assert (images["evaluated"], images["corrupt"]) == (4, 3)
    assert sorted(item["id"] for item in images["corrupt_images"]) == [
        "synthetic_val_00000005", "synthetic_val_00000006", "synthetic_val_00000099",
    ]
    assert all("corrupt" in item["error"] or "not an image" in item["error"] for item in images["corrupt_images"])
    assert "synthetic_val_00000099" in format_summary(result.summary)


def test_worker_processes_give_the_same_records(tmp_path, dataset):
    in_process = _run(ContentPredictor(), dataset, tmp_path / "w0.jsonl", workers=0, limit=8)
    with_workers = _run(ContentPredictor(), dataset, tmp_path / "w1.jsonl", workers=1, limit=8)
    assert read_results(tmp_path / "w0.jsonl").records == read_results(tmp_path / "w1.jsonl").records
    assert deterministic_part(in_process.summary) == deterministic_part(with_workers.summary)


def test_hf_preprocessing_for_random_weights_uses_the_hub_values_and_says_so(tmp_path, dataset):
    preprocessor = Preprocessor("hf", "random:tiny")
    assert "no image processor" in preprocessor.description and "squash to 256x256" in preprocessor.description
    image = dataset.load(dataset.samples[0])
    assert preprocessor(image).shape == (3, 224, 224)
    assert not torch.allclose(preprocessor(image), official_transform(image))  # squash vs shorter-side resize
    result = _run(ContentPredictor(), dataset, tmp_path / "hf.jsonl", preprocess=preprocessor, limit=4)
    assert result.summary["preprocessing"] == {"mode": "hf", "description": preprocessor.description}


def test_hf_preprocessing_of_a_checkpoint_folder_matches_hf_transform_for(tmp_path, dataset):
    import pickle

    from transformers.models.deit import DeiTImageProcessorPil

    from deit_tt.evaluation import HUB_PROCESSOR_VALUES
    from deit_tt.data.preprocessing import hf_transform_for

    DeiTImageProcessorPil(**{**HUB_PROCESSOR_VALUES, "size": {"height": 224, "width": 224}}).save_pretrained(tmp_path)
    preprocessor = Preprocessor("hf", str(tmp_path))
    assert "squash to 224x224" in preprocessor.description and str(tmp_path) in preprocessor.description
    image = dataset.load(dataset.samples[1])
    expected = hf_transform_for(str(tmp_path))(image)
    assert torch.equal(preprocessor(image), expected)
    assert torch.equal(pickle.loads(pickle.dumps(preprocessor))(image), expected)  # as a decoding worker sees it
    with pytest.raises(EvaluationError, match="--preprocess official"):
        Preprocessor("hf", str(tmp_path / "no-such-checkpoint"))


# -- end to end with the real pipeline -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_pipeline():
    from deit_tt.pipeline import build_pipeline

    pipeline = build_pipeline(model="random:tiny", executor="host", batch_size=2)
    yield pipeline
    pipeline.close()


def test_end_to_end_with_the_host_pipeline(tmp_path, dataset, host_pipeline):
    result = evaluate(host_pipeline, dataset, tmp_path / "e2e.jsonl", limit=2, workers=0, compare_reference=True, log=None)
    summary = result.summary
    assert summary["images"]["evaluated"] == 2 and result.evaluated == 2
    assert summary["model"] == "random:tiny" and summary["random_weights"] and summary["executor"] == "host"
    assert summary["dtype_policy"] == host_pipeline.policy.name and summary["model_size"] == "tiny"
    assert set(summary["heads"]) == {"average", "cls", "distillation"}
    reference = summary["reference"]
    assert reference["images"] == 2 and reference["logits_pcc_min"] > 0.98  # ttnn vs the fp32 Hugging Face model
    assert summary["timing"]["model_images_per_second"] > 0
    assert "RANDOM-INITIALISED" in format_summary(summary)


def test_evaluate_command(tmp_path, dataset, monkeypatch, capsys):
    import deit_tt.pipeline
    from deit_tt.cli import main

    built = []

    def fake_build_pipeline(**kwargs):
        built.append(kwargs)
        predictor = _CliPredictor(batch_size=kwargs["batch_size"] or 4)
        predictor.policy = SimpleNamespace(name=kwargs["dtype_policy"])
        return predictor

    monkeypatch.setattr(deit_tt.pipeline, "build_pipeline", fake_build_pipeline)
    out = tmp_path / "cli.jsonl"
    arguments = ["evaluate", "--data", str(dataset.root), "--limit", "6", "--batch-size", "4", "--out", str(out), "--workers", "0",
                 "--no-progress", "--model", "random:tiny", "--executor", "host", "--dtype-policy", "bf16"]
    assert main(arguments) == 0
    assert built[0].pop("model").name == "random:tiny"  # loaded first, to match the data's folders to its labels
    assert built[0] == {"executor": "host", "dtype_policy": "bf16", "batch_size": 4, "devices": None, "numerics": None}
    printed = capsys.readouterr().out
    assert _CliPredictor.BANNER in printed and "top-1 %" in printed and "summary written to" in printed
    assert "layout folder" in printed and "official" in printed
    summary = json.loads(out.with_name("cli.summary.json").read_text())
    assert summary["images"]["evaluated"] == 6
    assert main(arguments) == 0  # second run: resumes, nothing new
    assert "resuming" in capsys.readouterr().out
    assert json.loads(out.with_name("cli.summary.json").read_text())["heads"] == summary["heads"]
    assert main(arguments[:-2] + ["--dtype-policy", "bf8"]) == 2  # another dtype policy into the same file: refused
    assert "different dtype policy" in capsys.readouterr().err

    assert main(["evaluate", "--data", str(tmp_path / "nowhere"), "--model", "random:tiny"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "does not exist" in error
    assert len(built) == 3  # a bad --data fails before any model is loaded


class _CliPredictor(ContentPredictor):
    BANNER = "executor: fake | model: fake-predictor | RANDOM-INITIALISED weights"

    def banner(self):
        return self.BANNER

    def close(self):
        pass


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (the fork server lists the script's folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes() and b"Z" not in (entry / "stat").read_bytes().rsplit(b")", 1)[1][:3]:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_header_field_added_later_resumes_older_files_through_its_legacy_value(tmp_path, dataset, monkeypatch):
    import deit_tt.evaluation.header as header

    path = tmp_path / "old.jsonl"
    _run(ContentPredictor(), dataset, path, limit=4)  # written before the field existed
    setting = {"value": "old"}
    field = header.HeaderField("future_setting", lambda run: setting["value"], "future setting", legacy="old")
    monkeypatch.setattr(header, "HEADER_FIELDS", header.HEADER_FIELDS + (field,))
    assert _run(ContentPredictor(), dataset, path, limit=8).resumed == 4
    setting["value"] = "new"
    with pytest.raises(EvaluationError, match="different future setting"):
        _run(ContentPredictor(), dataset, path)


def test_default_results_path_names_everything_a_resumed_run_shares(tmp_path, dataset, monkeypatch):
    from deit_tt.evaluation import compare_reference_by_default

    monkeypatch.setenv("DEIT_TT_RESULTS_DIR", str(tmp_path / "results"))
    predictor = ContentPredictor()
    predictor.checkpoint.short_name = "deit-tiny"
    path = default_results_path(predictor, dataset)
    fingerprint = dataset.fingerprint().split(":")[1][:8]
    assert path == tmp_path / "results" / f"deit-tiny-host-bf8-official-val-{fingerprint}.jsonl"
    assert default_results_path(predictor, dataset, Preprocessor("hf", "random:tiny"), compare_reference=True).name.startswith(
        "deit-tiny-host-bf8-hf-reference-val-"
    )
    other = open_dataset(make_synthetic_dataset(tmp_path / "val", num_classes=2, images_per_class=1, seed=9))
    assert default_results_path(predictor, other) != path  # same folder name, other images
    assert default_results_path(predictor, dataset, results_dir=tmp_path / "mine").parent == tmp_path / "mine"
    assert compare_reference_by_default(2000) and not compare_reference_by_default(2001)


def test_compare_reference_for_applies_the_2000_image_rule():
    assert compare_reference_for("auto", 2000) and not compare_reference_for("auto", 2001)
    assert compare_reference_for("1", 50_000) and not compare_reference_for("0", 10)


# -- one writer per results file, places that cannot be written, non-finite logits ----------------------------

_HOLD_LOCK = """
import sys, time
from deit_tt.evaluation.results import ResultsLock
ResultsLock(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_a_results_file_held_by_another_process_is_refused_naming_it_until_that_process_dies(tmp_path, dataset):
    path = tmp_path / "shared.jsonl"
    _run(ContentPredictor(), dataset, path, limit=4)
    before = path.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(TESTS.parents[1])})
    try:
        assert holder.stdout.readline() == b"locked\n"
        for restart in (False, True):
            with pytest.raises(EvaluationError) as refused:
                _run(ContentPredictor(), dataset, path, restart=restart)
            message = str(refused.value)
            assert f"is being written by another evaluation (process {holder.pid}:" in message and "\n" not in message
        assert path.read_bytes() == before  # neither resumed nor restarted
    finally:
        holder.kill()
        holder.wait()
    resumed = _run(ContentPredictor(), dataset, path)  # the OS released the dead holder's lock
    assert resumed.resumed == 4 and resumed.evaluated == len(dataset) - 4
    assert not path.with_name(path.name + ".lock").exists()


def test_restart_replaces_only_a_results_file(tmp_path, dataset):
    table = tmp_path / "labels.csv"
    table.write_text("id,label\n1,cat\n")
    with pytest.raises(EvaluationError, match="labels.csv exists and is not a deit-tt results file"):
        _run(ContentPredictor(), dataset, table, restart=True)
    assert table.read_text() == "id,label\n1,cat\n"


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda tmp: (tmp / "dir").mkdir() or tmp / "dir", "is a directory; pass --out with a file path"),
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "r.jsonl", "is a file, not a folder"),
    ],
    ids=["out-is-a-directory", "folder-is-a-file"],
)
def test_a_results_path_that_cannot_be_written_is_one_line(tmp_path, dataset, make, expected):
    with pytest.raises(EvaluationError) as refused:
        _run(ContentPredictor(), dataset, make(tmp_path))
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_a_full_disk_stops_with_one_line_and_keeps_the_committed_batches(tmp_path, dataset, monkeypatch):
    from deit_tt.evaluation import results as results_module

    path = tmp_path / "full.jsonl"
    real_append, appended = results_module.ResultsWriter.append, []

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(28, "No space left on device")

        def close(self):
            self.handle.close()

    def append_until_full(writer, records, batch):  # the first batch reaches the disk, the second finds it full
        if appended:
            writer._handle = FullDisk(writer._handle)
        appended.append(len(records))
        real_append(writer, records, batch)

    monkeypatch.setattr(results_module.ResultsWriter, "append", append_until_full)
    with pytest.raises(EvaluationError) as full:
        _run(ContentPredictor(), dataset, path)
    assert "No space left on device" in str(full.value) and "run the same command again to resume" in str(full.value)
    assert len(read_results(path).records) == 4
    monkeypatch.undo()
    resumed = _run(ContentPredictor(), dataset, path)
    assert resumed.resumed == 4 and len(read_results(path).records) == len(dataset)


class NonFinitePredictor(ContentPredictor):
    """Finite logits for the first call, then NaN in one image's row (damaged weights do that to every image)."""

    def __call__(self, pixel_values):
        output = super().__call__(pixel_values)
        if self.calls > 1:
            output.logits[1, 7] = float("nan")
        return output


def test_non_finite_logits_stop_the_run_naming_the_checkpoint_and_keep_finished_batches(tmp_path, dataset):
    path = tmp_path / "nan.jsonl"
    with pytest.raises(EvaluationError) as refused:
        _run(NonFinitePredictor(name="damaged-model"), dataset, path)
    message = str(refused.value)
    assert message.startswith("damaged-model gave non-finite logits (NaN or infinity) for 1 of 4 image(s)") and "\n" not in message
    assert len(read_results(path).records) == 4  # the first batch, and nothing of the NaN batch
