"""The page at ``/`` in a real browser: Debian's headless Chromium driven by Playwright loads it from a uvicorn
server on 127.0.0.1, types a text, labels and queries, and reads what the page renders."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from fewshot import EmbeddingIndex, FewShotClassifier  # noqa: E402
from fewshot.serve import ServeSettings, create_app  # noqa: E402

EXTERNAL: list[str] = []  # requests the page made to anything but the server
ROOTS: list[Path] = []  # the server's root folder
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)
if CHROMIUM is None and shutil.which("chromium"):
    CHROMIUM = shutil.which("chromium")
# CI installs Chromium (.ci/run), so there a missing browser fails the tests instead of skipping them
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium)",
)

SUPPORT = {
    "shipping": ["my parcel never arrived", "where is my package", "the delivery is two weeks late"],
    "billing": ["I was charged twice this month", "please refund my payment", "my invoice shows the wrong amount"],
}
DOCS = [
    ("The central bank raised interest rates by half a point", "economy"),
    ("The striker scored twice as the home team won the final", "sport"),
    ("A new smartphone chip promises longer battery life", "technology"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, text_encoder):
    root = tmp_path_factory.mktemp("page")
    ROOTS.append(root)
    texts = [t for ts in SUPPORT.values() for t in ts]
    labels = [lab for lab, ts in SUPPORT.items() for _ in ts]
    FewShotClassifier(encoder=text_encoder).fit(texts, labels).save(root / "models" / "support")
    with EmbeddingIndex.update(root / "indexes" / "news", text_encoder, create=True) as index:
        index.add([d for d, _ in DOCS], labels=[lab for _, lab in DOCS])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(ServeSettings(root=root)), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    t = time.monotonic()
    while time.monotonic() - t < 180:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    yield url
    srv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
        )
        context = browser.new_context()
        context.on("request", lambda req: None if req.url.startswith(server) else EXTERNAL.append(req.url))
        page = context.new_page()
        page.goto(server + "/")
        page.wait_for_function("document.querySelectorAll('#clf-model option').length > 0")
        yield page
        browser.close()


def click(page, panel: str) -> None:
    """Press a panel's button and wait until the page has rendered the answer (or the error)."""
    page.click(f"#{panel}-go")
    page.wait_for_selector(f'#{panel}-out[data-state="done"]')


def busy(page, panel: str) -> bool:
    return page.get_attribute(f"#{panel}-go", "aria-disabled") == "true"


def options(page, select: str) -> list[tuple[str, bool]]:
    return page.eval_on_selector_all(f"#{select} option", "os => os.map(o => [o.textContent, o.disabled])")


def api(server: str, method: str, path: str, body: dict | None = None) -> int:
    import json
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


def rows(page, panel: str) -> list[tuple[str, float, float]]:
    """(label, score shown, bar width in %) of each bar in a panel, top to bottom."""
    return page.eval_on_selector_all(
        f"#{panel} .row",
        "rows => rows.map(r => [r.dataset.label, parseFloat(r.querySelector('.value').textContent), "
        "parseFloat(r.querySelector('.bar').style.width)])",
    )


def test_zero_shot_tags_render_as_bars(page, tmp_path):
    page.fill("#zs-text", "The team won the championship final last night")
    page.fill("#zs-labels", "sport, politics, cooking")
    click(page, "zs")
    shown = rows(page, "zs-out")
    assert [r[0] for r in shown][0] == "sport" and len(shown) == 3
    assert abs(sum(r[1] for r in shown) - 1) < 0.01  # probabilities
    assert all(abs(width - 100 * score) < 0.2 for _, score, width in shown)  # bars as long as the scores
    assert page.is_visible("#zs-out .row.best") and page.inner_text("#zs-out .row.best .name") == "sport"
    page.screenshot(path=str(tmp_path / "zeroshot.png"), full_page=True)

    page.check("#zs-multi")  # several tags: cosines per label, only those over the threshold
    click(page, "zs")
    tags = rows(page, "zs-out")
    assert tags and tags[0][0] == "sport" and tags[0][1] < 0.9


def test_classify_with_a_saved_model(page):
    assert page.eval_on_selector_all("#clf-model option", "os => os.map(o => o.value)") == ["support"]
    page.fill("#clf-text", "I was billed two times for one order")
    click(page, "clf")
    shown = rows(page, "clf-out")
    assert {r[0] for r in shown} == {"billing", "shipping"}
    assert page.inner_text("#clf-out .row.best .name") == "billing" and shown[0][0] == "billing"


