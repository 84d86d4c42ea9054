"""The encoder contract on the real bundled MiniLM, the identity, and the on-disk cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fewshot import TextEncoder
from fewshot.encoders import encoder_from_identity, same_encoder
from fewshot.errors import InputError
from tests.conftest import FakeEncoder


def test_real_encoder_output_contract(text_encoder):
    E = text_encoder.encode(["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue."])
    assert E.shape == (3, 384) and text_encoder.dim == 384
    assert E.dtype == np.float32 and E.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    # meaning, not noise: the two sentences about eating are closer than either is to the sky
    assert E[0] @ E[1] > E[0] @ E[2] + 0.3


def test_batching_and_series_give_the_same_vectors(text_encoder):
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(10)]
    a = text_encoder.encode(texts, batch_size=3)
    b = text_encoder.encode(pd.Series(texts), batch_size=64)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_identity_is_stable_and_recreatable(text_encoder):
    ident = text_encoder.identity
    assert ident["family"] == "sentence-transformers" and ident["dim"] == 384
    assert len(ident["weights_sha256"]) == 64
    assert ident == TextEncoder().identity  # a second instance of the bundled model: same identity
    assert same_encoder(ident, encoder_from_identity(ident).identity)
    assert not same_encoder(ident, {**ident, "weights_sha256": "0" * 64})


def test_unnormalised_output_when_asked(text_encoder):
    # all-MiniLM-L6-v2 ends in its own Normalize module, so normalize=False returns the model's output as is
    raw = TextEncoder(text_encoder.model, normalize=False).encode(["hello world"])
    np.testing.assert_allclose(raw, text_encoder.model.encode(["hello world"]), atol=1e-6)
    fake = FakeEncoder(normalize=False).encode(["several words in here"])
    assert abs(np.linalg.norm(fake) - 1.0) > 0.1


@pytest.mark.parametrize(
    "bad, message",
    [
        ([], "empty"),
        ([""], "empty string"),
        (["ok", "   "], r"texts\[1\] is empty but for whitespace"),
        (None, "None"),
        ("just one string", "single string"),
        ([1, 2], "not a string"),
        (["ok", "\u200b\u200b"], r"texts\[1\] has no visible character"),
    ],
)
def test_bad_inputs_are_named(text_encoder, bad, message):
    with pytest.raises(InputError, match=message):
        text_encoder.encode(bad)


def test_containers_that_do_not_iterate_over_texts_are_refused(text_encoder):
    import pandas as pd

    df = pd.DataFrame({"text": ["I was charged twice", "where is my card"], "label": ["a", "b"]})
    # a DataFrame iterates over its column names, a dict over its keys, a set in no fixed order
    with pytest.raises(InputError, match=r"is a table \(columns \['text', 'label'\]\).*df\['text'\]"):
        text_encoder.encode(df)
    with pytest.raises(InputError, match="is a dict.*iterates over its keys"):
        text_encoder.encode({"a text": 1, "another": 2})
    with pytest.raises(InputError, match="is a set, which has no order"):
        text_encoder.encode({"a text", "another"})
    assert text_encoder.encode(df["text"]).shape == (2, 384)  # one column is a sequence of texts


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_a_bad_batch_size_is_named(size):
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        FakeEncoder().encode(["a text"], batch_size=size)
    assert FakeEncoder().encode(["a text"], batch_size=np.int64(1)).shape == (1, FakeEncoder().dim)


def test_cache_serves_repeats_without_the_model(tmp_path):
    enc = FakeEncoder(cache_dir=tmp_path)
    first = enc.encode(["alpha beta", "gamma", "alpha beta"])
    assert enc.calls == 3
    again = FakeEncoder(cache_dir=tmp_path)  # a new process would see the same file
    second = again.encode(["gamma", "alpha beta", "delta"])
    assert again.calls == 1  # only "delta" was new
    np.testing.assert_allclose(second[:2], first[[1, 0]], atol=1e-6)


def test_cache_is_keyed_by_encoder_identity(tmp_path):
    FakeEncoder(seed=0, cache_dir=tmp_path).encode(["same text"])
    other = FakeEncoder(seed=1, cache_dir=tmp_path)
    other.encode(["same text"])
    assert other.calls == 1  # another model never reads the first one's vectors
    assert len(list(tmp_path.glob("*.sqlite"))) == 2


def test_a_damaged_cache_file_or_a_file_for_its_folder_is_named(tmp_path):
    from fewshot.errors import CorruptFileError

    FakeEncoder(cache_dir=tmp_path / "c").encode(["alpha"])
    (db,) = (tmp_path / "c").glob("*.sqlite")
    db.write_bytes(b"not a database at all" * 100)
    with pytest.raises(CorruptFileError, match=f"{db.name}.*delete it"):
        FakeEncoder(cache_dir=tmp_path / "c").encode(["alpha"])
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        FakeEncoder(cache_dir=tmp_path / "f").encode(["alpha"])


def test_real_encoder_with_cache(tmp_path, text_encoder):
    enc = TextEncoder(text_encoder.model, cache_dir=tmp_path)
    a = enc.encode(["cached sentence"])
    b = enc.encode(["cached sentence"])
    np.testing.assert_array_equal(a, b)
    assert len(enc._get_cache()) == 1


def test_a_loaded_model_is_recognised_and_a_bad_path_is_named(text_encoder):
    from fewshot.encoders import BUNDLED
    from fewshot.errors import ModelLoadError

    assert TextEncoder(text_encoder.model).source == BUNDLED  # so saves made with it reload offline
    with pytest.raises(ModelLoadError, match="/no/such/model"):
        TextEncoder("/no/such/model").encode(["text"])


IDENTITY_IN_A_NEW_PROCESS = """
import json, sys
from fewshot import TextEncoder
enc = TextEncoder(sys.argv[1]) if len(sys.argv) > 1 else TextEncoder()
print(json.dumps({"identity": enc.identity, "torch": "torch" in sys.modules}))
"""


def test_identity_of_a_hashed_folder_is_known_without_loading_the_model(tmp_path, text_encoder):
    # a batch driver describes its job by the encoder identity; once a folder's weights were hashed, that
    # identity comes from the record under $FEWSHOT_HOME/sources, and torch is not even imported
    import json
    import os
    import shutil
    import subprocess
    import sys

    from fewshot.encoders.text import bundled_model_path

    env = {**os.environ, "FEWSHOT_HOME": str(tmp_path / "home")}

    def identity(*args: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-c", IDENTITY_IN_A_NEW_PROCESS, *args], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = identity(), identity()
    assert first["torch"] is True and second["torch"] is False  # the first hashed the loaded weights
    assert first["identity"] == second["identity"] == text_encoder.identity
    # a copy whose weights differ by one byte is another model: hashed again, not taken from the record
    copy = tmp_path / "copy"
    shutil.copytree(bundled_model_path(), copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = identity(str(copy))
    assert changed["torch"] is True
    assert changed["identity"]["weights_sha256"] != first["identity"]["weights_sha256"]
