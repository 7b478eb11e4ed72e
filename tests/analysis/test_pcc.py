"""PCC: the chunked two-pass evaluation against the textbook formula, and its edge cases."""

from __future__ import annotations

import pytest
import torch

from deit_tt.analysis import pcc as pcc_module
from deit_tt.analysis.pcc import pcc


def textbook_pcc(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def test_chunked_pcc_matches_the_textbook_formula_across_chunks(monkeypatch):
    monkeypatch.setattr(pcc_module, "CHUNK", 1000)  # 10,007 values: eleven chunks, the last one short
    generator = torch.Generator().manual_seed(0)
    expected = torch.randn(10_007, generator=generator) + 3.0  # an offset the means must remove
    actual = (expected + 0.01 * torch.randn(10_007, generator=generator)).bfloat16()
    assert pcc(actual, expected) == pytest.approx(textbook_pcc(actual, expected), abs=1e-12)
    assert 0.999 < pcc(actual, expected) < 1.0
    assert pcc(-actual, expected) == pytest.approx(-pcc(actual, expected), abs=1e-12)


def test_identical_tensors_and_constants():
    values = torch.randn(3, 5)
    assert pcc(values, values.clone()) == 1.0
    assert pcc(torch.full((4,), 2.0), torch.full((4,), 2.0)) == 1.0
    assert pcc(torch.full((4,), 2.0), torch.arange(4.0)) == 0.0  # a constant correlates with nothing


def test_different_sizes_are_an_error():
    with pytest.raises(ValueError, match="cannot compare tensors of 6 and 4 values"):
        pcc(torch.zeros(2, 3), torch.zeros(4))
