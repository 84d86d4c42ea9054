"""Sentence-transformers models on ONNX Runtime: exported once from the torch model, cached, run without torch.

The export is the whole sentence-transformers pipeline (transformer, pooling and any dense or normalising
module after it) traced by ``torch.onnx.export``, so the ONNX model returns the vector the torch model
returns. The transformer is traced with eager attention, which onnxruntime's transformer optimizer fuses
(attention, LayerNorm with the residual, GELU with its bias). Each fp32 export is checked against the torch
model on probe sentences when it is made and refused below a cosine of 0.999 (:data:`FP32_MIN_COSINE`), so
an ONNX fp32 encoder and the torch encoder it came from are interchangeable (see
:func:`fewshot.encoders.identity.same_encoder`).

``quantize="int8"`` adds onnxruntime's dynamic quantisation: weights int8 per output channel, activations
uint8 with one scale per batch and matrix, computed at run time. One scale per matrix is the weak point: a
few channels of a transformer's activations run far larger than the rest, and the scale that covers them
leaves the others few levels. So before quantising, the inputs of the matrix products that read the
attention block's input, its output and the feed-forward block's input are smoothed (SmoothQuant, Xiao et
al., ICML 2023): each channel ``j`` is divided by ``s_j = a_j^alpha / w_j^(1-alpha)`` and the weight's row
``j`` multiplied by it, ``a_j`` the largest activation seen on calibration sentences (the shipped background
sentences and the probes, run through the fp32 model), ``w_j`` the row's largest weight, alpha
:data:`SMOOTH_ALPHA`. The product is unchanged in fp32 (a ``Mul`` per smoothed input runs before it); int8
rounds far less. The down-projection of each feed-forward block (its input is the GELU output) is not
smoothed, since smoothing it made the int8 model much worse; the first layer's stays fp32, the matrix product
that loses the most (3% of the int8 speed). On 1,200 texts of development datasets (banking77, SST-2, Subj,
20 Newsgroups), cosine to fp32: mean 0.9965 and lowest 0.9887 with smoothing, 0.9940 and 0.9807 without;
alpha 0.5 to 0.8 gave the same mean, 0.3 less; smoothing the down-projections too, 0.9844 and 0.9310
(``python -m eval.bench_int8_recipe``). Because activation scales are computed per batch, an int8 vector
also depends slightly on the texts batched with it (a cosine of 0.993 at worst to the same text encoded
alone in that run, 0.987 without smoothing). Int8 vectors are therefore never mixed with fp32 ones, and the
identity records the int8 recipe (:data:`INT8_RECIPE`), so vectors of another recipe are not mixed either.

Sessions run with ``intra_op_num_threads`` threads that sleep rather than spin while they wait for work: on
a 2-core machine shared with other work, spinning threads took 10-20% of the throughput in a measurement
(the same model with spinning off ran 1.07-1.2x faster). A call of several batches runs them side by side
instead, one batch a thread on a second session of one intra-op thread ("lanes"): the matrices of a batch of
short texts are too small for two threads to share one without waiting on each other, and on 1,024 banking
queries at batch 32 lanes ran 1.08x (int8) and 1.07x (fp32) faster than one two-thread session. Long texts
run in batches of at most :data:`BATCH_TOKENS` padded tokens rather than 32 texts: on 128 long e-mails (177
tokens on average) that ran 1.24x faster for int8 and 1.56x for fp32 on two threads, 1.21-1.22x on one
(``python -m eval.bench_batch_tokens``, eval/results/bench_batch_tokens.md; caps of 2,048 and 4,096 tokens
gained less). A single batch, a
service's one text, still gets every thread. Lanes hold a second copy
of the model (23 MB int8, 90 MB fp32 for the bundled MiniLM), made on the first call that needs it. A lane
computes exactly what the main session computes: the vectors do not depend on the mode.

Files live under ``$FEWSHOT_HOME/onnx/`` (see :mod:`fewshot.encoders.derived`).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.encoders.derived import UseMark, cached_build, fewshot_home, mark_used, read_manifest, write_manifest
from fewshot.errors import InputError, MissingDependencyError, ModelLoadError

EXPORT_VERSION = 1  # part of every export folder's name: a change of recipe makes new folders
INT8_RECIPE = 2  # the int8 recipe, in the int8 folder's name and the identity (1 had no smoothing)
SMOOTH_ALPHA = 0.5  # SmoothQuant's migration strength: the share of an activation's range moved to the weight
OPSET = 17
FP32_MIN_COSINE = 0.999  # an fp32 export further than this from torch on the probes is refused
INT8_MIN_COSINE = 0.95  # a sanity floor for the int8 model against fp32 on the probes (it reaches ~0.99)
QUANTIZATIONS = (None, "int8")
TOKEN_CHUNK = 4096  # texts tokenized and sorted by length together (bounds the memory of a large input)
BATCH_TOKENS = 1024  # padded tokens a batch holds at most (long texts run in smaller batches; see encode)

# sentences the export is checked on: short, long, punctuation, digits, non-ASCII, one past the length limit
PROBES = [
    "hi",
    "How do I reset my password?",
    "The central bank raised interest rates by half a point on Thursday, surprising most analysts.",
    "my card payment was declined twice at the supermarket even though I have money in the account",
    "Ce film était magnifique, je le recommande vivement à tout le monde !",
    "¿Dónde está la estación de tren más cercana?",
    "ERROR 404: page not found (code=0x1F; retry in 30s)",
    "I loved it.",
    "Subject: meeting moved to 3pm\n\nHi all, the weekly sync is now at 3pm in room 2.14. Thanks!",
    "Stocks fell sharply as investors weighed new tariffs against strong earnings from technology firms. " * 40,
    "   leading and trailing spaces   ",
    "emoji 🙂 and accents: naïve café, Zürich, São Paulo",
]


def onnxruntime_module() -> Any:
    """``onnxruntime``, or a :class:`MissingDependencyError` naming the extra."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "backend='onnx' needs onnxruntime (and onnx to export): pip install 'fewshot[fast]'"
        ) from exc
    return onnxruntime


