"""``fewshot fit``, ``predict`` and ``zeroshot``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from fewshot.cli.common import (
    abstain_setting,
    check_image_records,
    check_images_readable,
    check_output,
    head_params,
    image_rows,
    is_image_input,
    make_encoder,
    output,
    parse_labels,
    progress,
)
from fewshot.cli.records import guess_format, label_column, read_records, text_column, unique_name, write_records
from fewshot.errors import InputError


def _records(a: argparse.Namespace, path: str | None, label_col: str | None = None, reader: Any = None):
    """(rows, texts, labels) of a record file or an image folder/file. ``reader``: (encoder, whose), so
    that records given to an encoder that reads images are checked to name image files."""
    if is_image_input(path):
        return image_rows(path, labelled=label_col is not None)
    rows = read_records(path, a.format, a.encoding)
    where = path if path not in (None, "-") else "standard input"
    texts = text_column(rows, a.text_col, where)
    if reader is not None:
        check_image_records(path, texts, *reader)
    labels = label_column(rows, label_col, where) if label_col is not None else None
    return rows, texts, labels


def cmd_fit(a: argparse.Namespace) -> int:
    from fewshot.classifiers import FewShotClassifier
    from fewshot.classifiers.persistence import FILES
    from fewshot.errors import SaveExistsError
    from fewshot.heads.registry import check_head, make_head
    from fewshot.storage import check_target, read_manifest

    if a.seed is not None and a.tune is None:
        raise InputError("--seed is the seed of the tuning: give --tune with it")
    check_target(a.output, "classifier", FILES)  # before any encoding
    if not a.overwrite and read_manifest(a.output) is not None:
        raise InputError(f"a model is already saved at {a.output}; give --overwrite to replace it")
    params = head_params(a.head_params)
    check_head(make_head(a.head, **(params or {})))  # so are the head's settings
    encoder = make_encoder(a.encoder, is_image_input(a.data))
    check_images_readable(a.data, encoder, f"--encoder {a.encoder}")
    _, texts, labels = _records(a, a.data, a.label_col, reader=(encoder, f"--encoder {a.encoder}"))
    seed = 0 if a.seed is None else a.seed
    tune = False if a.tune is None else {"seed": seed} if a.tune == "auto" else {"steps": a.tune, "seed": seed}
    clf = FewShotClassifier(
        encoder,
        head=a.head,
        head_params=params,
        tune=tune,
        abstain=abstain_setting(a.abstain),
        lexical="auto" if a.lexical else False,
    )
    clf.fit(texts, labels, show_progress=progress(texts) or a.tune is not None)  # a tune shows its steps
    try:
        clf.save(a.output, overwrite=a.overwrite)  # checked again under the lock: another fit may have finished
    except SaveExistsError as exc:  # in the CLI's words, not the library's
        raise InputError(f"a model was saved at {a.output} while this fit ran; give --overwrite to replace it") from exc
    picked = f" (picked {clf.head_.choice_}: {clf.head_.selection_['why']})" if a.head == "auto" else ""
    tuned = f", body tuned for {clf.tuning_['steps']} steps" if clf.tuning_ else ""
    words = ""
    if clf.lexical_:
        why = clf.lexical_.get("why")
        words = f", lexical channel off ({why})" if why else f", lexical weight {clf.lexical_['picked']}"
    print(
        f"fitted {article(a.head)} {a.head} classifier{picked} on {len(texts)} examples, "
        f"{len(clf.classes_)} classes{tuned}{words} -> {a.output}",
        file=sys.stderr,
    )
    return 0


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def verb(stem: str, subjects: list[str]) -> str:
    """``stem`` agreeing with ``subjects``: "shapes" for one option, "shape" for several."""
    return stem if len(subjects) > 1 else stem + "s"


def output_format(a: argparse.Namespace) -> str:
    """The output format: the output file's, else the input's; plain text and images write JSON lines."""
    if a.output not in (None, "-"):
        try:
            fmt = guess_format(a.output, None)
        except InputError:  # --format names the input's format, so the reader's advice would mislead here
            raise InputError(
                f"cannot tell the output format of {a.output}: name it .csv or .jsonl (.txt gets JSON lines); "
                "for Parquet, use fewshot batch"
            ) from None
    elif is_image_input(a.data):
        fmt = "jsonl"
    else:
        fmt = guess_format(a.data, a.format)
    return "jsonl" if fmt == "txt" else fmt


def prediction_rows(
    rows: list[dict[str, Any]],
    labels: np.ndarray,
    scores: np.ndarray,
    classes: list[Any],
    proba: np.ndarray,
    fmt: str,
    column: str,
) -> list[dict[str, Any]]:
    """One output record per input: its own fields, then the prediction ("" for "none of these"), the
    class score the decision used (compared with the abstention threshold), the predicted class's
    probability and every class's probability. Output names never replace an input column."""
    taken = {str(k) for r in rows[:1] for k in r}
    name_pred = unique_name(column, taken)
    name_score = unique_name("score", taken | {name_pred})
    name_prob = unique_name("probability", taken | {name_pred, name_score})
    name_all = unique_name("probabilities", taken | {name_pred, name_score, name_prob})
    name_each = []  # p_<class> for CSV, clear of the inputs' columns, the names above and one another
    for c in classes if fmt == "csv" else ():
        name_each.append(unique_name(f"p_{c}", taken | {name_pred, name_score, name_prob, *name_each}))
    out = []
    for r, lab, s, p in zip(rows, labels.tolist(), scores, proba):  # Python values, for JSON
        rec = dict(r)
        abstained = lab is None or lab not in classes  # None, or the model's abstain_label
        rec[name_pred] = "" if abstained else lab
        rec[name_score] = round(float(s), 6)
        rec[name_prob] = None if abstained else round(float(p[classes.index(lab)]), 6)
        if fmt == "csv":
            for name, v in zip(name_each, p):
                rec[name] = round(float(v), 6)
        else:
            rec[name_all] = {str(c): round(float(v), 6) for c, v in zip(classes, p)}
        out.append(rec)
    return out


