"""fewshot: few-shot and zero-shot classification and semantic search on frozen pretrained encoders."""

from __future__ import annotations

__version__ = "0.2.0"

from fewshot.classifiers import FewShotClassifier, ZeroShotClassifier  # noqa: E402
from fewshot.encoders import (  # noqa: E402
    ClipEncoder,
    ConSEEncoder,
    Encoder,
    ImageEncoder,
    OnnxImageEncoder,
    StaticEncoder,
    TextEncoder,
)
from fewshot.errors import (  # noqa: E402
    AccessError,
    ConcurrentWriteError,
    CorruptFileError,
    DimensionError,
    EncoderMismatchError,
    FewShotError,
    FewShotWarning,
    InputError,
    LockTimeoutError,
    MissingDependencyError,
    ModelLoadError,
    NotFittedError,
    SaveExistsError,
    SaveNotFoundError,
)
from fewshot.heads import (  # noqa: E402
    AutoHead,
    BaseHead,
    CacheAdapterHead,
    KNNHead,
    LinearHead,
    PrototypeHead,
    ZeroShotHead,
)
from fewshot.index import EmbeddingIndex, Hit  # noqa: E402
from fewshot.tuning import contrastive_tune  # noqa: E402

__all__ = [
    "AccessError",
    "AutoHead",
    "BaseHead",
    "CacheAdapterHead",
    "ClipEncoder",
    "ConSEEncoder",
    "ConcurrentWriteError",
    "CorruptFileError",
    "DimensionError",
    "EmbeddingIndex",
    "Encoder",
    "EncoderMismatchError",
    "FewShotClassifier",
    "FewShotError",
    "FewShotWarning",
    "Hit",
    "ImageEncoder",
    "InputError",
    "KNNHead",
    "LinearHead",
    "LockTimeoutError",
    "MissingDependencyError",
    "ModelLoadError",
    "NotFittedError",
    "OnnxImageEncoder",
    "PrototypeHead",
    "SaveExistsError",
    "SaveNotFoundError",
    "StaticEncoder",
    "TextEncoder",
    "ZeroShotClassifier",
    "ZeroShotHead",
    "contrastive_tune",
    "__version__",
]
