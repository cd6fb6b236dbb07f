"""Pairing references with queries, and their per-example forward arguments."""

from __future__ import annotations

import pytest
import torch

from captum_fam._engine.references import pair_rows, plan_references, reference_forward_args


def test_pair_rows_follows_the_m_rule():
    rows = torch.arange(2.0)[:, None]
    assert pair_rows(rows, 2).flatten().tolist() == [0, 1]
    assert pair_rows(rows[:1], 3).flatten().tolist() == [0, 0, 0]
    assert pair_rows(rows, 6).flatten().tolist() == [0, 0, 0, 1, 1, 1]


def test_reference_forward_args_take_each_groups_first_row():
    per_example, shared = torch.arange(6), torch.tensor(5.0)
    args = reference_forward_args((per_example, shared, "flag"), 6, 2)
    assert args[0].tolist() == [0, 3] and args[1] is shared and args[2] == "flag"
    assert reference_forward_args((per_example,), 6, 6)[0] is per_example
    assert reference_forward_args(None, 6, 2) is None


def test_plans_check_before_any_forward():
    batch = (torch.rand(4, 3),)
    plan = plan_references(4, batch, torch.rand(2, 3), None, "reference")
    assert plan.size == 2 and not plan.shared
    background = plan_references(4, batch, None, torch.rand(7, 5), "background")
    assert background.shared and background.size == 7  # any size: every item, every query
    assert plan_references(4, batch, None, None, "foil", required=False) is None
    with pytest.raises(ValueError, match="foil has 3 rows for 4 inputs"):
        plan_references(4, batch, torch.rand(3, 3), None, "foil")
    with pytest.raises(ValueError, match="exactly one of reference or reference_embeddings"):
        plan_references(4, batch, None, None, "reference")
