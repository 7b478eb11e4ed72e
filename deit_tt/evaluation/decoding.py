"""Decoding and preprocessing evaluation images in worker processes, ahead of the model, in batch order."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from deit_tt.evaluation.errors import EvaluationError
from deit_tt.evaluation.preprocess import Preprocessor
from deit_tt.data.imagenet import ImageNetDataset, Sample


@dataclass
class LoadedBatch:
    index: int  # position in the run's list of batches
    samples: list[Sample]  # every sample of the batch, decodable or not
    pixel_values: torch.Tensor  # [n_ok, 3, 224, 224] for the decodable ones, in order
    ok: list[int]  # positions in ``samples`` that were decoded
    errors: dict[int, str]  # position -> one-line error message
    decode_seconds: float


class _BatchDataset(torch.utils.data.Dataset):
    """Item k = batch k, decoded and preprocessed (run in DataLoader workers)."""

    def __init__(self, dataset: ImageNetDataset, batches: list[list[Sample]], preprocessor: Preprocessor):
        self.dataset = dataset
        self.batches = batches
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> LoadedBatch:
        from deit_tt.data.images import ImageError

        start = time.perf_counter()
        samples = self.batches[index]
        tensors, ok, errors = [], [], {}
        for position, sample in enumerate(samples):
            try:
                image = self.dataset.load(sample)
            except ImageError as error:
                errors[position] = str(error)
                continue
            tensors.append(self.preprocessor(image))
            ok.append(position)
        pixel_values = torch.stack(tensors) if tensors else torch.zeros(0, 3, 224, 224)
        return LoadedBatch(index, samples, pixel_values, ok, errors, time.perf_counter() - start)


def _keep(item):
    return item


def _watch_main_process(main_pid: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: exit when the evaluating process is gone (even after a SIGKILL).

    Under forkserver a worker's parent is the fork server, not the evaluating process, so torch's own
    parent check never fires; without this, a killed run would leave its workers (and the fork
    server they keep alive) behind forever.
    """
    import threading

    def watch() -> None:
        while _process_alive(main_pid):
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="deit-tt-main-watch", daemon=True).start()


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")  # a killed but not yet reaped process is gone too
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to a signal-0 probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def default_workers() -> int:
    """One process per spare core (at most 4): on 2 cores, 1 worker decodes while the main process infers."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _worker_context():
    import multiprocessing

    # forkserver: workers start from a clean, single-threaded server process instead of forking a
    # process that holds ttnn and torch thread pools (fork there can deadlock).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["deit_tt.evaluation"])
    return context


def iterate_batches(
    dataset: ImageNetDataset,
    batches: list[list[Sample]],
    preprocessor: Preprocessor,
    workers: int | None = None,
) -> Iterator[LoadedBatch]:
    """Decoded, preprocessed batches in order; ``workers`` > 0 decodes ahead in worker processes."""
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise EvaluationError(f"--workers must be 0 or more, got {workers}")
    source = _BatchDataset(dataset, batches, preprocessor)
    if workers == 0 or len(batches) == 0:
        for index in range(len(source)):
            yield source[index]
        return
    loader = torch.utils.data.DataLoader(
        source,
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, len(batches)),
        collate_fn=_keep,
        prefetch_factor=2,
        multiprocessing_context=_worker_context(),
        worker_init_fn=functools.partial(_watch_main_process, os.getpid()),
    )
    iterator = iter(loader)
    try:
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except RuntimeError as error:
                if "exited unexpectedly" not in str(error):
                    raise
                raise EvaluationError(
                    "an image-decoding worker process exited unexpectedly; if you call evaluate() from a script, put the "
                    "call under `if __name__ == \"__main__\":` (workers re-import the script), or use --workers 0"
                ) from None
            yield batch
    finally:
        del iterator  # shuts the workers down, also on KeyboardInterrupt
