"""A short contrastive tune of a sentence-transformers body on the support set (the SetFit idea, our way).

SetFit (Tunstall et al., 2022) fine-tunes the body on pairs drawn from the support set (same class: cosine 1,
different: 0) before fitting a head. Here every step sees a class-balanced batch of the support set at once
and uses the supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020):
each example is pulled towards every other example of its class and pushed from the rest of the batch, so
one forward pass carries all the pairs of the batch rather than one per row. The tuned body is a copy; the
encoder it came from is untouched.

A batch is drawn by class, not by length, so padded to its longest text it runs mostly padding when lengths
vary; its forward pass runs instead in runs of similar length (:func:`length_chunks`), which the attention
mask makes give the same embeddings, loss and gradients up to rounding (dropout draws its masks run by run,
so a tune differs from a one-batch tune as another dropout seed's would); ``eval/bench_tune_runs.py`` times
the difference.

How long to tune follows the support set (:func:`auto_schedule`, what ``tune="auto"`` uses): a fixed number
of passes over the examples, with a floor of optimiser steps so that a tiny support set is still trained
and a ceiling so that a large one stays a light fine-tune. Two classes with fewer than 16 examples a class
(on average) train only the top third of the body's layers: the layers below are frozen, run once per text, and their
output is fed to the trained layers at every step (:class:`_FrozenBottom`), so a step costs about a third of
a full one. Every other support set trains every layer. At 8 a class on the development group every layer
did better on the mean of eight datasets (+0.9 points over the top two of MiniLM's six, matched seeds):
+3.5 and +3.4 on GoEmotions' Ekman labels and sentiment groups, +2.4 on SST-2, +0.5 on MR and on CLINC150,
-0.35 on SUBJ, -2.35 on Banking77 and -0.6 on 20 Newsgroups, in 1.6 to 3 times the fit time; the sets of many
intents split (CLINC150's 150 against Banking77's 77), so no rule by class count was made. Three classes or
more (+0.9 on the mean of five) take that time, since SetFit's own fit grows with the square of the
examples; two classes keep the top third, since there SetFit's whole fit is about 10 seconds and every layer
would take most of it. On SST-2 and MR at 16, 32 and 64 a class every layer did better, by 1.8 to 5.7 points
(``eval/tune_layers.py``). How many passes depends on the classes: at 64 a class, 10, 15 and 20 passes did no
better than 5 on the two classes of SST-2, MR and SUBJ (``eval/tune_dev.py``), while 15 passes did better than
5 on the multi-class development sets, every layer trained: GoEmotions' four sentiment groups gained 2.7, 2.6
and 3.0 points at 16, 32 and 64 a class (three seeds each, every seed up), its seven Ekman labels 0.7 at 64 a
class (three seeds), at 2.7 times the fit time. With the top layers alone, at 8 a class, twice and three times
the steps lost 0.56 and 0.93 points on the mean of SST-2, MR, SUBJ and GoEmotions-Ekman, and half the steps
or half the learning rate lost 0.7 and 0.3 on those and GoEmotions' groups (``eval/tune_layers.py``). So
three classes or more get 15 passes from 16 examples a class, and the rest 5. The constants were chosen on
the development datasets of ``eval/tune_dev.py`` and ``eval/tune_layers.py`` and reported on others
(``eval/run_tuning.py``).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from fewshot._validate import as_labels, as_text_list
from fewshot.encoders.text import TextEncoder
from fewshot.errors import InputError
from fewshot.labels import encode_labels

AUTO_EPOCHS = 5  # passes over the support set
AUTO_MULTICLASS_EPOCHS = 15  # passes over three classes or more from AUTO_ALL_LAYERS_FROM examples a class
AUTO_MIN_STEPS = 10
AUTO_MAX_STEPS = 400
AUTO_BATCH = 64
AUTO_LR = 1e-4  # for the top layers alone; every layer is tuned at FULL_LR
FULL_LR = 5e-5
AUTO_LAYER_SHARE = 1 / 3  # two classes below AUTO_ALL_LAYERS_FROM examples a class train the top third
AUTO_ALL_LAYERS_FROM = 16  # examples a class from which two classes train every layer (more classes always do)
AUTO_TOP_LAYERS_MAX_CLASSES = 2  # support sets of more classes train every layer however few their examples
AUTO_TEMPERATURE = 0.1
CHUNK_OVERHEAD_TOKENS = 32  # a forward pass's fixed cost, in padded tokens, when a batch is run in length runs


def auto_schedule(n_examples: int, n_classes: int, depth: int | None = None) -> dict[str, Any]:
    """The tuning settings ``tune="auto"`` uses for ``n_examples`` examples of ``n_classes`` classes on a
    body of ``depth`` transformer layers.

    ``AUTO_EPOCHS`` passes over the examples (``AUTO_MULTICLASS_EPOCHS`` for three classes or more with at
    least ``AUTO_ALL_LAYERS_FROM`` examples a class) in batches of ``AUTO_BATCH`` (the whole set when it
    fits), at least ``AUTO_MIN_STEPS`` and at most ``AUTO_MAX_STEPS`` optimiser steps. Two classes with
    fewer than ``AUTO_ALL_LAYERS_FROM`` examples a class and ``depth`` known train only the top
    ``AUTO_LAYER_SHARE`` of the layers, at ``AUTO_LR``; every other support set (or an architecture whose
    layers are not found) trains every layer, at ``FULL_LR``.
    """
    if n_examples < 2 or n_classes < 2:
        raise InputError(f"tuning needs at least two classes and two examples (got {n_examples}, {n_classes})")
    few = n_examples < AUTO_ALL_LAYERS_FROM * n_classes
    passes = AUTO_MULTICLASS_EPOCHS if n_classes > 2 and not few else AUTO_EPOCHS
    batch, steps = pass_steps(n_examples, passes)
    top = few and n_classes <= AUTO_TOP_LAYERS_MAX_CLASSES and depth is not None
    layers = max(1, round(depth * AUTO_LAYER_SHARE)) if top else None
    lr = FULL_LR if layers is None else AUTO_LR
    return {"steps": steps, "batch_size": batch, "lr": lr, "temperature": AUTO_TEMPERATURE, "layers": layers}


def pass_steps(n_examples: int, passes: float) -> tuple[int, int]:
    """The batch size and the number of optimiser steps of ``passes`` passes over ``n_examples`` examples in
    batches of ``AUTO_BATCH`` (the whole set when it fits), at least ``AUTO_MIN_STEPS`` and at most
    ``AUTO_MAX_STEPS``."""
    batch = min(AUTO_BATCH, n_examples)
    steps = math.ceil(passes * n_examples / batch)
    return batch, int(min(max(steps, AUTO_MIN_STEPS), AUTO_MAX_STEPS))


def check_tune_settings(settings: dict[str, Any], where: str = "") -> None:
    """Refuse tuning settings a tune cannot run with (``where`` prefixes the name in the message, e.g.
    ``"tune "``): steps and batch_size positive integers (a batch of at least two), lr and temperature
    positive finite numbers, seed a non-negative integer, layers None or a positive integer (checked
    against the body's depth when the body is known)."""

    def integer(v: Any, low: int) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low

    def positive(v: Any) -> bool:
        return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    checks = {
        "steps": (lambda v: integer(v, 1), "a positive integer"),
        "batch_size": (lambda v: integer(v, 2), "an integer of at least 2 (a contrastive batch needs pairs)"),
        "lr": (positive, "a positive finite number"),
        "temperature": (positive, "a positive finite number"),
        "seed": (lambda v: integer(v, 0), "a non-negative integer"),
        "layers": (lambda v: v is None or integer(v, 1), "None (every layer) or a positive integer"),
    }
    for key, (ok, what) in checks.items():
        if key in settings and not ok(settings[key]):
            raise InputError(f"{where}{key} must be {what}, got {settings[key]!r}")


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


def length_chunks(lengths: np.ndarray, overhead: float = CHUNK_OVERHEAD_TOKENS) -> list[np.ndarray]:
    """A batch's indices split into runs of similar token count, longest first, that minimise the tokens
    run: each run is padded to its longest text, and a run costs ``overhead`` tokens more (a forward pass's
    fixed cost). The runs are contiguous in length order, so the best split is found exactly by dynamic
    programming; ``overhead=math.inf`` keeps the batch whole."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    L = np.asarray(lengths, dtype=np.float64)[order]
    n = len(L)
    if n == 0:
        return []
    if not math.isfinite(overhead):
        return [order]
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):  # best[j]: the first j texts; a run i..j-1 is padded to L[i], the longest
        i = np.arange(j)
        cost = best[:j] + (j - i) * L[:j] + overhead
        start[j] = int(np.argmin(cost))
        best[j] = cost[start[j]]
    runs, j = [], n
    while j > 0:
        runs.append(order[start[j] : j])
        j = int(start[j])
    return runs[::-1]


def batch_embeddings(
    model: Any, texts: list[str], bottom: _FrozenBottom | None = None, overhead: float = CHUNK_OVERHEAD_TOKENS
) -> tuple[Any, np.ndarray]:
    """Sentence embeddings of ``texts`` with gradients, in runs of similar length (:func:`length_chunks`),
    and the order of their rows (indices into ``texts``).

    A batch padded to its longest text spends most of its work on padding when lengths vary (a contrastive
    batch is drawn by class, not by length): at 64 a class, AG News' batches ran three times their real
    tokens. The attention mask keeps padding out of every text's embedding, so the runs give the same
    embeddings (and the same loss and gradients) as one padded batch, for about half the work there.
    With ``bottom``, each run enters the trained layers from the frozen layers' stored output.
    """
    import torch

    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6

    def features_of(part: list[str]) -> dict[str, Any]:
        features = prepare(part)
        return {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}

    whole = features_of(texts)
    runs = length_chunks(whole["attention_mask"].sum(dim=1).cpu().numpy(), overhead)
    if len(runs) == 1:  # one run: the batch as it came, already tokenized
        runs = [np.arange(len(texts))]
    out = []
    for run in runs:
        part = [texts[i] for i in run]
        features = whole if len(runs) == 1 else features_of(part)
        if bottom is None:
            out.append(model(features)["sentence_embedding"])
        else:
            with bottom.feeding(part, features["attention_mask"]):
                out.append(model(features)["sentence_embedding"])
    return torch.cat(out), np.concatenate(runs)


def train_step(
    model: Any,
    optimiser: Any,
    texts: list[str],
    codes: np.ndarray,
    temperature: float,
    bottom: _FrozenBottom | None = None,
    overhead: float = CHUNK_OVERHEAD_TOKENS,
) -> float:
    """One optimiser step of the supervised contrastive loss on one batch; returns the loss. With ``bottom``,
    the batch enters the trained layers from the frozen layers' stored output. The forward pass runs in
    runs of similar length (:func:`batch_embeddings`; ``overhead=math.inf``: one padded batch)."""
    import torch

    E, order = batch_embeddings(model, texts, bottom, overhead)
    Z = torch.nn.functional.normalize(E, dim=1)
    loss = supcon_loss(Z, torch.as_tensor(codes[order], device=Z.device), temperature)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return float(loss.item())


def transformer_layers(model: Any) -> tuple[Any, Any, Any] | None:
    """(embeddings module, encoder module, its list of layers) of the Hugging Face model inside a
    sentence-transformers body (BERT, MPNet, RoBERTa and the like), or None for another architecture."""
    import torch

    first = model[0] if len(model) else None
    hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
    embeddings, encoder = getattr(hf, "embeddings", None), getattr(hf, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if embeddings is None or not isinstance(layers, torch.nn.ModuleList) or len(layers) < 2:
        return None
    return embeddings, encoder, layers


class _FrozenBottom:
    """Train only the top layers of a body: the bottom layers' output for each text is computed once.

    A training step then runs (and back-propagates through) the trained layers alone: the encoder's layer
    list is cut to them and the embedding module's output is replaced by the stored output of the last
    frozen layer, padded to the batch. The stored outputs come from the frozen layers in eval mode, so no
    dropout noise reaches the trained layers from below.
    """

    def __init__(self, model: Any, texts: list[str], trained: int) -> None:
        import torch

        self.embeddings, self.encoder, self.layers = transformer_layers(model)
        self.keep = len(self.layers) - trained  # frozen layers, counted from the bottom
        self.stored: dict[str, Any] = {}
        prepare = getattr(model, "preprocess", None) or model.tokenize
        captured: list[Any] = []
        source = self.embeddings if self.keep == 0 else self.layers[self.keep - 1]
        hook = source.register_forward_hook(
            lambda _m, _a, out: captured.append(out[0] if isinstance(out, tuple) else out)
        )
        unique = sorted(set(texts), key=len)  # similar lengths batched together: little padding
        was_training = model.training
        model.eval()
        self.encoder.layer = torch.nn.ModuleList(list(self.layers[: self.keep]))  # the frozen layers alone
        try:
            with torch.no_grad():
                for start in range(0, len(unique), 32):
                    chunk = unique[start : start + 32]
                    features = prepare(chunk)
                    features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
                    captured.clear()
                    model(features)
                    for text, h, m in zip(chunk, captured[0], features["attention_mask"].bool()):
                        self.stored[text] = h[m].clone()  # the text's own tokens, wherever the padding went
        finally:
            self.encoder.layer = self.layers
            hook.remove()
            model.train(was_training)
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in self.layers[self.keep :]:
            for p in layer.parameters():
                p.requires_grad_(True)

    def feeding(self, texts: list[str], mask: Any) -> Any:
        """A context in which the body's forward pass starts from the stored outputs of ``texts``, placed at
        the token positions of the batch's attention ``mask`` (shape (batch, length))."""
        import contextlib

        import torch

        @contextlib.contextmanager
        def context():
            first = self.stored[texts[0]]
            H = first.new_zeros((len(texts), mask.shape[1], first.shape[-1]))
            for i, text in enumerate(texts):
                where = mask[i].bool()
                if int(where.sum()) != len(self.stored[text]):
                    raise InputError(f"the tokenizer gave {text[:40]!r} another length than when it was stored")
                H[i, where] = self.stored[text]
            hook = self.embeddings.register_forward_hook(lambda _m, _a, _out: H)
            self.encoder.layer = torch.nn.ModuleList(list(self.layers[self.keep :]))
            try:
                yield
            finally:
                self.encoder.layer = self.layers
                hook.remove()

        return context()

    def release(self, model: Any) -> None:
        """Make every parameter trainable again (the tuned copy is an ordinary model)."""
        for p in model.parameters():
            p.requires_grad_(True)


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
    layers: int | None = None,
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
    layers : how many of the body's transformer layers are trained, counted from the top; None trains them
        all. The layers below are frozen and run once per text, so a step costs about ``layers`` out of the
        body's layers of a full step (see :class:`_FrozenBottom`).

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
    check_tune_settings(
        {"steps": steps, "batch_size": batch_size, "lr": lr, "temperature": temperature, "seed": seed, "layers": layers}
    )
    start_sha = encoder.identity["weights_sha256"]
    model = copy.deepcopy(encoder.model)
    bottom = None
    if layers is not None:
        found = transformer_layers(model)
        if found is None:
            raise InputError("layers= needs a body whose transformer has an embeddings module and a list of layers")
        total = len(found[2])
        if not 1 <= layers <= total:  # its type was checked with the other settings
            raise InputError(f"layers must be an integer from 1 to {total} (the body's layers), got {layers!r}")
        if layers < total:
            bottom = _FrozenBottom(model, texts, layers)
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    bar = tqdm(total=steps, desc="contrastive tuning", unit="step", disable=not show_progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        try:
            for batch in _batches(codes, batch_size, steps, rng):
                loss = train_step(model, optimiser, [texts[i] for i in batch], codes[batch], temperature, bottom)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
        finally:
            bar.close()
            model.eval()
            if bottom is not None:
                bottom.release(model)
    # the copy runs as the encoder it came from did (an ONNX int8 encoder's tuned copy is exported and
    # quantised on first use, keyed by the tuned weights) and shares its embedding cache, whose keys hold
    # the tuned identity
    tuned = TextEncoder(
        model,
        normalize=encoder.normalize,
        batch_size=encoder.batch_size,
        device=getattr(encoder, "device", "cpu"),
        cache_dir=encoder.cache_dir,
        backend=encoder.backend,
        quantize=encoder.quantize,
        threads=encoder.threads,
    )
    tuned.source = encoder.source
    tuned.tuned_from = start_sha
    tuned.tuning = {"steps": steps, "batch_size": batch_size, "lr": lr, "temperature": temperature, "seed": seed}
    if layers is not None:
        tuned.tuning["layers"] = layers
    # its weights' hash is taken when its identity is first asked for (to save it, or to key a cache): a
    # cross-fitted body that only embeds a few examples is never hashed
    return tuned


def on_torch(encoder: TextEncoder) -> TextEncoder:
    """``encoder``'s weights run by torch, without a cache: for a tuned body that only embeds a few
    examples once (the cross-fitted ones), where an ONNX export would cost more than it saves."""
    if encoder.backend == "torch" and encoder.cache_dir is None:
        return encoder
    copy = TextEncoder(encoder.model, normalize=encoder.normalize, batch_size=encoder.batch_size)
    copy.source, copy.tuned_from, copy.tuning = encoder.source, encoder.tuned_from, encoder.tuning
    copy._sha = encoder._sha
    return copy
