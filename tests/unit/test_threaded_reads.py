"""A checkpoint load reads in several threads (lightning/threaded_reads.py): torch's own
read_data runs on each thread's share, and what lands in the state dict is what was saved."""

from __future__ import annotations

import threading

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from nemo_lite.lightning.threaded_reads import deal_by_size, threaded_reads


def test_items_are_dealt_by_size_and_keep_file_order():
    groups = deal_by_size([10, 1, 1, 8, 2, 9], 2)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert all(g == sorted(g) for g in groups)
    totals = sorted(sum([10, 1, 1, 8, 2, 9][i] for i in g) for g in groups)
    assert sum(totals) == 31 and totals[1] - totals[0] <= 10  # within the largest item
    assert deal_by_size([5], 4) == [[0]]  # no empty shares


class _RecordingPlanner(DefaultLoadPlanner):
    """Notes which thread each tensor was copied in; a thread's first copy waits until two
    threads copy at once (it times out if the shares were read one after the other)."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self.both_reading = threading.Barrier(2, timeout=30)

    def resolve_tensor(self, read_item):  # noqa: ANN001, ANN201 - torch's signature
        name = threading.current_thread().name
        if name not in self.threads:
            self.threads.add(name)
            self.both_reading.wait()
        return super().resolve_tensor(read_item)


def test_a_load_reads_in_two_threads_and_gets_what_was_saved(tmp_path):
    generator = torch.Generator().manual_seed(0)
    saved = {f"w{i}": torch.randn(64, 8 * (i + 1), generator=generator) for i in range(12)}
    saved["step"] = 7  # a byte object travels too
    dcp.save(saved, storage_writer=dcp.FileSystemWriter(str(tmp_path), thread_count=2),
             no_dist=True)
    target = {name: torch.zeros_like(value) if torch.is_tensor(value) else 0
              for name, value in saved.items()}
    planner = _RecordingPlanner()
    with threaded_reads(2).applied():
        dcp.load(target, storage_reader=dcp.FileSystemReader(str(tmp_path)), planner=planner,
                 no_dist=True)
    assert all(torch.equal(target[n], saved[n]) for n in saved if n != "step")
    assert target["step"] == 7
    assert len(planner.threads) == 2 and all(t.startswith("ckpt-read") for t in planner.threads)
