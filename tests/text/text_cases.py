"""Sentences and helpers shared by the text tests."""

from __future__ import annotations

RAW = {"relu_attributions": False, "normalize_weights": False}
FIRST = ["A man is playing a guitar.", "Two dogs swimming", "The red car"]
SECOND = ["Someone plays an instrument!", "a cat sits on the mat next to the window", "cars"]


def last_states(model, inputs):
    """The encoder's last hidden states, computed by hand."""
    return model(input_ids=inputs[0], attention_mask=inputs[1]).last_hidden_state


def mean_pooled(states, mask):
    weights = mask[..., None].float()
    return (states * weights).sum(1) / weights.sum(1)