def default_threads() -> int:
    """Intra-op threads for an ONNX session: ``$FEWSHOT_ONNX_THREADS``, else the cores this process may use,
    at most 8 (a 2-core machine gets 2)."""
    env = os.environ.get("FEWSHOT_ONNX_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise InputError(f"FEWSHOT_ONNX_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise InputError(f"FEWSHOT_ONNX_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def export_folder(weights_sha: str, quantize: str | None) -> Path:
    """The cache folder of the export of the model with weights hash ``weights_sha``."""
    if quantize is None:
        return fewshot_home() / "onnx" / f"{weights_sha}-fp32-v{EXPORT_VERSION}"
    return fewshot_home() / "onnx" / f"{weights_sha}-{quantize}-v{EXPORT_VERSION}.{INT8_RECIPE}"


def ensure_export(
    weights_sha: str, quantize: str | None, load_model: Callable[[], Any], keep_fp32: bool = True
) -> tuple[Path, dict]:
    """The export folder and manifest for these weights, exporting first if needed.

    ``load_model()`` returns the ``SentenceTransformer`` to export; it is called only when an export is made.
    ``keep_fp32=False`` (a tuned body's weights, used once) quantises from a scratch fp32 export that is then
    deleted, so only the int8 export stays in the cache (about a quarter of the disk).
    """
    fp32 = export_folder(weights_sha, None)

    def build_fp32(tmp: Path) -> None:
        export_fp32(load_model(), tmp, weights_sha)

    if quantize is None:
        return fp32, cached_build(fp32, build_fp32)
    target = export_folder(weights_sha, quantize)
    manifest = read_manifest(target)
    if manifest is not None and mark_used(target):  # else pruned meanwhile: built again below
        return target, manifest

    def build_int8(tmp: Path) -> None:
        if keep_fp32 or read_manifest(fp32) is not None:
            quantize_int8(fp32, cached_build(fp32, build_fp32), tmp)
            return
        import shutil
        import tempfile

        scratch = Path(tempfile.mkdtemp(dir=tmp, prefix=".scratch-fp32-"))  # under the build's own lock
        try:
            build_fp32(scratch)
            quantize_int8(scratch, read_manifest(scratch), tmp)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    return target, cached_build(target, build_int8)


# -- export -----------------------------------------------------------------------------------------
def _st_features(model: Any, texts: list[str]) -> dict[str, Any]:
    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
    return dict(prepare(texts))


def _fast_tokenizer_json(model: Any) -> str:
    tok = getattr(model, "tokenizer", None)
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        raise ModelLoadError(
            "backend='onnx' needs a model with a fast (Rust) tokenizer, so texts are tokenized without "
            f"transformers; {type(tok).__name__} is not one"
        )
    return backend.to_str()


def _tokenizer(json_text: str, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json_text)
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def export_fp32(model: Any, folder: Path, weights_sha: str) -> None:
    """Export the ``SentenceTransformer`` ``model`` into ``folder`` (model.onnx, tokenizer.json, manifest).

    Raises :class:`ModelLoadError` when the model cannot be exported or the export does not reproduce it.
    """
    import copy

    import torch

    ort = onnxruntime_module()
    try:
        import onnx  # noqa: F401  (the optimizer needs it)
    except ImportError as exc:
        raise MissingDependencyError("exporting to ONNX needs onnx: pip install 'fewshot[fast]'") from exc
    original = model
    with torch.no_grad():  # what the torch encoder gives, from the model as it is shared
        reference = original.encode(PROBES, convert_to_numpy=True, normalize_embeddings=False, batch_size=4)
    reference = np.asarray(reference, dtype=np.float32)
    model = copy.deepcopy(original).to("cpu").eval()  # the shared model is left as it is
    transformer = getattr(model[0], "auto_model", None)
    config = getattr(transformer, "config", None)
    if transformer is not None and hasattr(transformer, "set_attn_implementation"):
        try:  # eager attention traces into the pattern onnxruntime's optimizer fuses
            transformer.set_attn_implementation("eager")
        except Exception:  # pragma: no cover - a model that only supports one implementation
            pass
    max_length = int(getattr(model, "max_seq_length", None) or 512)
    tokenizer_json = _fast_tokenizer_json(model)
    tokenizer = _tokenizer(tokenizer_json, max_length)
    pad_id = int(getattr(getattr(model, "tokenizer", None), "pad_token_id", None) or 0)
    sample = _st_features(model, PROBES[1:3])  # two lengths, so the padding mask is traced
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise ModelLoadError(f"cannot export: the model's tokenizer gives {sorted(sample)}, not input_ids and a mask")

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = model

        def forward(self, *tensors: Any) -> Any:
            features = dict(zip(names, tensors))
            features["modality"] = "text"
            return self.st(features)["sentence_embedding"]

    raw = folder / "raw.onnx"
    axes = {k: {0: "batch", 1: "tokens"} for k in names} | {"embedding": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                Pipeline().eval(),
                tuple(sample[k] for k in names),
                str(raw),
                dynamo=False,
                input_names=names,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot export the model to ONNX ({type(exc).__name__}: {exc})") from exc
    # the tokenizer run without transformers must give the ids the model was given
    st_ids = _st_features(model, PROBES)
    for i, enc in enumerate(tokenizer.encode_batch(PROBES)):
        mask = st_ids["attention_mask"][i].bool()
        if st_ids["input_ids"][i][mask].tolist() != enc.ids:
            raise ModelLoadError(
                f"cannot export: the fast tokenizer does not reproduce the model's tokens on {PROBES[i][:60]!r}"
            )
    optimized = folder / "model.onnx"
    fusion: dict[str, int] = {}
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optimize_model(
                str(raw),
                model_type="bert",
                num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                hidden_size=int(getattr(config, "hidden_size", 0) or 0),
            )
            fusion = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
            opt.save_model_to_file(str(optimized))
        cos = _cosines(OnnxTextRuntime.run_once(optimized, tokenizer, names, PROBES, pad_id), reference)
    except Exception:  # the optimizer does not know this architecture: keep the plain export
        cos = np.array([-1.0])
    if cos.min() < FP32_MIN_COSINE:
        os.replace(raw, optimized)
        fusion = {}
        cos = _cosines(OnnxTextRuntime.run_once(optimized, tokenizer, names, PROBES, pad_id), reference)
        if cos.min() < FP32_MIN_COSINE:
            raise ModelLoadError(
                f"the ONNX export does not reproduce the torch model (cosine {cos.min():.5f} on a probe sentence, "
                f"below {FP32_MIN_COSINE}); use backend='torch' for this model"
            )
    raw.unlink(missing_ok=True)
    (folder / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    write_manifest(
        folder,
        {
            "format": "fewshot-onnx-text",
            "export_version": EXPORT_VERSION,
            "weights_sha256": weights_sha,
            "dim": int(reference.shape[1]),
            "max_seq_length": max_length,
            "inputs": names,
            "pad_id": pad_id,
            "quantization": None,
            "opset": OPSET,
            "fused_operators": fusion,
            "probe_min_cosine_to_torch": round(float(cos.min()), 7),
            "versions": _versions(ort),
        },
        ["model.onnx", "tokenizer.json"],
    )


def _ffn_down_projections(graph: Any) -> list[str]:
    """Names of the MatMul nodes that take a GELU's output (the down-projection of each feed-forward block),
    in graph order."""
    producers = {out: node for node in graph.node for out in node.output}
    names = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        src = producers.get(node.input[0])
        if src is not None and ("Gelu" in src.op_type or "act_fn" in src.name or "intermediate_act" in src.name):
            names.append(node.name)
    return names


def _smoothable(graph: Any) -> list[Any]:
    """The MatMul and Attention nodes with a constant weight that smoothing applies to: all but the
    feed-forward down-projections (see the module docstring), in graph order."""
    weights = {init.name for init in graph.initializer}
    downs = set(_ffn_down_projections(graph))
    return [
        node
        for node in graph.node
        if node.op_type in ("MatMul", "Attention") and node.input[1] in weights and node.name not in downs
    ]


def activation_ranges(model: Any, tensors: list[str], tokenizer: Any, names: list[str], texts: list[str], pad_id: int):
    """The largest absolute value of each channel (last axis) of each of ``tensors``, over the tokens of
    ``texts`` run one at a time (no padding) through ``model`` (an fp32 ``ModelProto``)."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in known:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for text in texts:
        outputs = session.run(tensors, _feeds(tokenizer.encode_batch([text]), names, pad_id))
        for name, value in zip(tensors, outputs, strict=True):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def smooth_activations(model: Any, ranges: dict[str, np.ndarray], alpha: float) -> list[str]:
    """Smooth the inputs of :func:`_smoothable` nodes of ``model`` in place (SmoothQuant): the input is
    multiplied by ``1 / s`` in a new ``Mul`` node and the weight's rows by ``s``, so the fp32 product is
    unchanged. Returns the names of the smoothed nodes."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    before: dict[str, Any] = {}
    for node in _smoothable(graph):
        W = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
        a = np.maximum(ranges[node.input[0]].astype(np.float64), 1e-5)
        w = np.maximum(np.abs(W).max(axis=1), 1e-5)
        s = np.clip(a**alpha / w ** (1.0 - alpha), 1e-2, 1e2)
        weights[node.input[1]].CopyFrom(numpy_helper.from_array((W * s[:, None]).astype(np.float32), node.input[1]))
        inverse = f"{node.name}/smooth_inverse"
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inverse))
        smoothed = f"{node.name}/smoothed_input"
        before[node.name] = helper.make_node("Mul", [node.input[0], inverse], [smoothed], name=f"{node.name}/smooth")
        node.input[0] = smoothed
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:  # each Mul right before the node it feeds keeps the graph in topological order
        if node.name in before:
            graph.node.append(before[node.name])
        graph.node.append(node)
    return list(before)


def quantize_int8(
    source: Path, source_manifest: dict[str, Any], folder: Path, smooth_alpha: float | None = SMOOTH_ALPHA
) -> None:
    """Quantise the fp32 export in ``source`` into ``folder``: smoothed activations, then dynamic int8 with
    per-channel weights (see the module docstring). ``smooth_alpha=None`` skips the smoothing (the recipe
    before it, for comparisons: ``eval/bench_int8_recipe.py``)."""
    import shutil

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from fewshot.classifiers.background import background_sentences

    ort = onnxruntime_module()
    names = list(source_manifest["inputs"])
    tokenizer = _tokenizer((source / "tokenizer.json").read_text(encoding="utf-8"), source_manifest["max_seq_length"])
    pad_id = int(source_manifest.get("pad_id", 0))
    model = onnx.load(str(source / "model.onnx"))
    calibration = [*background_sentences(), *PROBES]
    smoothed: list[str] = []
    if smooth_alpha is not None:
        inputs = sorted({node.input[0] for node in _smoothable(model.graph)})
        ranges = activation_ranges(model, inputs, tokenizer, names, calibration, pad_id)
        smoothed = smooth_activations(model, ranges, smooth_alpha)
    keep_fp32 = _ffn_down_projections(model.graph)[:1]  # the first layer's: see the module docstring
    staged = folder / "smoothed.onnx"
    onnx.save(model, str(staged))
    del model
    root = logging.getLogger()
    advice = _DropRecords("pre-processing before quantization")  # onnxruntime's advice for image models
    root.addFilter(advice)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(staged),
                str(folder / "model.onnx"),
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=keep_fp32,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        root.removeFilter(advice)
        staged.unlink(missing_ok=True)
    shutil.copyfile(source / "tokenizer.json", folder / "tokenizer.json")
    fp32 = OnnxTextRuntime.run_once(source / "model.onnx", tokenizer, names, PROBES, pad_id)
    cos = _cosines(OnnxTextRuntime.run_once(folder / "model.onnx", tokenizer, names, PROBES, pad_id), fp32)
    if cos.min() < INT8_MIN_COSINE:
        raise ModelLoadError(
            f"the int8 model is too far from fp32 (cosine {cos.min():.4f} on a probe sentence); use quantize=None"
        )
    fields = {k: v for k, v in source_manifest.items() if k not in ("files", "probe_min_cosine_to_torch")}
    write_manifest(
        folder,
        {
            **fields,
            "quantization": "int8",
            "quantization_recipe": {
                "version": INT8_RECIPE if smooth_alpha is not None else 1,
                "method": "onnxruntime quantize_dynamic" + (" after SmoothQuant smoothing" if smoothed else ""),
                "weights": "int8, symmetric, per output channel",
                "activations": "uint8, asymmetric, per tensor, scale computed per batch at run time",
                "smoothing": {
                    "alpha": smooth_alpha,
                    "calibration_sentences": len(calibration),
                    "nodes": smoothed,
                },
                "kept_fp32": keep_fp32,
            },
            "probe_min_cosine_to_fp32": round(float(cos.min()), 6),
            "versions": _versions(ort),
        },
        ["model.onnx", "tokenizer.json"],
    )


class _DropRecords(logging.Filter):
    """A logging filter that drops records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _versions(ort: Any) -> dict[str, str]:
    import importlib.metadata as md

    out = {"onnxruntime": ort.__version__}
    for name in ("onnx", "torch", "sentence-transformers", "transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:  # pragma: no cover
            pass
    return out


def make_session(path: Path, threads: int) -> Any:
    """An onnxruntime CPU session for the model at ``path`` with ``threads`` intra-op threads (not spinning)."""
    ort = onnxruntime_module()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see the module docstring
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"onnxruntime cannot load {path} ({type(exc).__name__}: {exc})") from exc


# -- inference --------------------------------------------------------------------------------------
class OnnxTextRuntime:
    """An export loaded for inference: one onnxruntime session and the tokenizer, shared by every thread.

    Parameters
    ----------
    folder : an export folder (see :func:`ensure_export`), with its manifest.
    threads : intra-op threads of the session.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], threads: int) -> None:
        self.folder = folder
        self.manifest = manifest
        self.threads = threads
        self.inputs: list[str] = list(manifest["inputs"])
        self.pad_id = int(manifest.get("pad_id", 0))
        self.dim = int(manifest["dim"])
        self.tokenizer = _tokenizer((folder / "tokenizer.json").read_text(encoding="utf-8"), manifest["max_seq_length"])
        self.session = make_session(folder / "model.onnx", threads)
        self._lanes: tuple[Any, Any, int] | None = None  # (one-thread session, thread pool, pid), made when needed
        self._lanes_lock = threading.Lock()
        self._in_use = UseMark(folder)

    @classmethod
    def run_once(cls, path: Path, tokenizer: Any, names: list[str], texts: list[str], pad_id: int) -> np.ndarray:
        """Embed ``texts`` with the model at ``path`` in one batch (checks at export time)."""
        session = make_session(path, threads=1)
        feeds = _feeds(tokenizer.encode_batch(texts), names, pad_id)
        return np.asarray(session.run(None, feeds)[0], dtype=np.float32)

    def encode(self, texts: list[str], batch_size: int, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts``: shape (n, dim), float32, as the model returns them (not normalised again).

        Texts are tokenized in chunks, sorted by token count and batched, so a batch carries little padding.
        A batch holds at most ``batch_size`` texts and at most :data:`BATCH_TOKENS` tokens padded (one text
        at least), so long texts run in smaller batches: a batch of that many tokens still fills the matrix
        products, and batches of even cost keep the lanes busy to the end. The batches depend on the texts
        and ``batch_size`` only, never on the threads (an int8 vector depends slightly on its batch).
        """
        from tqdm.auto import tqdm

        self._in_use()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(texts), desc="encoding", unit="text", disable=not show_progress)
        try:
            for start in range(0, len(texts), TOKEN_CHUNK):
                encodings = self.tokenizer.encode_batch(texts[start : start + TOKEN_CHUNK])
                lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
                order = np.argsort(-lengths, kind="stable")
                batches = token_batches(order, lengths, batch_size, BATCH_TOKENS)

                def run(session: Any, idx: np.ndarray, encodings: list[Any] = encodings, start: int = start) -> None:
                    feeds = _feeds([encodings[i] for i in idx], self.inputs, self.pad_id)
                    out[start + idx] = session.run(None, feeds)[0]
                    bar.update(len(idx))

                lanes = self._lane_pool() if self.threads > 1 and len(batches) > 1 else None
                if lanes is not None:  # lanes: see the module docstring
                    session, pool = lanes
                    for _ in pool.map(lambda idx, s=session: run(s, idx), batches):
                        pass  # map re-raises a lane's exception here
                else:
                    for idx in batches:
                        run(self.session, idx)
        finally:
            bar.close()
        return out

    def _lane_pool(self) -> tuple[Any, Any] | None:
        """The one-thread session and the pool of ``threads`` threads that run batches side by side, or None
        when the export's file is gone (pruned from the cache while this process ran): the batches then run
        one after another on the session already loaded."""
        with self._lanes_lock:
            if self._lanes is None or self._lanes[2] != os.getpid():  # a forked child has none of the threads
                from concurrent.futures import ThreadPoolExecutor

                path = self.folder / "model.onnx"
                if not path.is_file():
                    return None
                session = make_session(path, threads=1)
                pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fewshot-onnx-lane")
                self._lanes = (session, pool, os.getpid())
            return self._lanes[0], self._lanes[1]


def token_batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Consecutive runs of ``order`` (indices sorted by decreasing ``lengths``) of at most ``batch_size``
    indices whose padded size, count times the first (longest) length, stays within ``max_tokens``; a text
    longer than that alone makes a batch."""
    batches, start = [], 0
    while start < len(order):
        fits = max(1, min(batch_size, max_tokens // max(int(lengths[order[start]]), 1)))
        batches.append(order[start : start + fits])
        start += fits
    return batches


def _feeds(encodings: list[Any], names: list[str], pad_id: int) -> dict[str, np.ndarray]:
    """Padded int64 arrays of shape (batch, longest) for the model's inputs."""
    longest = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), longest), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids) if "token_type_ids" in names else None
    for row, e in enumerate(encodings):
        n = len(e.ids)
        ids[row, :n] = e.ids
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = e.type_ids
    feeds = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        feeds["token_type_ids"] = types
    return feeds
