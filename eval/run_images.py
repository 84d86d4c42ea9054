"""Image benchmark: few-shot (1-16 shots) with every head and the cache adapter, and zero-shot with ConSE.

    python -m eval.run_images            # CIFAR-10 and EuroSAT, both resolutions, 5 seeds (about 20 min on 2 cores)
    python -m eval.run_images --quick    # one resolution, 2 seeds, 500 test images a dataset
    python -m eval.report                # then rebuild eval/RESULTS.md

The backbone is the bundled ImageNet MobileNetV2 (`make weights`), run once per image: pooled features for
the heads, ImageNet class scores for ConSE, both cached in eval/cache/. Support sets are drawn from the train
pool with `sample_per_class(labels, shots, seed)`, so every method sees the same examples; the test set is a
fixed stratified subsample (stated in the results). Label names for zero-shot are the dataset's, with
CamelCase split into lower-case words ("AnnualCrop" -> "annual crop"), filled into "a photo of a {}.".
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from eval.datasets import load_images, sample_per_class
from eval.run_text import machine
from eval.sampling import capped_subsample
from fewshot import ConSEEncoder, ImageEncoder, TextEncoder
from fewshot.heads import CacheAdapterHead, KNNHead, LinearHead, PrototypeHead, ZeroShotHead

HERE = Path(__file__).parent
CACHE = HERE / "cache"
RESULTS = HERE / "results"
DATASETS = ("cifar10", "eurosat")
SHOTS = (1, 2, 4, 8, 16)
HEADS = {
    "prototype": lambda: PrototypeHead(),
    "prototype-centred": lambda: PrototypeHead(center=True),
    "knn": lambda: KNNHead(),
    "linear": lambda: LinearHead(),
    "cache (no prior)": lambda: CacheAdapterHead(),
    "cache + ConSE prior": lambda: CacheAdapterHead(),
}
# the first probe of this benchmark (MobileNetV2 at 160 px, prototype head, 5 seeds, CIFAR-10)
PROBE = {"cifar10": {1: 0.37, 5: 0.55, 16: 0.63}}


def _text() -> TextEncoder:
    return TextEncoder(cache_dir=CACHE)


def label_text(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").lower()


def encode(ds_name: str, split: str, images: np.ndarray, size: int) -> dict[str, np.ndarray | float]:
    """Features, ImageNet logits and ConSE vectors of ``images`` (cached on disk), and the images/s."""
    path = CACHE / f"images_{ds_name}_{split}_{len(images)}_{size}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files} | {"rate": float(z["rate"])}
    enc = ImageEncoder(image_size=size, batch_size=64)
    items = list(images)
    t = time.perf_counter()
    feats, logits = enc.features_and_logits(items, show_progress=True)
    rate = len(items) / (time.perf_counter() - t)
    out = {"features": feats, "logits": logits, "rate": np.asarray(rate)}
    for space in ("classes", "text"):
        out[f"conse_{space}"] = ConSEEncoder(enc, _text(), space=space).encode(items)  # the same pass, remembered
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out | {"rate": rate}


def run(datasets: list[str], sizes: list[int], seeds: int, test_cap: int, root: str | None) -> dict:
    rows = []
    for ds_name in datasets:
        ds = load_images(ds_name, root)
        test_idx = capped_subsample(ds.test_labels, test_cap)
        y_test = ds.test_labels[test_idx]
        names = [label_text(n) for n in ds.label_names]
        for size in sizes:
            tr = encode(ds_name, "train", ds.train_images, size)
            te = encode(ds_name, "test", ds.test_images[test_idx], size)
            enc = ImageEncoder(image_size=size)
            base = {"dataset": ds_name, "image_size": size, "test_size": int(len(test_idx))}
            # zero-shot: the label names against the ConSE vectors, in both spaces
            zs_scores = {}
            for space in ("classes", "text"):
                conse = ConSEEncoder(enc, _text(), space=space)
                W = conse.encode_text([f"a photo of a {n}." for n in names])
                zs_scores[space] = (te[f"conse_{space}"] @ W.T, tr[f"conse_{space}"] @ W.T)
                head = ZeroShotHead().fit(W, np.arange(len(names)))
                acc = float((head.predict(te[f"conse_{space}"]) == y_test).mean())
                rows.append(base | {"method": f"zero-shot ConSE ({space} space)", "shots": 0, "accuracy": [acc]})
                print(f"{ds_name} {size}px zero-shot ConSE {space}: {acc:.3f}", flush=True)
            for shots in SHOTS:
                for method, make in HEADS.items():
                    accs, fit_s = [], []
                    for seed in range(seeds):
                        sup = sample_per_class(ds.train_labels, shots, seed)
                        E, y = tr["features"][sup], ds.train_labels[sup]
                        head = make()
                        t = time.perf_counter()
                        if method == "cache + ConSE prior":
                            head.fit(E, y, prior=zs_scores["classes"][1][sup])
                            pred = head.predict(te["features"], prior=zs_scores["classes"][0])
                        else:
                            head.fit(E, y)
                            pred = head.predict(te["features"])
                        fit_s.append(time.perf_counter() - t)
                        accs.append(float((pred == y_test).mean()))
                    rows.append(
                        base
                        | {
                            "method": method,
                            "shots": shots,
                            "accuracy": accs,
                            "fit_and_predict_s": float(np.mean(fit_s)),
                        }
                    )
                    print(f"{ds_name} {size}px {shots}-shot {method}: {np.mean(accs):.3f}", flush=True)
            rows.append(base | {"method": "_encoding", "images_per_s": round(float(te["rate"]), 1)})
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="data folder (default: $FEWSHOT_DATA or ../shared/data)")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--test-cap", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="160 px, 2 seeds, 500 test images a dataset")
    ap.add_argument("--note", default="", help="a remark stored with the results (e.g. machine load)")
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.seeds, a.test_cap = [160], 2, 500
    t = time.perf_counter()
    res = run(a.datasets, a.sizes, a.seeds, a.test_cap, a.data)
    res.update(
        {
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "command": "python -m eval.run_images" + (" --quick" if a.quick else ""),
            "seeds": a.seeds,
            "wall_s": round(time.perf_counter() - t, 1),
            "note": a.note,
            "probe": PROBE,
        }
    )
    out = RESULTS / ("images_quick.json" if a.quick else "images.json")
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out} in {res['wall_s']} s")


if __name__ == "__main__":
    main()
