"""The web app (`digits app`), in a real browser: the system's Chromium driven by
Playwright against a real Streamlit process and a store holding a small trained champion
(CNN) and challenger (MLP). Digits are drawn with the mouse; a PNG is uploaded.

Plus the app's store reading (web.models), tested directly."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from digit_experiments import cli
from digit_experiments.app.run import train
from digit_experiments.core import data
from digit_experiments.errors import RegistryError, TrackingUnavailable
from digit_experiments.inference.predictor import Predictor
from digit_experiments.web import models

from .browser import TIMEOUT_MS, chromium, expect, streamlit_app, stroke, wait_for_app_run
from .conftest import free_port, small_cfg, working_in

NAME = "mnist-digit-classifier"
CHAMPION = ".st-key-prediction-champion-version-1"
CHALLENGER = ".st-key-prediction-challenger-version-2"
# Strokes on the 280 px canvas, as a person draws them.
ONE = [[(150, 45), (140, 235)]]
SEVEN = [[(75, 65), (205, 65), (135, 235)]]
ZERO = [
    [(140 + 62 * np.sin(t), 140 - 95 * np.cos(t)) for t in np.linspace(0, 2 * np.pi * 1.04, 48)]
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A champion CNN (~96%) and a challenger MLP, promoted by `digits promote`."""
    root = tmp_path_factory.mktemp("web")
    uri = f"sqlite:///{root}/mlflow.db"
    with working_in(root):
        train(
            small_cfg(root, "model=cnn", "data.train_limit=10000", "trainer.epochs=2"),
            output_dir=root / "cnn",
        )
        assert (
            cli.main(["--tracking-uri", uri, "promote", "--experiment", "digit-experiments"]) == 0
        )
        train(small_cfg(root, "model=mlp"), output_dir=root / "mlp")
        mlp = ["--filter", "tags.model = 'mlp'"]
        promote = ["--tracking-uri", uri, "promote", "--experiment", "digit-experiments", *mlp]
        assert cli.main(promote) == 0
    return {"root": root, "uri": uri, "client": MlflowClient(uri)}


@pytest.fixture(scope="module")
def app(store, tmp_path_factory):
    log = tmp_path_factory.mktemp("app") / "app.log"
    with streamlit_app("--tracking-uri", store["uri"], cwd=store["root"], log=log) as url:
        yield {"url": url, "log": log}


@pytest.fixture(scope="module")
def browser():
    with chromium() as found:
        yield found


