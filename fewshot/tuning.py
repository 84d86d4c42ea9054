"""A short contrastive tune of a sentence-transformers body on the support set (the SetFit idea, our way).

SetFit (Tunstall et al., 2022) fine-tunes the body on pairs drawn from the support set (same class: cosine 1,
different: 0) before fitting a head. Here every step sees a class-balanced batch of the support set at once
and uses the supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020):
each example is pulled towards every other example of its class and pushed from the rest of the batch, so
one forward pass carries all the pairs of the batch rather than one per row. The tuned body is a copy; the
encoder it came from is untouched.

How long to tune follows the support set (:func:`auto_schedule`, what ``tune="auto"`` uses): a fixed number
of passes over the examples, with a floor of optimiser steps so that a tiny support set is still trained
and a ceiling so that a large one stays a light fine-tune. Its constants were chosen on the development
datasets of ``eval/tune_dev.py`` and reported on others (``eval/run_tuning.py``).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from fewshot._validate import as_labels, as_text_list
from fewshot.encoders.base import weights_sha256
from fewshot.encoders.text import TextEncoder
from fewshot.errors import InputError
from fewshot.labels import encode_labels

AUTO_EPOCHS = 5  # passes over the support set
AUTO_MIN_STEPS = 10
AUTO_MAX_STEPS = 400
AUTO_BATCH = 64
AUTO_LR = 5e-5
AUTO_TEMPERATURE = 0.1


def auto_schedule(n_examples: int, n_classes: int) -> dict[str, Any]:
    """The tuning settings ``tune="auto"`` uses for ``n_examples`` examples of ``n_classes`` classes.

    ``AUTO_EPOCHS`` passes over the examples in batches of ``AUTO_BATCH`` (the whole set when it fits), at
    least ``AUTO_MIN_STEPS`` and at most ``AUTO_MAX_STEPS`` optimiser steps.
    """
    if n_examples < 2 or n_classes < 2:
        raise InputError(f"tuning needs at least two classes and two examples (got {n_examples}, {n_classes})")
    batch = min(AUTO_BATCH, n_examples)
    steps = math.ceil(AUTO_EPOCHS * n_examples / batch)
    steps = int(min(max(steps, AUTO_MIN_STEPS), AUTO_MAX_STEPS))
    return {"steps": steps, "batch_size": batch, "lr": AUTO_LR, "temperature": AUTO_TEMPERATURE}


def supcon_loss(Z: Any, codes: Any, temperature: float) -> Any:
    """Supervised contrastive loss of unit-norm embeddings ``Z`` (torch, shape (n, d)) with integer labels.

    Anchors without another example of their class in the batch are skipped.
    """
    import torch

    S = Z @ Z.T / temperature
    n = len(Z)
    self_mask = torch.eye(n, dtype=torch.bool, device=Z.device)
    S = S.masked_fill(self_mask, float("-inf"))
    log_prob = S - torch.logsumexp(S, dim=1, keepdim=True)
    positives = (codes[:, None] == codes[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    keep = n_pos > 0
    if not bool(keep.any()):
        raise InputError("contrastive tuning needs at least one class with two examples")
    per_anchor = -(log_prob.masked_fill(~positives, 0.0).sum(dim=1)[keep] / n_pos[keep])
    return per_anchor.mean()


def _batches(codes: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator):
    """Class-balanced index batches in which every example has a positive (another of its class).

    The whole support set when it fits; otherwise as many examples of each class as the size allows (at
    least two), and when even two of every class do not fit, two each of a random subset of the classes.
    """
    classes = [idx for idx in (np.flatnonzero(codes == c) for c in np.unique(codes)) if len(idx) >= 2]
    if len(codes) <= batch_size:
        for _ in range(steps):
            yield np.arange(len(codes))
        return
    per_class = max(2, batch_size // len(classes))
    n_classes = min(len(classes), max(2, batch_size // per_class))
    for _ in range(steps):
        chosen = rng.choice(len(classes), size=n_classes, replace=False)
        picked = [rng.choice(classes[c], size=min(per_class, len(classes[c])), replace=False) for c in chosen]
        yield np.concatenate(picked)


def train_step(model: Any, optimiser: Any, texts: list[str], codes: np.ndarray, temperature: float) -> float:
    """One optimiser step of the supervised contrastive loss on one batch; returns the loss."""
    import torch

    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
    features = prepare(texts)
    features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
    Z = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=1)
    loss = supcon_loss(Z, torch.as_tensor(codes, device=Z.device), temperature)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return float(loss.item())


def contrastive_tune(
    encoder: TextEncoder,
    texts: Any,
    labels: Any,
    *,
    steps: int = 10,
    batch_size: int = 64,
    lr: float = 2e-5,
    temperature: float = 0.1,
    seed: int = 0,
    show_progress: bool = False,
) -> TextEncoder:
    """Return a copy of ``encoder`` whose model was tuned on ``texts`` / ``labels`` for ``steps`` steps.

    Parameters
    ----------
    encoder : the text encoder to start from (not modified).
    texts, labels : the support set, sequences of length n.
    steps : optimiser steps, each on one class-balanced batch of at most ``batch_size`` texts (the whole
        support set when it fits).
    lr : AdamW learning rate. temperature : of the supervised contrastive loss.
    seed : seeds the batch sampling (a numpy generator) and dropout (torch's generator, forked for the
        tune, so the caller's global torch random state is left as it was); a tune is repeatable on one
        machine.

    The returned encoder records ``tuned_from`` (the starting weights' hash) in its identity, so nothing
    built with the untuned encoder (an index, a saved model) is mistaken for its output.
    """
    import torch
    from tqdm.auto import tqdm

    if not isinstance(encoder, TextEncoder):
        raise InputError("contrastive tuning works on a TextEncoder (a sentence-transformers body)")
    texts = as_text_list(texts, what="texts")
    y = as_labels(labels, len(texts))
    codes = encode_labels(y, np.unique(y))
    if np.bincount(codes).max() < 2:
        raise InputError("contrastive tuning needs at least one class with two examples")
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    start_sha = encoder.identity["weights_sha256"]
    model = copy.deepcopy(encoder.model)
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    bar = tqdm(total=steps, desc="contrastive tuning", unit="step", disable=not show_progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        try:
            for batch in _batches(codes, batch_size, steps, rng):
                loss = train_step(model, optimiser, [texts[i] for i in batch], codes[batch], temperature)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
        finally:
            bar.close()
            model.eval()
    tuned = TextEncoder(
        model, normalize=encoder.normalize, batch_size=encoder.batch_size, device=getattr(encoder, "device", "cpu")
    )
    tuned.source = encoder.source
    tuned.tuned_from = start_sha
    tuned.tuning = {"steps": steps, "batch_size": batch_size, "lr": lr, "temperature": temperature, "seed": seed}
    tuned._sha = weights_sha256(model)
    return tuned