def cmd_predict(a: argparse.Namespace) -> int:
    from fewshot.classifiers import FewShotClassifier

    check_output(a.output)  # the output is checked before the model loads
    fmt = output_format(a)
    clf = FewShotClassifier.load(a.model)
    if a.abstain is not None:
        if a.abstain == "auto":
            raise InputError("predict --abstain takes off or a number; 'auto' is set when fitting (fit --abstain auto)")
        threshold = abstain_setting(a.abstain, auto=False)
        if threshold is not None and getattr(clf, "lexical_channel_", None) is not None:
            raise InputError(
                f"{a.model} pools its head with the lexical channel, whose scores are log-probabilities, not the "
                "head's: a score threshold needs a model fitted with --abstain (or --no-lexical)"
            )
        if threshold is not None:  # one no score reaches abstains on everything, in silence
            from fewshot.classifiers.few_shot import check_threshold

            check_threshold(clf.head_, threshold, given="--abstain {:g}", alternative=" (or off)")
        clf.threshold_ = threshold
    check_images_readable(a.data, clf.encoder_, f"the model at {a.model}")
    rows, texts, _ = _records(a, a.data, reader=(clf.encoder_, f"the model at {a.model}"))
    labels, scores, proba = clf.predict_with_scores(texts, show_progress=progress(texts))
    out_rows = prediction_rows(rows, labels, scores, clf.classes_.tolist(), proba, fmt, a.prediction_col)
    with output(a.output) as f:
        write_records(out_rows, f, fmt)
    return 0


def cmd_zeroshot(a: argparse.Namespace) -> int:
    from fewshot.classifiers import ZeroShotClassifier

    abstain = abstain_setting(a.abstain)
    if not a.multi_label:
        given = [f"--{k.replace('_', '-')}" for k in ("threshold", "top_k", "margin") if getattr(a, k) is not None]
        if given:
            raise InputError(
                f"{', '.join(given)} {verb('shape', given)} the tags of --multi-label; without it each record "
                "gets one label (--abstain gives 'none of these')"
            )
    else:
        options = {
            "--abstain": abstain is not None,
            "--corpus": a.corpus,
            "--adapt-to-input": a.adapt_to_input,
        }
        single = [flag for flag, value in options.items() if value]
        if single:
            raise InputError(
                f"{', '.join(single)} {verb('shape', single)} single-label predictions; --multi-label scores "
                "each label on its own (it gives no tag where nothing fits; --threshold or --margin set how many tags)"
            )
        if a.threshold is not None and a.margin is not None:
            raise InputError("give --threshold (a fixed cosine) or --margin (relative to the best label), not both")
    if abstain == "auto" and not (a.corpus or a.adapt_to_input):
        raise InputError(
            "--abstain auto sets the threshold from unlabelled records: give --corpus FILE or --adapt-to-input, "
            "or a number"
        )
    labels = parse_labels(a.labels, a.labels_file, a.encoding)
    check_output(a.output)  # the output is checked before the model loads
    fmt = output_format(a)
    encoder = make_encoder(a.encoder, is_image_input(a.data))
    check_images_readable(a.data, encoder, f"--encoder {a.encoder}")
    zs = ZeroShotClassifier(
        labels,
        encoder=encoder,
        templates=a.templates,
        adapt=a.adapt,
        expand=a.expand,
        frame=a.frame,
        pool=a.pool,
        abstain=abstain,
    )
    rows, texts, _ = _records(a, a.data, reader=(encoder, f"--encoder {a.encoder}"))
    corpus = None
    if a.corpus:
        corpus = _records(a, a.corpus, reader=(encoder, f"--encoder {a.encoder}"))[1]
    elif a.adapt_to_input:
        corpus = texts
    zs.fit(corpus, show_progress=progress(corpus))
    why = zs.adaptation_.get("why")
    if corpus is not None and why:  # too few records to self-train on: said, not skipped in silence
        source = a.corpus or "the input"
        note = "; --abstain auto still takes its threshold from it" if abstain == "auto" else ""
        print(f"fewshot: note: the labels were not adapted to {source}: {why}{note}", file=sys.stderr)
    if a.multi_label:
        tags = zs.tag(texts, threshold=a.threshold, top_k=a.top_k, margin=a.margin, show_progress=progress(texts))
        taken = {str(k) for r in rows[:1] for k in r}
        base = a.prediction_col or "tags"
        name_tags = unique_name(base, taken)
        name_scores = unique_name("tag_scores" if base == "tags" else f"{base}_scores", taken)
        out_rows = []
        for r, t in zip(rows, tags):
            rec = dict(r)
            if fmt == "csv":
                rec[name_tags] = ";".join(str(lab) for lab, _ in t)
                rec[name_scores] = ";".join(f"{s:.4f}" for _, s in t)
            else:
                rec[name_tags] = [{"label": lab, "score": round(s, 6)} for lab, s in t]
            out_rows.append(rec)
    else:
        labels_out, scores, proba = zs.predict_with_scores(texts, show_progress=progress(texts))
        column = a.prediction_col or "prediction"
        out_rows = prediction_rows(rows, labels_out, scores, zs.classes_.tolist(), proba, fmt, column)
    with output(a.output) as f:
        write_records(out_rows, f, fmt)
    return 0