@pytest.fixture
def page(browser, app):
    """A fresh session of the app (its own Streamlit session state)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app["url"])
    wait_for_app_run(page)
    yield page
    context.close()


def canvas(page):
    # Fabric.js draws on two stacked canvases; the upper one receives the mouse.
    return page.locator("canvas.upper-canvas").first


def draw(page, strokes) -> None:
    for points in strokes:
        stroke(page, canvas(page), points)


def clear(page) -> None:
    """Clear the drawing, and wait until the page is back to no prediction (the rerun
    that shows that also puts the fresh canvas in place)."""
    page.locator(".st-key-clear button").click()
    expect(page.locator("h3", has_text="Prediction:")).to_have_count(0)
    expect_text(page, "[data-testid='stAlert']", "Draw a digit")
    wait_for_app_run(page)


def expect_text(page, selector: str, pattern: str):
    expect(page.locator(selector).first).to_contain_text(re.compile(pattern))


def prediction(page, column: str) -> int:
    heading = page.locator(f"{column} h3", has_text="Prediction:")
    expect(heading).to_be_visible()
    return int(heading.inner_text().split(":")[1])


def no_traceback(page) -> None:
    shown = page.locator("[data-testid='stException']")
    assert shown.count() == 0, shown.first.inner_text()


def test_playwright_drives_the_system_chromium(browser):
    page = browser.new_page()
    page.set_content("<button onclick=\"this.textContent='clicked'\">click me</button>")
    page.get_by_role("button").click()
    assert page.locator("button").inner_text() == "clicked"
    assert int(browser.version.split(".")[0]) >= 120
    page.close()


def test_digits_drawn_with_the_mouse_are_read_by_champion_and_challenger(page, app, tmp_path):
    expect_text(page, "[data-testid='stAlert']", "Draw a digit in the black square")
    for digit, strokes in [(1, ONE), (7, SEVEN), (0, ZERO)]:
        if digit != 1:
            clear(page)
        draw(page, strokes)
        assert prediction(page, CHAMPION) == digit, f"drew a {digit}"
        prediction(page, CHALLENGER)  # side by side: the challenger answers too
        champion = page.locator(CHAMPION)
        expect_text(page, CHAMPION, r"probability \d+\.\d% · predicted in \d+ ms")
        # The ten probabilities as a chart, and the 28x28 image the model saw.
        expect(champion.locator("[data-testid='stVegaLiteChart']")).to_be_visible()
        expect(champion.locator("[data-testid='stImage'] img")).to_be_visible()
        no_traceback(page)
        page.screenshot(path=tmp_path / f"drawn-{digit}.png", full_page=True)
    # Loaded once per process: three drawings, two models, two loads.
    loads = re.findall(r"digits app: loaded (\S+)", app["log"].read_text())
    assert sorted(loads) == [f"models:/{NAME}/1", f"models:/{NAME}/2"]


def test_an_uploaded_scan_is_read(page, store, tmp_path):
    test = data.load_idx_dir(data.bundled_dir())
    # Dark ink on white paper, 4x MNIST's size: as a phone photo or a scanner gives it.
    threes = [255 - test["test_images"][i] for i in np.flatnonzero(test["test_labels"] == 3)]
    scans = [np.asarray(Image.fromarray(image).resize((112, 112))) for image in threes[:20]]
    # A 3 that the champion reads right in-process (a ~96% model misreads a few).
    mlflow.set_tracking_uri(store["uri"])
    champion = Predictor.load(f"models:/{NAME}@champion")
    scan = next(s for s, p in zip(scans, champion.predict(scans)) if p.digit == 3)
    Image.fromarray(scan).save(tmp_path / "scan.png")
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        tmp_path / "scan.png"
    )
    assert prediction(page, CHAMPION) == 3
    no_traceback(page)


def test_messages_instead_of_tracebacks(page, tmp_path):
    expect_text(page, "[data-testid='stAlert']", "Draw a digit")
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(notes)
    expect_text(page, "[data-testid='stAlert']", "notes.png is not an image: upload a PNG or JPEG")
    no_traceback(page)


def test_the_registry_panel_links_each_version_to_its_run(page, store):
    panel = page.locator(".st-key-registry")
    expect(panel).to_contain_text("champion")
    expect(panel).to_contain_text("challenger")
    client = store["client"]
    for version in ("1", "2"):
        run = client.get_run(client.get_model_version(NAME, version).run_id)
        link = panel.locator(f"a[href$='/runs/{run.info.run_id}']")
        expect(link).to_have_attribute(
            "href",
            f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}",
        )
        expect(panel).to_contain_text(run.info.run_name)


def test_any_model_uri_can_be_typed_in_beside_them(page, store, tmp_path):
    client = store["client"]
    challenger_run = client.get_model_version(NAME, "2").run_id
    typed = page.get_by_label("Another model URI")
    for uri in (f"runs:/{challenger_run}/model", f"models:/{NAME}@nobody"):
        typed.fill(uri)
        typed.press("Enter")
        wait_for_app_run(page)
        if uri.startswith("runs:/"):
            draw(page, SEVEN)
            column = f".st-key-prediction-{models.slug(uri)}"
            # The challenger's run and the challenger itself: the same network, answer.
            assert prediction(page, column) == prediction(page, CHALLENGER)
        else:
            column = f".st-key-prediction-{models.slug(uri)}"
            expect_text(page, column, "no version of 'mnist-digit-classifier' has the alias")
            assert prediction(page, CHAMPION) == 7  # the others still answer
    no_traceback(page)


def test_a_store_without_a_registered_model_says_how_to_register_one(browser, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    uri = f"sqlite:///{root}/mlflow.db"
    MlflowClient(uri).search_experiments()  # an existing store, no registered model
    with streamlit_app("--tracking-uri", uri, cwd=root, log=tmp_path / "app.log") as url:
        page = browser.new_page()
        page.goto(url)
        wait_for_app_run(page)
        expect_text(page, "[data-testid='stAlert']", f"no model is registered as '{NAME}' yet")
        expect_text(page, "[data-testid='stAlert']", "digits promote")
        no_traceback(page)
        page.close()


def test_an_unreachable_tracking_server_is_said_plainly(browser, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    with streamlit_app("--tracking-uri", uri, cwd=tmp_path, log=tmp_path / "app.log") as url:
        page = browser.new_page()
        page.goto(url)
        wait_for_app_run(page)
        expect_text(page, "[data-testid='stAlert']", "Cannot reach the tracking store")
        expect_text(page, "[data-testid='stAlert']", "is unreachable")
        no_traceback(page)
        page.close()


# web.models, directly.


def test_versions_say_where_each_came_from(store):
    found = models.versions(store["client"], NAME)
    assert [(v.version, v.aliases) for v in found] == [("2", ["challenger"]), ("1", ["champion"])]
    assert all(0 < v.test_accuracy <= 1 and v.run_id and v.run_name for v in found)
    assert models.default_models(found, NAME) == [
        f"models:/{NAME}@champion",
        f"models:/{NAME}@challenger",
    ]
    assert models.pinned(f"models:/{NAME}@challenger", found, NAME) == f"models:/{NAME}/2"
    assert models.label(f"models:/{NAME}@champion", found, NAME) == "champion (version 1)"
    assert models.label("runs:/abc/model", found, NAME) == "runs:/abc/model"
    with pytest.raises(RegistryError, match="no version of .* has the alias 'best'"):
        models.pinned(f"models:/{NAME}@best", found, NAME)
    assert models.versions(store["client"], "nobody-registered-this") == []


def test_the_ui_link_follows_the_store(tmp_path):
    assert models.ui_base("http://user:secret@host:5000/") == "http://host:5000"
    assert models.ui_base("sqlite:////x/mlflow.db") == "http://127.0.0.1:5000"
    assert models.ui_base("sqlite:////x/mlflow.db", "http://ui:8080/") == "http://ui:8080"
    with pytest.raises(TrackingUnavailable, match="no MLflow store at .*nothing.db"):
        models.open_store(f"sqlite:///{tmp_path}/nothing.db")
    assert not (tmp_path / "nothing.db").exists()


def test_digits_app_refuses_a_bad_port(capsys):
    assert cli.main(["app", "--port", "70000"]) == 1
    assert "--port must be 1-65535, got 70000" in capsys.readouterr().err
