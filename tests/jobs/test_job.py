"""explain_dataset in one process: the maps of fam.attribute, resume, and clear refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TinyEmbedder

zarr = pytest.importorskip("zarr")

from captum_fam import FeatureActivationMap  # noqa: E402
from captum_fam.jobs import StoreError, explain_dataset  # noqa: E402
from captum_fam.metrics import energy_pointing_game, pointing_game  # noqa: E402
from captum_fam.tasks import explain_retrieval  # noqa: E402

ITEMS, BATCH, CHUNK = 10, 4, 8  # batches 0-3, 4-7 | 8-9: a short batch and a short chunk
SETTINGS = {"batch_size": BATCH, "chunk_size": CHUNK, "map_dtype": "float32", "progress": False}


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = TinyEmbedder().eval()
    fam = FeatureActivationMap(model, model.block)
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(ITEMS, 3, 12, 12, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    masks = torch.zeros(ITEMS, 12, 12, dtype=torch.bool)
    masks[:, 2:7, 3:9] = True
    items = [(images[i], int(labels[i]), masks[i]) for i in range(ITEMS)]
    return fam, images, labels, masks, items


def batched(function, *tensors):
    """``function`` on the job's batches, concatenated: the reference the job must equal."""
    parts = [
        function(*(t[start : min(start + BATCH, chunk + CHUNK, ITEMS)] for t in tensors))
        for chunk in range(0, ITEMS, CHUNK)
        for start in range(chunk, min(chunk + CHUNK, ITEMS), BATCH)
    ]
    return torch.cat(parts)


def arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    return {name: group[name][...] for name in group.array_keys()}


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + file.read_bytes())
    return digest.hexdigest()


def test_fixed_references_equal_fam_attribute(setup, tmp_path):
    fam, images, _, masks, _ = setup
    reference = torch.rand(1, 6, generator=torch.Generator().manual_seed(4))
    items = [(images[i], masks[i]) for i in range(ITEMS)]
    result = explain_dataset(fam, items, tmp_path / "a.zarr", reference_embeddings=reference,
                             **SETTINGS)  # fmt: skip
    stored = arrays(tmp_path / "a.zarr")
    maps = batched(lambda x: fam.attribute(x, reference_embeddings=reference), images)
    assert torch.equal(torch.from_numpy(stored["maps"]), maps)  # bit for bit
    scores = batched(lambda x: fam.similarity_scores(x, reference_embeddings=reference), images)
    assert torch.equal(torch.from_numpy(stored["scores"][:, 0]), scores)
    assert stored["item_index"].tolist() == list(range(ITEMS)) and (stored["indices"] == 0).all()
    assert stored["pointing"].tolist() == pointing_game(maps, masks).to(torch.int8).tolist()
    assert np.allclose(stored["energy"], energy_pointing_game(maps, masks).numpy())
    assert np.array_equal(stored["reference_embeddings"], reference.numpy())
    assert (result.computed, result.resumed) == (2, 0)
    assert result.summary["mean_score"] == pytest.approx(float(scores.double().mean()))
    assert result.summary["pointing_rate"] == pytest.approx(stored["pointing"].mean())
    group = zarr.open_group(tmp_path / "a.zarr", mode="r")
    assert group.attrs["summary"] == result.summary and group.attrs["status"] == "complete"

    per_item = torch.rand(ITEMS, 6, generator=torch.Generator().manual_seed(5))
    explain_dataset(fam, list(images), tmp_path / "b.zarr", reference_embeddings=per_item,
                    **SETTINGS)  # fmt: skip
    stored = arrays(tmp_path / "b.zarr")
    maps = batched(lambda x, r: fam.attribute(x, reference_embeddings=r), images, per_item)
    assert torch.equal(torch.from_numpy(stored["maps"]), maps)
    assert stored["indices"][:, 0].tolist() == list(range(ITEMS))
    assert "pointing" not in stored and "reference_embeddings" not in stored


def test_prototypes_by_label(setup, tmp_path):
    fam, images, labels, _, items = setup
    classes = torch.tensor([0, 1, 2])
    prototypes = torch.rand(3, 6, generator=torch.Generator().manual_seed(6))
    result = explain_dataset(fam, items, tmp_path / "p.zarr", prototypes=prototypes,
                             classes=classes, **SETTINGS)  # fmt: skip
    stored = arrays(tmp_path / "p.zarr")
    rows = prototypes[labels]
    maps = batched(lambda x, r: fam.attribute(x, reference_embeddings=r), images, rows)
    assert torch.equal(torch.from_numpy(stored["maps"]), maps)
    assert stored["indices"][:, 0].tolist() == labels.tolist()
    assert stored["labels"].tolist() == labels.tolist()
    # the prediction is the class of the most similar prototype
    scores = torch.stack(
        [fam.similarity_scores(images, reference_embeddings=p) for p in prototypes], dim=1
    )
    prediction = classes[scores.argmax(dim=1)]
    assert stored["predictions"].tolist() == prediction.tolist()
    accuracy = (prediction == labels).double().mean()
    assert result.summary["accuracy"] == pytest.approx(float(accuracy))
    assert np.array_equal(stored["classes"], classes.numpy())