def test_search_an_index_and_errors_are_shown(page):
    page.fill("#search-query", "interest rates and inflation")
    page.press("#search-query", "Enter")
    page.wait_for_selector('#search-out[data-state="done"]')
    first = page.inner_text("#search-out .hit .text")
    assert first == DOCS[0][0]
    assert page.inner_text("#search-out .hit .name").startswith("economy")
    assert len(page.query_selector_all("#search-out .hit")) == 3

    page.fill("#search-k", "0")  # the server's 422 is shown, naming the field
    click(page, "search")
    assert "(k)" in page.inner_text("#search-out .error")
    page.fill("#zs-labels", "")
    click(page, "zs")
    assert "label" in page.inner_text("#zs-out .error")
    assert EXTERNAL == []  # nothing but the server itself was asked for anything


def test_the_api_docs_render_offline(page, server):
    """/docs is Swagger UI from the package's own files: the operations render and nothing else is fetched."""
    before = len(EXTERNAL)
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
    assert "/v1/models/{name}/predict" in [p.replace("\u200b", "") for p in paths]
    assert EXTERNAL[before:] == []


def home(page, server) -> None:
    """Back to the page (the docs test leaves it), its lists filled."""
    page.goto(server + "/")
    page.wait_for_function("document.querySelectorAll('#clf-model option').length > 0")


def test_a_server_that_cannot_be_reached_or_asks_for_a_key_is_said_so(page, server):
    home(page, server)
    page.route("**/v1/zeroshot", lambda route: route.abort())  # as when the server has stopped
    page.fill("#zs-text", "The team won the final")
    page.fill("#zs-labels", "sport, politics")
    click(page, "zs")
    assert f"cannot reach the fewshot server at {server}; is it running?" in page.inner_text("#zs-out .error")
    page.unroute("**/v1/zeroshot")
    unauthorized = '{"error": {"code": "unauthorized", "message": "this server needs an API key", "field": null}}'
    page.route("**/v1/models", lambda route: route.fulfill(status=401, body=unauthorized))
    page.evaluate("refreshLists()")
    page.wait_for_function("document.querySelector('#clf-model').dataset.error !== undefined")
    click(page, "clf")  # the list's own failure is the reason, not "no saved model"
    shown = page.inner_text("#clf-out .error")
    assert "cannot list them: this server needs an API key" in shown and "API key field" in shown
    page.unroute("**/v1/models")
    page.evaluate("refreshLists()")
    page.wait_for_function("document.querySelector('#clf-model').value === 'support'")
    page.fill("#api-key", "ключ-0123456789abcdef")  # not Latin-1: said plainly, not the browser's TypeError
    click(page, "zs")
    assert "printable ASCII" in page.inner_text("#zs-out .error")
    page.fill("#api-key", "")
    page.dispatch_event("#api-key", "change")  # the page keeps a key for the session once it changes


def test_only_the_latest_request_of_a_panel_is_shown(page, server):
    """A slow answer to an older question never replaces the answer to the question the fields now ask."""
    home(page, server)
    page.fill("#zs-labels", "sport, weather")
    page.fill("#zs-text", "The striker scored twice in the final")
    page.evaluate(  # every answer arrives a second late
        "window.realFetch = window.fetch; window.fetch = (...a) => "
        "window.realFetch(...a).then(r => new Promise(done => setTimeout(() => done(r), 1000)))"
    )
    page.click("#zs-go")
    assert busy(page, "zs")  # no second request of the panel while one runs
    page.fill("#zs-text", "Heavy rain and strong winds expected tomorrow")
    page.press("#zs-labels", "Enter")  # ignored while busy
    page.wait_for_selector('#zs-out[data-state="done"]')
    page.evaluate("window.fetch = window.realFetch")
    assert rows(page, "zs-out")[0][0] == "sport" and not busy(page, "zs")
    page.press("#zs-labels", "Enter")  # the new text, asked now
    page.wait_for_selector('#zs-out[data-state="done"]')
    assert rows(page, "zs-out")[0][0] == "weather"


