"""Layer capture: this call's forward only, stopped after the layer, hooks always removed."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
from helpers import TinyEmbedder
from torch import nn

from captum_fam import FeatureActivationMap
from captum_fam._engine.capture import LayerDidNotRun, capture_layer

torchvision = pytest.importorskip("torchvision")


class Counted(nn.Module):
    """A TinyEmbedder whose layers after ``block`` count their calls."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyEmbedder()
        self.head = nn.Linear(6, 6)
        self.calls = 0
        self.head.register_forward_hook(lambda *args: setattr(self, "calls", self.calls + 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(images))


def test_layer_embedding_stops_the_forward_after_the_layer(images, references):
    torch.manual_seed(0)
    model = Counted().eval()
    fam = FeatureActivationMap(model, model.net.block, embedding="layer")
    maps = fam.attribute(images, reference=references)
    fam.embed(images)
    fam.similarity_scores(images, reference=references)
    assert model.calls == 0  # the head never ran
    full = FeatureActivationMap(model.net, model.net.block)
    torch.testing.assert_close(maps, full.attribute(images, reference=references))
    output = FeatureActivationMap(model, model.net.block)
    output.attribute(images, reference=references)
    assert model.calls == 2  # query forward and reference forward, both to the end
    assert all(not m._forward_hooks for m in model.net.modules())


class Swallowing(nn.Module):
    """A model that catches every exception raised inside its trunk and carries on."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyEmbedder()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        try:
            features = self.net.block(self.net.stem(images))
        except Exception:  # noqa: BLE001 (what some models do)
            features = self.net.block(self.net.stem(images))
        return features.mean(dim=(2, 3))


def test_a_model_that_swallows_the_stop_falls_back_once_with_a_warning(images, references):
    torch.manual_seed(0)
    model = Swallowing().eval()
    fam = FeatureActivationMap(model, model.net.block, embedding="layer")
    expected = FeatureActivationMap(model.net, model.net.block).attribute(
        images, reference=references
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = fam.attribute(images, reference=references)
        again = fam.attribute(images, reference=references)
    told = [w for w in caught if "caught the exception FAM raises" in str(w.message)]
    assert len(told) == 1
    torch.testing.assert_close(maps, expected)
    torch.testing.assert_close(again, expected)
    assert not model.net.block._forward_hooks


def test_a_layer_that_runs_twice_is_refused(images):
    block = nn.Conv2d(3, 3, 3, padding=1)
    twice = nn.Sequential(block, block, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="ran 2 times in one forward"):
        FeatureActivationMap(twice, block).attribute(images, reference_embeddings=torch.rand(3))
    assert not block._forward_hooks


def test_capture_reports_a_layer_that_did_not_run(images):
    model = TinyEmbedder()
    with pytest.raises(LayerDidNotRun):
        capture_layer(model, nn.Conv2d(3, 3, 1), (images,), None)


def test_hooks_are_removed_when_the_model_fails(images):
    class Failing(TinyEmbedder):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.stem(x)
            raise RuntimeError("the model's own failure")

    model = Failing()
    for embedding in ("output", "layer"):
        for layer in (model.stem, model.block):
            fam = FeatureActivationMap(model, layer, embedding=embedding)
            if embedding == "layer" and layer is model.stem:
                # The forward stops at the layer, before the failure: nothing to report.
                assert fam.embed(images).shape == (4, 4)
                continue
            with pytest.raises(RuntimeError, match="the model's own failure"):
                fam.attribute(images, reference_embeddings=torch.rand(4))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("embedding", ["output", "layer"])
def test_concurrent_calls_on_one_model_give_the_sequential_maps(embedding):
    """8 threads share one ResNet-18; each call must read its own forward only."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    model.fc = nn.Identity()
    fam = FeatureActivationMap(model, model.layer4, embedding=embedding)
    generator = torch.Generator().manual_seed(1)
    work = [
        (
            torch.rand(2, 3, 64, 64, generator=generator),
            torch.rand(1, 3, 64, 64, generator=generator),
        )
        for _ in range(8)
    ]
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # many Python threads, one intra-op thread each (and the same sums)
    try:
        expected = [fam.attribute(q, reference=r) for q, r in work]
        for _ in range(3):
            results: dict[int, torch.Tensor] = {}
            failures: list[BaseException] = []
            barrier = threading.Barrier(len(work))
            threads = [
                threading.Thread(target=explain, args=(fam, work[i], i, barrier, results, failures))
                for i in range(len(work))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not failures, failures
            for index, maps in enumerate(expected):
                assert torch.equal(results[index], maps), f"thread {index} read another forward"
    finally:
        torch.set_num_threads(threads_before)
    assert all(not m._forward_hooks for m in model.modules())


def explain(fam, pair, index, barrier, results, failures) -> None:
    try:
        barrier.wait()
        results[index] = fam.attribute(pair[0], reference=pair[1])
    except BaseException as error:  # noqa: BLE001 (reported by the test)
        failures.append(error)


def test_compiled_models_are_read_through_their_original_module(images, references):
    torch.manual_seed(0)
    model = TinyEmbedder().eval()
    compiled = torch.compile(model, backend="eager")
    compiled(images)  # warmed up, as a served model is
    expected = FeatureActivationMap(model, model.block).attribute(images, reference=references)
    for embedding in ("output", "layer"):
        fam = FeatureActivationMap(compiled, compiled.block, embedding=embedding)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            maps = fam.attribute(images, reference=references)
        assert any("compiled with torch.compile" in str(w.message) for w in caught)
        torch.testing.assert_close(maps, expected)


def test_a_compiled_model_inside_a_function_gets_advice(images):
    model = TinyEmbedder().eval()
    compiled = torch.compile(model, backend="eager")
    compiled(images)
    fam = FeatureActivationMap(lambda x: compiled(x), model.block)
    with pytest.raises(ValueError, match="compiled with torch.compile must be passed itself"):
        fam.attribute(images, reference_embeddings=torch.rand(6))