def test_gallery_top_k_equals_explain_retrieval(setup, tmp_path):
    fam, images, _, _, items = setup
    gallery = torch.rand(23, 6, generator=torch.Generator().manual_seed(7))
    explain_dataset(fam, items, tmp_path / "g.zarr", gallery_embeddings=gallery, k=3, **SETTINGS)
    stored = arrays(tmp_path / "g.zarr")
    hits = [explain_retrieval(fam, images[s : s + BATCH], gallery_embeddings=gallery, k=3)
            for s in (0, 4, 8)]  # fmt: skip
    assert stored["indices"].tolist() == torch.cat([h.indices for h in hits]).tolist()
    assert torch.equal(torch.from_numpy(stored["scores"]), torch.cat([h.scores for h in hits]))
    assert torch.equal(torch.from_numpy(stored["maps"]), torch.cat([h.maps for h in hits]))
    assert stored["maps"].shape == (ITEMS, 3, 6, 6)


def test_resume_recomputes_exactly_the_incomplete_chunks(setup, tmp_path):
    fam, _, _, _, items = setup
    prototypes = torch.rand(3, 6, generator=torch.Generator().manual_seed(6))
    path = tmp_path / "r.zarr"
    first = explain_dataset(fam, items, path, prototypes=prototypes, **SETTINGS)
    complete = arrays(path)
    again = explain_dataset(fam, items, path, prototypes=prototypes, **SETTINGS)
    assert (again.computed, again.resumed) == (0, 2) and again.summary == first.summary

    group = zarr.open_group(path, mode="r+")
    group["maps"][8:10] = np.zeros((2, 1, 6, 6), dtype=np.float32)  # torn: data without record
    group["scores"][0:8] = np.zeros((8, 1), dtype=np.float32)  # another, record left stale
    resumed = explain_dataset(fam, items, path, prototypes=prototypes, **SETTINGS)
    assert (resumed.computed, resumed.resumed) == (2, 0)
    assert all(np.array_equal(complete[k], v, equal_nan=True) for k, v in arrays(path).items())
    assert resumed.summary == first.summary


def test_refusals_are_clear_and_change_nothing(setup, tmp_path):
    fam, images, _, _, items = setup
    prototypes = torch.rand(3, 6, generator=torch.Generator().manual_seed(6))
    run = {"prototypes": prototypes, **SETTINGS}
    with pytest.raises(ValueError, match="dataset is empty"):
        explain_dataset(fam, [], tmp_path / "x.zarr", **run)
    with pytest.raises(ValueError, match="exactly one of .* got prototypes, gallery_embeddings"):
        explain_dataset(fam, items, tmp_path / "x.zarr", gallery_embeddings=prototypes, **run)
    with pytest.raises(ValueError, match="need a label per item"):
        explain_dataset(fam, list(images), tmp_path / "x.zarr", **run)
    with pytest.raises(ValueError, match="prototypes have 5 channels but the model output has 6"):
        explain_dataset(fam, items, tmp_path / "x.zarr", **{**run, "prototypes": prototypes[:, :5]})
    with pytest.raises(ValueError, match="map_dtype must be one of"):
        explain_dataset(fam, items, tmp_path / "x.zarr", **{**run, "map_dtype": "int8"})
    with pytest.raises(ValueError, match="item 9 has label 7, which has no prototype"):
        explain_dataset(fam, items[:9] + [(images[9], 7, items[9][2])], tmp_path / "x.zarr", **run)
    with pytest.raises(TypeError, match="fam must be a FeatureActivationMap"):
        explain_dataset(fam.engine, items, tmp_path / "x.zarr", **run)

    # Items of another shape: the chunk before them is kept, the error names the item.
    odd = items[:9] + [(torch.rand(3, 10, 10), 0, items[9][2])]
    with pytest.raises(ValueError, match=r"item 9 has inputs of shape \(3, 10, 10\)"):
        explain_dataset(fam, odd, tmp_path / "odd.zarr", **run)
    assert (zarr.open_group(tmp_path / "odd.zarr")["chunk_digest"][:] != 0).tolist() == [1, 0]

    # An output that holds another job: refused, not a byte changed.
    path = tmp_path / "job.zarr"
    explain_dataset(fam, items, path, **run)
    before = tree_digest(path)
    other = FeatureActivationMap(fam.forward_func, fam.forward_func.block, weighting="contribution")
    with pytest.raises(StoreError, match="another job; these settings differ: weighting"):
        explain_dataset(other, items, path, **run)
    with pytest.raises(StoreError, match=r"items \(store: 10, now: 9\)"):
        explain_dataset(fam, items[:9], path, **run)
    assert tree_digest(path) == before
    explain_dataset(other, items, path, overwrite=True, **run)
    assert zarr.open_group(path, mode="r").attrs["settings"]["weighting"] == "contribution"


def test_dataloader_workers_give_the_same_store(setup, tmp_path):
    fam, _, _, _, items = setup
    prototypes = torch.rand(3, 6, generator=torch.Generator().manual_seed(6))
    run = {"prototypes": prototypes, **SETTINGS}
    explain_dataset(fam, items, tmp_path / "main.zarr", **run)
    explain_dataset(fam, items, tmp_path / "workers.zarr", num_workers=1, **run)
    main, workers = arrays(tmp_path / "main.zarr"), arrays(tmp_path / "workers.zarr")
    assert all(np.array_equal(main[k], workers[k], equal_nan=True) for k in main)
