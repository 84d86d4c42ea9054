"""Images: input handling, the bundled MobileNetV2 on real CIFAR-10 / EuroSAT images, ConSE zero-shot, and
the CLIP path end to end on a small randomly initialised open_clip model saved to a temporary folder."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.datasets import load_images, sample_per_class
from fewshot import (
    ClipEncoder,
    ConSEEncoder,
    EmbeddingIndex,
    EncoderMismatchError,
    FewShotClassifier,
    FewShotWarning,
    ImageEncoder,
    InputError,
    ModelLoadError,
    ZeroShotClassifier,
)
from fewshot.cli import main as cli
from fewshot.encoders.image_inputs import as_image_list, image_folder, images_in, to_rgb

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny_clip_folder(folder: Path, seed: int) -> Path:
    """A randomly initialised open_clip model saved the way open_clip's ``local-dir:`` schema reads it."""
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in CLIP(**TINY_CLIP).state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> ClipEncoder:
    return ClipEncoder("local-dir:" + str(tiny_clip_folder(tmp_path_factory.mktemp("clip") / "a", seed=0)))


@pytest.fixture(scope="session")
def image_encoder() -> ImageEncoder:
    return ImageEncoder()


@pytest.fixture(scope="session")
def cifar(data_root):
    return load_images("cifar10", data_root)


@pytest.fixture(scope="session")
def eurosat(data_root):
    return load_images("eurosat", data_root)


def few_shot_split(ds, shots: int, test_per_class: int, seed: int = 0):
    tr = sample_per_class(ds.train_labels, shots, seed)
    te = sample_per_class(ds.test_labels, test_per_class, seed)
    return list(ds.train_images[tr]), ds.train_labels[tr], list(ds.test_images[te]), ds.test_labels[te]


def png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


# -- inputs -----------------------------------------------------------------------------------------------
def test_grayscale_rgba_palette_and_float_inputs_become_rgb():
    gray = np.full((5, 6), 77, dtype=np.uint8)
    assert to_rgb(gray).mode == "RGB" and np.asarray(to_rgb(gray))[0, 0].tolist() == [77, 77, 77]
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # one opaque red pixel; the rest is transparent and becomes white
    out = np.asarray(to_rgb(rgba))
    assert out[0, 0].tolist() == [200, 0, 0] and out[1, 1].tolist() == [255, 255, 255]
    floats = np.full((3, 3, 3), 0.5)
    assert np.asarray(to_rgb(floats))[0, 0].tolist() == [128, 128, 128]
    pal = Image.new("P", (3, 3))
    assert to_rgb(pal).mode == "RGB"


def test_16_bit_pictures_keep_their_tones(tmp_path):
    g8 = (np.arange(40 * 40).reshape(40, 40) % 256).astype(np.uint8)
    g16 = g8.astype(np.uint16) * 257  # the same picture in 16 bits
    path = png(tmp_path / "g16.png", g16)
    assert Image.open(path).mode.startswith("I")
    for x in (path, g16, Image.fromarray(g16), g16[..., None]):
        out = np.asarray(to_rgb(x))
        assert out.shape == (40, 40, 3) and np.array_equal(out[..., 0], g8), type(x)
    # the range is read from the values, not the dtype's width or byte order
    for same in (g16.astype(">u2"), g16.astype(np.int32), Image.fromarray(g16.astype(np.int32))):
        assert np.array_equal(np.asarray(to_rgb(same))[..., 0], g8)
    assert np.array_equal(np.asarray(to_rgb(g8.astype(np.uint16)))[..., 1], g8)  # 8-bit values, upcast
    mask = np.eye(4, dtype=np.int64)
    assert np.asarray(to_rgb(mask))[..., 0].tolist() == (mask * 255).tolist()
    assert np.asarray(to_rgb(np.full((2, 2), -0.001)))[0, 0, 0] == 0  # rounding error below 0 is not an error
    with pytest.raises(InputError, match="8-bit \\(0-255\\) or 16-bit"):
        to_rgb(np.full((2, 2), 70000, dtype=np.int32))
    with pytest.raises(InputError, match="undo any normalisation"):
        to_rgb(np.full((3, 3, 3), -2.0))
    centred = np.linspace(-0.5, 0.5, 27).reshape(3, 3, 3)  # [0, 1] pixels less 0.5: not a dark 0-255 picture
    with pytest.raises(InputError, match="run from -0.5 to 0.5; give them in \\[0, 1\\] or \\[0, 255\\]"):
        to_rgb(centred)
    assert np.asarray(to_rgb(np.array([[-0.3, 200.0]])))[0].tolist() == [[0, 0, 0], [200, 200, 200]]  # 0-255


