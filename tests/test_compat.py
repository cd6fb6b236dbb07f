"""The Captum and torch internals captum-fam relies on are still there and still behave.

If one of these fails after an upgrade, adapt ``captum_fam/_compat.py`` (the only module that
touches them) before anything else.
"""

from __future__ import annotations

import captum
import pytest
import torch
from torch import nn

from captum_fam import _compat


def test_captum_version_is_a_tested_one():
    assert captum.__version__.rsplit(".", 1)[0] in _compat.TESTED_CAPTUM, (
        f"captum {captum.__version__} is not among the tested versions {_compat.TESTED_CAPTUM}: "
        "run the suite and extend TESTED_CAPTUM"
    )


def test_additional_forward_args_convention():
    assert _compat.format_additional_forward_args(None) == ()
    assert _compat.format_additional_forward_args(5) == (5,)
    assert _compat.format_additional_forward_args((1, 2)) == (1, 2)


def test_captum_layer_capture_and_its_assertions():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    images = torch.rand(2, 3, 4, 4)
    (value,) = _compat.layer_eval_data_parallel(
        model, (images,), model[0], None, None, False, False, lambda: "did not run"
    )
    torch.testing.assert_close(value, model[0](images))
    with pytest.raises(ValueError, match="did not run"):
        _compat.layer_eval_data_parallel(
            model, (images,), nn.Conv2d(3, 4, 1), None, None, False, False, lambda: "did not run"
        )


def test_usage_logging_decorator_keeps_wrapped():
    @_compat.log_usage(part_of_slo=True)
    def attribute(x):
        return x

    assert attribute(3) == 3 and hasattr(attribute, "__wrapped__")


def test_sensitivity_default_perturbation():
    (perturbed,) = _compat.default_perturb_func((torch.zeros(2, 3),), perturb_radius=0.1)
    assert perturbed.shape == (2, 3) and 0 < perturbed.abs().max() <= 0.1


def test_compiled_modules_expose_their_original():
    model = nn.Linear(2, 2)
    assert _compat.original_module(torch.compile(model, backend="eager")) is model
    assert _compat.original_module(model) is None
    assert _compat.original_module(lambda x: x) is None