def test_lists_follow_the_server_and_keep_the_choice(page, server, tmp_path):
    """A model made or deleted elsewhere shows when the user comes back to the page; re-reading a list (a new
    key) keeps the model chosen; a damaged save is listed but cannot be chosen."""
    home(page, server)
    fit = {"inputs": [t for ts in SUPPORT.values() for t in ts], "labels": [k for k in SUPPORT for _ in SUPPORT[k]]}
    assert api(server, "POST", "/v1/models/late", fit) == 200
    page.evaluate("window.dispatchEvent(new Event('focus'))")
    page.wait_for_function("Array.from(document.querySelectorAll('#clf-model option')).some(o => o.value === 'late')")
    page.select_option("#clf-model", "late")
    page.fill("#api-key", "any-key")  # this server asks for none; the lists are read again with it
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.querySelector('#clf-model').dataset.key === 'any-key'")
    assert page.input_value("#clf-model") == "late"
    page.fill("#api-key", "")
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.querySelector('#clf-model').dataset.key === ''")

    assert api(server, "DELETE", "/v1/models/late") == 200
    page.fill("#clf-text", "refund me please")
    click(page, "clf")  # the model is gone: said, and the list no longer offers it
    assert "late" in page.inner_text("#clf-out .error")
    page.wait_for_function("document.querySelector('#clf-model').value === 'support'")
    assert [o[0] for o in options(page, "clf-model")] == ["support"]
    # deleted while a key is typed and not yet left: the click reads the list again and says the choice is gone,
    # rather than classifying with whichever model the list now offers first
    assert api(server, "POST", "/v1/models/later", fit) == 200
    page.evaluate("window.dispatchEvent(new Event('focus'))")
    page.wait_for_function("Array.from(document.querySelectorAll('#clf-model option')).some(o => o.value === 'later')")
    page.select_option("#clf-model", "later")
    assert api(server, "DELETE", "/v1/models/later") == 200
    page.fill("#api-key", "typed-key")
    click(page, "clf")
    assert '"later" is no longer on the server' in page.inner_text("#clf-out .error")
    assert page.input_value("#clf-model") == "support"
    page.fill("#api-key", "")
    page.dispatch_event("#api-key", "change")

    damaged = ROOTS[-1] / "models" / "damaged"
    damaged.mkdir()
    (damaged / "manifest.json").write_text("{not json")
    try:
        page.evaluate("refreshLists()")
        assert ["damaged (unreadable)", True] in options(page, "clf-model")
        assert page.input_value("#clf-model") == "support"
    finally:
        shutil.rmtree(damaged)
        page.evaluate("refreshLists()")


def test_a_key_typed_and_not_yet_left_is_used_by_the_next_click(page, server):
    home(page, server)
    unauthorized = '{"error": {"code": "unauthorized", "message": "this server needs an API key", "field": null}}'
    page.route(  # a server that lists its models only for the right key
        "**/v1/models",
        lambda route: (
            route.continue_()
            if route.request.headers.get("authorization") == "Bearer right"
            else route.fulfill(status=401, body=unauthorized)
        ),
    )
    try:
        page.evaluate("refreshLists()")
        assert page.get_attribute("#clf-model", "data-error").startswith("cannot list them")
        page.fill("#clf-text", "I was billed two times")
        # the key typed and the button clicked at once: the field has not been left, so no change event yet
        page.evaluate("document.getElementById('api-key').value = 'right'")
        click(page, "clf")
        assert rows(page, "clf-out")[0][0] == "billing"
    finally:
        page.unroute("**/v1/models")
        page.fill("#api-key", "")
        page.dispatch_event("#api-key", "change")


def test_labels_with_descriptions_hits_and_focus(page, server):
    home(page, server)
    page.fill("#zs-text", "A small bird with a red breast sang on the fence")
    page.fill("#zs-labels", "bird: has feathers, has a beak; fish: has fins, lives in water")
    click(page, "zs")
    assert sorted(r[0] for r in rows(page, "zs-out")) == ["bird", "fish"]
    page.fill("#zs-labels", "bird: has feathers, has a beak, fish: has fins")  # commas inside a description
    click(page, "zs")
    assert "separate the labels with semicolons" in page.inner_text("#zs-out .error")

    page.fill("#zs-labels", "birds, fish")
    page.focus("#zs-go")  # the button keeps the keyboard focus through its request
    page.keyboard.press("Enter")
    page.wait_for_selector('#zs-out[data-state="done"]')
    assert page.evaluate("document.activeElement.id") == "zs-go"

    page.fill("#search-query", "interest rates")
    page.fill("#search-k", "")
    page.focus("#search-k")
    page.keyboard.type("e")  # not a number: said, not searched with the default
    click(page, "search")
    assert "Hits takes a whole number" in page.inner_text("#search-out .error")
    page.fill("#search-k", "2")
    click(page, "search")
    names = page.eval_on_selector_all("#search-out .hit .name", "ns => ns.map(n => n.querySelector('bdi').textContent)")
    assert len(names) == 2 and names[0] == "economy"


def test_an_image_over_the_body_limit_is_sent_shrunk(page, server, tmp_path):
    """An image whose base64 is over the server's body limit is sent again shrunk; here the model reads text, so
    the answer is its refusal of an image, not the size limit, and it says the image was shrunk."""
    import numpy as np
    from PIL import Image

    home(page, server)
    y, x = np.mgrid[0:1600, 0:1600]
    noise = np.random.default_rng(0).integers(0, 60, (1600, 1600, 3))
    pixels = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1) + noise
    big = tmp_path / "photo.png"
    Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(big)
    assert big.stat().st_size > 3 * 2**20
    sizes: list[int] = []
    page.on("request", lambda req: sizes.append(len(req.post_data_buffer or b"")) if "predict" in req.url else None)
    page.set_input_files("#clf-image", str(big))
    click(page, "clf")
    shown = page.inner_text("#clf-out .error")
    assert "request limit" in shown and "shrunk to" in shown and "over this server's limit" not in shown, shown
    assert len(sizes) >= 2 and sizes[0] > 2 * 2**20 and sizes[-1] < 2 * 2**20
    page.set_input_files("#clf-image", [])