def test_bad_image_inputs_are_named(tmp_path):
    with pytest.raises(InputError, match="no such image file"):
        as_image_list([str(tmp_path / "missing.jpg")])
    with pytest.raises(InputError, match="no pixels"):
        as_image_list([np.zeros((0, 5, 3), dtype=np.uint8)])
    with pytest.raises(InputError, match="shape"):
        as_image_list([np.zeros((4, 4, 2), dtype=np.uint8)])
    with pytest.raises(InputError, match="empty"):
        as_image_list([])
    with pytest.raises(InputError, match="int"):
        as_image_list([3])
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a picture")
    with pytest.raises(InputError, match="notes.jpg cannot be read as an image"):
        to_rgb(str(fake))
    with pytest.raises(InputError, match="is a folder, not an image file"):
        as_image_list([str(tmp_path)])
    png(tmp_path / "shut.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with Image.open(tmp_path / "shut.png") as closed:
        pass  # never read inside the block: Pillow asserts on its closed file
    with pytest.raises(InputError, match=r"images\[1\]: the PIL image cannot be read \(its file is closed\)"):
        as_image_list([np.zeros((4, 4, 3), dtype=np.uint8), closed])
    (tmp_path / "shut.png").unlink()
    with pytest.raises(InputError, match="no images found"):
        image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    png(tmp_path / "tiny.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="class folder 'empty_class' holds no image files"):
        image_folder(tmp_path)


def test_an_image_header_past_pillows_pixel_limit_is_named(tmp_path, monkeypatch):
    png(tmp_path / "big.png", np.zeros((8, 8, 3), dtype=np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 64 pixels is past twice the limit: Pillow refuses
    with pytest.raises(InputError, match="big.png declares more pixels than Pillow opens.*MAX_IMAGE_PIXELS"):
        to_rgb(str(tmp_path / "big.png"))


def test_image_folder_labels_by_subfolder(tmp_path):
    for cls, value in [("cat", 10), ("dog", 200)]:
        (tmp_path / cls).mkdir()
        for i in range(2):
            png(tmp_path / cls / f"{i}.png", np.full((8, 8, 3), value, dtype=np.uint8))
    (tmp_path / "dog" / "readme.txt").write_text("not an image")
    (tmp_path / "dog" / "._0.png").write_bytes(b"macOS AppleDouble metadata")  # hidden: no one's example
    (tmp_path / "dog" / ".thumbs").mkdir()
    png(tmp_path / "dog" / ".thumbs" / "0.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (tmp_path / "dog" / "puppies").mkdir()
    png(tmp_path / "dog" / "puppies" / "p.png", np.full((8, 8, 3), 180, dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a nested folder beside the class's own images is quietly its class
        files, labels = image_folder(tmp_path)
    assert labels == ["cat", "cat", "dog", "dog", "dog"] and all(f.endswith(".png") for f in files)
    assert not any("/." in f for f in files) and images_in(tmp_path / "dog") == files[2:]
    # a folder one level too high: its subfolders hold only class folders, so it would fit "train" vs "test"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / "top" / split / cls).mkdir(parents=True)
            png(tmp_path / "top" / split / cls / "0.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.warns(FewShotWarning, match="'test', 'train' hold images only in nested folders.*top/test instead"):
        _, labels = image_folder(tmp_path / "top")
    assert sorted(set(labels)) == ["test", "train"]


# -- the bundled backbone ---------------------------------------------------------------------------------
def test_image_encoder_shapes_norms_and_input_kinds_agree(image_encoder, tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    path = png(tmp_path / "x.png", arr)
    E = image_encoder.encode([arr, Image.fromarray(arr), path, arr[:, :, 0]])
    assert E.shape == (4, 1280) and E.dtype == np.float32 and E.flags.c_contiguous
    assert np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    # the same pixels as an array, a PIL image and a PNG file give the same vector
    assert np.allclose(E[0], E[1], atol=1e-6) and np.allclose(E[0], E[2], atol=1e-6)
    assert not np.allclose(E[0], E[3], atol=1e-3)  # the grayscale version is another picture
    assert image_encoder.identity["family"] == "torchvision" and image_encoder.identity["dim"] == 1280
    with pytest.raises(InputError, match="cannot be read"):
        (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
        image_encoder.encode([str(tmp_path / "bad.png")])


def test_few_shot_accuracy_on_real_images(image_encoder, cifar, eurosat):
    # 5 examples a class; 20 test images a class. Measured: CIFAR-10 ~0.6, EuroSAT ~0.7; chance is 0.1
    for ds, floor in [(cifar, 0.40), (eurosat, 0.50)]:
        Xs, ys, Xq, yq = few_shot_split(ds, shots=5, test_per_class=20)
        clf = FewShotClassifier(image_encoder, head="prototype", head_params={"center": True}).fit(Xs, ys)
        acc = float((clf.predict(Xq) == yq).mean())
        assert acc > floor, (ds.name, acc)


def test_conse_zero_shot_beats_chance_clearly(image_encoder, cifar):
    _, _, Xq, yq = few_shot_split(cifar, shots=1, test_per_class=20)
    zs = ZeroShotClassifier(cifar.label_names, encoder=image_encoder)  # wrapped in ConSE automatically
    assert isinstance(zs.encoder_, ConSEEncoder)
    pred = zs.predict(Xq)
    acc = float((pred == np.asarray(cifar.label_names)[yq]).mean())
    assert acc > 0.25, acc  # chance 0.10; measured about 0.4


def test_conse_spaces_and_index_text_query(image_encoder, tmp_path):
    conse = ConSEEncoder(image_encoder)
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(3)]
    E, T = conse.encode(imgs), conse.encode_text(["a dog", "a truck"])
    assert E.shape == (3, 1001) and T.shape == (2, 1001)
    assert np.allclose(np.linalg.norm(T, axis=1), 1.0, atol=1e-5) and np.all(E[:, -1] == 0)
    # the cosine is the inner product of class distributions, up to a per-image factor
    assert np.all(E[:, :-1] >= 0) and np.all(T[:, :-1] >= 0)
    paper = ConSEEncoder(image_encoder, space="text")
    assert paper.encode(imgs).shape == (3, 384) and paper.identity != conse.identity
    index = EmbeddingIndex(conse)
    index.add(imgs, labels=["a", "b", "c"])
    hits = index.search("a photo of a dog", k=2)
    assert len(hits) == 2 and hits[0].item is None
    saved = index.save(tmp_path / "idx")
    assert len(EmbeddingIndex.load(saved)) == 3
    # a lone label: tag() would give every image its best label, so the advice is abstain= or more labels
    with pytest.warns(FewShotWarning, match="every input gets it; give abstain=.*or labels for what else") as got:
        assert ZeroShotClassifier(["dog"], encoder=conse).predict(imgs[:1]).tolist() == ["dog"]
    assert all("tag()" not in str(w.message) for w in got)


def test_image_index_finds_the_same_image(image_encoder, cifar, tmp_path):
    _, _, Xq, yq = few_shot_split(cifar, shots=1, test_per_class=2)
    paths = [png(tmp_path / f"{i}.png", x) for i, x in enumerate(Xq)]
    index = EmbeddingIndex(image_encoder)
    index.add(paths, labels=[cifar.label_names[c] for c in yq])
    hit = index.search(Path(paths[3]), k=1)[0]  # a Path is an image; a str is always text
    assert hit.item == paths[3] and hit.score > 0.999
    with pytest.raises(InputError, match="ClipEncoder"):
        index.search("a photo of a cat")


# -- CLIP, with random weights ----------------------------------------------------------------------------
def test_clip_one_space_for_text_and_images(tiny_clip, tmp_path):
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, size=(48, 40, 3), dtype=np.uint8) for _ in range(4)]
    E, T = tiny_clip.encode(imgs), tiny_clip.encode_text(["a cat", "a dog", "a car"])
    assert E.shape == (4, 32) and T.shape == (3, 32) and tiny_clip.dim == 32
    assert np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(T, axis=1), 1.0, atol=1e-5)
    ident = tiny_clip.identity
    assert ident["family"] == "open_clip" and ident["model"].startswith("local-dir:")
    assert "Normalize" in ident["preprocess"]
    # images and text in one index: a text query returns images, an image query finds itself
    index = EmbeddingIndex(tiny_clip)
    paths = [png(tmp_path / f"{i}.png", x) for i, x in enumerate(imgs)]
    index.add(paths)
    assert len(index.search("a cat", k=4)) == 4
    assert index.search(Path(paths[1]), k=1)[0].item == paths[1]
    # zero-shot over images through the text tower
    # (random weights: what can be checked is that the labels are scored by CLIP's text tower as documented)
    zs = ZeroShotClassifier(["cat", "dog", "car"], encoder=tiny_clip)
    V = tiny_clip.encode_text([f"a photo of a {c}." for c in ["cat", "dog", "car"]])
    expected = np.array(["cat", "dog", "car"])[(E @ V.T).argmax(axis=1)]
    np.testing.assert_array_equal(zs.predict(imgs), expected)
    sorted_columns = [2, 0, 1]  # classes_ are sorted: car, cat, dog
    assert zs.classes_.tolist() == ["car", "cat", "dog"]
    np.testing.assert_allclose(zs.class_scores(imgs), (E @ V.T)[:, sorted_columns], atol=1e-5)
    assert np.allclose(zs.predict_proba(imgs).sum(axis=1), 1.0)


def test_clip_classifier_save_load_and_identity_check(tiny_clip, tmp_path):
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(6)]
    clf = FewShotClassifier(tiny_clip).fit(imgs, ["a", "b", "c"] * 2)
    saved = clf.save(tmp_path / "model")
    again = FewShotClassifier.load(saved)  # the encoder is recreated from the recorded local-dir
    assert isinstance(again.encoder_, ClipEncoder)
    assert np.allclose(again.predict_proba(imgs), clf.predict_proba(imgs))
    other = ClipEncoder("local-dir:" + str(tiny_clip_folder(tmp_path / "b", seed=1)))
    with pytest.raises(EncoderMismatchError, match="open_clip"):
        FewShotClassifier.load(saved, encoder=other)
    zs = ZeroShotClassifier(["x", "y"], encoder=tiny_clip)
    zs_saved = zs.save(tmp_path / "zs")
    assert np.allclose(ZeroShotClassifier.load(zs_saved).predict_proba(imgs), zs.predict_proba(imgs))


def test_clip_needs_weights():
    with pytest.raises(InputError, match="pretrained"):
        ClipEncoder("ViT-B-32")
    with pytest.raises(ModelLoadError, match="ViT-B-32"):
        ClipEncoder("ViT-B-32", pretrained="/nonexistent/clip.pt").encode_text(["x"])


# -- CLI --------------------------------------------------------------------------------------------------
def test_cli_fits_and_predicts_image_folders(cifar, tmp_path, capsys):
    Xs, ys, Xq, yq = few_shot_split(cifar, shots=3, test_per_class=2)
    train = tmp_path / "train"
    for i, (x, c) in enumerate(zip(Xs, ys)):
        (train / cifar.label_names[c]).mkdir(parents=True, exist_ok=True)
        png(train / cifar.label_names[c] / f"{i}.png", x)
    query = tmp_path / "query"
    query.mkdir()
    for i, x in enumerate(Xq):
        png(query / f"q{i:02d}.png", x)
    assert cli(["fit", str(train), "-o", str(tmp_path / "model")]) == 0
    assert cli(["predict", str(tmp_path / "model"), str(query)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    files = sorted(str(p) for p in query.glob("*.png"))
    # the CLI gives what the library gives on the same folders
    lib = FewShotClassifier(ImageEncoder()).fit(str(train))
    assert [r["prediction"] for r in rows] == lib.predict(files).tolist()
    with pytest.raises(InputError, match="whose subfolders give the labels: call fit.* without y"):
        FewShotClassifier(ImageEncoder()).fit(str(train), ["cat"] * len(ys))
    assert rows[0]["path"].endswith("q00.png") and abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-4
    assert cli(["zeroshot", str(query), "--labels", ",".join(cifar.label_names)]) == 0
    zrows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    zlib = ZeroShotClassifier(cifar.label_names, encoder=ImageEncoder())
    assert [r["prediction"] for r in zrows] == zlib.predict(files).tolist()
    assert cli(["index", "build", str(tmp_path / "idx"), str(train), "--encoder", "image"]) == 0
    first = sorted(train.rglob("*.png"))[0]
    assert cli(["index", "search", str(tmp_path / "idx"), str(first), "--image", "-k", "1", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out.splitlines()[0])
    assert hit["item"] == str(first) and hit["label"] == first.parent.name
    # an image path without --image would be embedded as text, which MobileNet cannot read: the flag is named
    assert cli(["index", "search", str(tmp_path / "idx"), str(first)]) == 1
    assert "give an image file with --image" in capsys.readouterr().err
    assert cli(["fit", str(query / "q00.png"), "-o", str(tmp_path / "m2")]) == 1
    assert "subfolder" in capsys.readouterr().err
