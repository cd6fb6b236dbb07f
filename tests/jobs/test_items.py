"""Dataset items: the forms an item may take, and batches checked against item 0."""

from __future__ import annotations

import pytest
import torch

from captum_fam.jobs.items import ItemSignature, batch_loader, read_item


def test_item_forms():
    image = torch.rand(3, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.uint8)
    mask[2:4, 2:4] = 1
    assert read_item(image, 0)[1:] == (None, None)
    inputs, label, found = read_item((image, torch.tensor(3), mask[None]), 0)
    assert inputs[0] is image and label == 3
    assert found.dtype == torch.bool and found.shape == (8, 8) and int(found.sum()) == 4
    ids, attention = torch.arange(5), torch.ones(5, dtype=torch.int64)
    inputs, label, found = read_item(((ids, attention), 7), 0)
    assert len(inputs) == 2 and label == 7 and found is None


@pytest.mark.parametrize(
    ("item", "error", "match"),
    [
        ("text", TypeError, "item 4 is a str"),
        ((torch.rand(3, 8, 8), 1.5), TypeError, "item 4: an extra element"),
        ((torch.rand(3, 8, 8), torch.rand(8)), TypeError, "nested tuple"),
        ((torch.rand(3, 8, 8), 1, 2), ValueError, "item 4 holds two labels"),
        ((torch.rand(3, 8, 8), torch.zeros(8, 8)), ValueError, "item 4 has an empty mask"),
        ((torch.rand(3, 8, 8), torch.ones(2, 8, 8)), ValueError, r"\(H, W\) or \(1, H, W\)"),
        (("a", 1), TypeError, "first element must be the inputs"),
    ],
)
def test_bad_items_name_the_item(item, error, match):
    with pytest.raises(error, match=match):
        read_item(item, 4)


def test_batches_stack_and_check_every_item():
    items = [(torch.full((2, 4, 4), float(i)), i % 3) for i in range(6)]
    loader = batch_loader(items, [range(0, 4), range(4, 6)], ItemSignature.of(items[0]))
    first, second = list(loader)
    assert first.indices == range(0, 4) and second.indices == range(4, 6)
    assert first.inputs[0].shape == (4, 2, 4, 4) and first.labels.tolist() == [0, 1, 2, 0]
    assert torch.equal(second.inputs[0][:, 0, 0, 0], torch.tensor([4.0, 5.0]))

    items[5] = (torch.zeros(2, 5, 5), 0)
    loader = batch_loader(items, [range(4, 6)], ItemSignature.of(items[0]))
    with pytest.raises(ValueError, match=r"item 0 has inputs of shape \(2, 4, 4\).*item 5 has "
                       r"inputs of shape \(2, 5, 5\)"):  # fmt: skip
        list(loader)
    items[5] = torch.zeros(2, 4, 4)  # the label is missing
    with pytest.raises(
        ValueError, match=r"with a label .*item 5 has inputs of shape \(2, 4, 4\) \("
    ):
        list(batch_loader(items, [range(4, 6)], ItemSignature.of(items[0])))
