"""The web app's page (a Streamlit script): draw or upload a digit, see what the
registry's champion and challenger read, side by side. Started by `digits app`, which
passes the store and the models after `--`:

    streamlit run page.py -- --tracking-uri URI [--model URI ...] [--name NAME]

Everything here is layout; models come from web.models, predictions from
inference.Predictor (one per model, loaded once per process).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from digit_experiments.errors import DigitsError, ImageError
from digit_experiments.inference.predictor import Predictor, decode_image
from digit_experiments.inference.preprocess import MIN_CONTRAST
from digit_experiments.web import models

CANVAS = 280  # px: 10x MNIST's 28, big enough to draw with a finger
INK = 18  # px: MNIST strokes are ~2 of 28 px once a digit fills its 20 px box
SEEN = 140  # px: the 28x28 input shown 5x, pixels kept sharp


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="digits app")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model", action="append", default=[], metavar="URI")
    parser.add_argument("--name", default="mnist-digit-classifier")
    parser.add_argument("--ui-url")
    return parser.parse_args(sys.argv[1:])


@st.cache_resource(show_spinner="Loading the model...")
def load(uri: str, tracking_uri: str) -> Predictor:
    """One Predictor per model and process; `uri` is pinned to a version, so a moved
    alias loads the new version instead of serving a stale one. `tracking_uri` is part
    of the cache key: the same URI in another store is another model."""
    started = time.perf_counter()
    predictor = Predictor.load(uri)
    print(f"digits app: loaded {uri} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return predictor


def canvas_picture(key: str) -> np.ndarray | None:
    """The drawing as gray pixels (white ink on black), or None when nothing is drawn."""
    drawn = st_canvas(
        stroke_width=INK,
        stroke_color="#FFFFFF",
        background_color="#000000",
        width=CANVAS,
        height=CANVAS,
        drawing_mode="freedraw",
        return_image_data=True,
        key=key,
    )
    pixels = drawn.image_data
    if pixels is None:
        return None
    # The canvas returns its strokes over a transparent layer: lay them on black, as
    # the page shows them (the model's preprocessing would put transparency on paper).
    rgba = pixels.astype(np.float32) / 255.0
    gray = rgba[..., :3].mean(axis=-1) * rgba[..., 3]
    return gray if gray.max() > MIN_CONTRAST else None


def uploaded_picture(upload) -> np.ndarray:
    """The upload's pixels, read as `digits predict` reads a file."""
    try:
        return decode_image(upload.getvalue())
    except ImageError as e:
        raise ImageError(f"{upload.name} is not an image: upload a PNG or JPEG") from e


def show_prediction(label: str, predictor: Predictor, picture: np.ndarray) -> None:
    started = time.perf_counter()
    prediction = predictor.predict([picture])[0]
    took = 1000 * (time.perf_counter() - started)
    st.subheader(label)
    st.markdown(f"### Prediction: {prediction.digit}")
    st.write(f"probability {prediction.probability:.1%} · predicted in {took:.0f} ms")
    chart = pd.DataFrame({"probability": prediction.probabilities}, index=range(10))
    st.bar_chart(chart, height=180, x_label="digit", y_label="probability")
    st.caption("What the model saw (28x28, after MNIST-style preprocessing)")
    st.image(np.kron(prediction.seen, np.ones((SEEN // 28, SEEN // 28))), clamp=True)


def shown_name(uri: str, found: list[models.Version], name: str) -> str:
    try:
        return models.label(uri, found, name)
    except DigitsError:
        return uri  # an alias nobody holds: the page says so when it is used


def registry_panel(found: list[models.Version], base: str) -> None:
    st.header("Registry")
    st.caption("Test accuracy on all of MNIST's test set, as `digits promote` measured it.")
    rows = ["| version | aliases | test accuracy | run | sweep | |", "|---|---|---|---|---|---|"]
    for v in found:
        accuracy = f"{v.test_accuracy:.4f}" if v.test_accuracy is not None else ""
        link = f"[open in MLflow]({models.run_link(base, v.experiment_id, v.run_id)})"
        rows.append(
            f"| {v.version} | {', '.join(v.aliases)} | {accuracy} | {v.run_name} "
            f"| {v.sweep} | {link} |"
        )
    with st.container(key="registry"):
        st.markdown("\n".join(rows))


def main() -> None:
    args = options()
    st.set_page_config(page_title="digit-experiments", page_icon="✏️", layout="wide")
    st.title("Draw a digit")
    try:
        client = models.open_store(args.tracking_uri)
        found = models.versions(client, args.name)
    except DigitsError as e:
        st.error(f"Cannot reach the tracking store: {e}")
        return

    choices = [*models.default_models(found, args.name)] if found else []
    known = [f"models:/{args.name}@{a}" for v in found for a in v.aliases]
    known += [f"models:/{args.name}/{v.version}" for v in found]
    chosen = st.sidebar.multiselect(
        "Models",
        options=list(dict.fromkeys([*args.model, *choices, *known])),
        default=args.model or choices,
        format_func=lambda uri: shown_name(uri, found, args.name),
    )
    typed = st.sidebar.text_input("Another model URI (models:/..., runs:/..., a .h5 file)")
    chosen += [typed.strip()] if typed.strip() else []

    left, right = st.columns([1, 2])
    with left:
        if st.button("Clear", key="clear"):
            st.session_state.canvas = st.session_state.get("canvas", 0) + 1
        picture = canvas_picture(f"canvas-{st.session_state.get('canvas', 0)}")
        upload = st.file_uploader("... or upload a photo or scan of a digit")
    with right:
        if not chosen:
            try:
                models.default_models(found, args.name)
            except DigitsError as e:
                st.warning(str(e))
            else:
                st.info("Pick a model in the sidebar.")
        elif upload is None and picture is None:
            st.info("Draw a digit in the black square (or upload a picture).")
        else:
            try:
                if upload is not None:
                    picture = uploaded_picture(upload)
            except DigitsError as e:
                st.error(str(e))
            else:
                for column, uri in zip(st.columns(len(chosen)), chosen):
                    with column:
                        show_model(uri, found, args, picture)
    if found:
        registry_panel(found, models.ui_base(args.tracking_uri, args.ui_url))


def show_model(uri: str, found: list[models.Version], args, picture: np.ndarray) -> None:
    """One model's column; a model that cannot be used says why in its own column."""
    label = shown_name(uri, found, args.name)
    with st.container(key=f"prediction-{models.slug(label)}"):
        try:
            pinned = models.pinned(uri, found, args.name)
            show_prediction(label, load(pinned, args.tracking_uri), picture)
        except DigitsError as e:
            st.subheader(label)
            st.error(str(e))


main()
