"""Inference: `digits predict` latency for one picture and throughput for 10,000, and
`mlflow models serve` answering pictures (base64 PNGs) one at a time and 100 at a time.

    .venv/bin/python benchmarks/inference.py [--requests 200] [--repeat 3] [--rounds 5]
                                             [--startup-repeat 7] [--only startup]

Trains a seed CNN briefly (1 epoch on 10,000 images: speed does not depend on how well
it learnt) into a temporary store, promotes it to `mnist-digit-classifier@champion`, then
measures, as a user would run them:
- `digits predict --model models:/mnist-digit-classifier@champion digit.png`, a whole
  process (start-up, model load, preprocessing, prediction);
- the same with a .npy of the 10,000 test images; the two take turns for `--repeat`
  rounds, and each is shown as min / median / max of its processes;
- a real `mlflow models serve` process on 127.0.0.1 (one uvicorn worker, its default),
  sent pictures as a client sends them, `{"dataframe_records": [{"image": <base64>}]}`:
  MNIST test digits as 28x28 PNGs, and "scans" (the same digits 4x larger, dark ink on
  light paper, which preprocessing must crop, fit and centre). One client sends a bounded
  loop of requests one after another over one keep-alive connection (as a client library
  with a session does); batch-1 requests are also sent on a new connection each. Every
  request is timed in three parts, each shown as min / median / max: the client's
  encoding (PNG bytes -> base64 -> JSON), the HTTP round trip (the server's whole work:
  parsing, base64 decoding, preprocessing, the network, the JSON answer), and, measured
  apart in this process on the same model, the pyfunc's `predict` alone (what the
  server's round trip spends in the model). Images/s are from the round trips.
- "before", how serving worked until the served model took pictures: the SAME trained
  network (`mlflow.keras.load_model` of the champion) saved with plain
  `mlflow.keras.save_model` (keras flavor only, tensor signature and input example, as
  logged models were) into a folder, served by a second `mlflow models serve` (MLflow's
  own keras pyfunc: Keras `model.predict` per request) and sent MNIST-format float
  tensors `{"inputs": <(N, 28, 28, 1) floats in [0, 1]>}` of the same test digits. Both
  servers are up at once; the 1- and 100-a-request keep-alive loops on MNIST digits are
  cut into `--rounds` rounds that take turns between the two (the order rotating; each
  round starts with an untimed request on a new connection, as the first did), as this
  machine's speed drifts by tens of percent over minutes. The speed-up per batch size:
  before / now of the median round trips, of the images/s, and of each round's median
  round trips (min / median / max over the rounds).
- "predict start-up": `digits predict digit.png` as a fresh process with a local .h5 (the
  champion exported) and with `models:/NAME@champion` on the SQLite store, against a bare
  `python -c "import tensorflow"`, the three taking turns for `--startup-repeat` rounds
  after a warm-up each; each one's time beyond TensorFlow is taken per round (target: at
  most 1 s), and one `-X importtime` run each says whether the process itself imported
  MLflow (a registry URI is resolved in a child process where there are 2+ CPUs).
  `--only startup` measures this alone and merges it into an existing inference.json.
Writes benchmarks/results/inference.{json,md}.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, rounds, save, show, spread, table, timed
from common import env as child_env

NAME = "mnist-digit-classifier"
BIN = Path(sys.executable).parent
BATCHES = (1, 100)
HEADERS = {"Content-Type": "application/json"}
COMPARED = "mnist"  # the pictures whose loops take turns with the "before" server's
BEFORE = "before (keras flavor, MNIST tensors)"


def encode(pngs: list[bytes]) -> bytes:
    """A request body, as a client makes it from picture files' bytes."""
    records = [{"image": base64.b64encode(png).decode("ascii")} for png in pngs]
    return json.dumps({"dataframe_records": records}).encode()


def encode_tensors(images: np.ndarray) -> bytes:
    """A request body as a client of the keras flavor made it from MNIST-format arrays."""
    return json.dumps({"inputs": images.tolist()}).encode()


def check_pictures(answer: bytes, batch: int) -> None:
    predictions = json.loads(answer)["predictions"]
    assert len(predictions) == batch and len(predictions[0]["probabilities"]) == 10


def check_tensors(answer: bytes, batch: int) -> None:
    predictions = json.loads(answer)["predictions"]
    assert len(predictions) == batch and len(predictions[0]) == 10


class Client:
    """POSTs to /invocations over one keep-alive connection, or a new one each time."""

    def __init__(self, port: int, keep_alive: bool):
        self.port, self.keep_alive, self.connection = port, keep_alive, None

    def post(self, payload: bytes) -> bytes:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.connection.request("POST", "/invocations", payload, HEADERS)
        response = self.connection.getresponse()
        answer = response.read()
        if not self.keep_alive:
            self.connection.close()
            self.connection = None
        if response.status != 200:
            sys.exit(f"the server answered {response.status}: {answer[:500]!r}")
        return answer

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def start_server(store: Path, uri: str, model: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environ = {**child_env(), "MLFLOW_TRACKING_URI": uri}
    environ["PATH"] = f"{BIN}:{environ.get('PATH', '')}"
    command = [str(BIN / "mlflow"), "models", "serve", "-m", model]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=store, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    started = time.perf_counter()
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        finally:
            connection.close()
        if process.poll() is not None or time.perf_counter() - started > 180:
            process.kill()
            sys.exit("mlflow models serve did not start")
        time.sleep(0.25)
    return process, port, time.perf_counter() - started


def serve(
    store: Path,
    uri: str,
    keras_folder: Path,
    requests: int,
    turns: int,
    pictures: dict[str, list[bytes]],
    tensors: np.ndarray,
) -> dict:
    """Both servers up; the compared loops taking turns, then the pictures' other loops."""
    after, port, start_up = start_server(store, uri, f"models:/{NAME}@champion")
    results: dict = {"start_up_seconds": round(start_up, 1)}
    try:
        before, before_port, before_start_up = start_server(store, uri, str(keras_folder))
        try:
            results["before"] = {"start_up_seconds": round(before_start_up, 1)}
            speedup = {}
            for batch in BATCHES:
                n = requests if batch == 1 else max(1, requests // 4)
                loops = {
                    "after": Loop(Client(port, True), pictures[COMPARED], batch, encode),
                    "before": Loop(
                        Client(before_port, True), tensors, batch, encode_tensors, check_tensors
                    ),
                }
                parts = min(turns, n)
                counts = [n // parts + (k < n % parts) for k in range(parts)]
                for i, name in rounds(list(loops), parts):
                    loops[name].run(counts[i])
                results[f"{COMPARED}_batch_{batch}"] = loops["after"].summary()
                results["before"][f"{COMPARED}_batch_{batch}"] = loops["before"].summary()
                speedup[f"batch_{batch}"] = ratios(loops["before"], loops["after"])
            results["speedup"] = speedup
        finally:
            before.terminate()
            before.wait(timeout=30)
        for kind, pngs in pictures.items():
            for batch in BATCHES:
                n = requests if batch == 1 else max(1, requests // 4)
                for keep_alive in (True, False) if batch == 1 else (True,):
                    key = f"{kind}_batch_{batch}" + ("" if keep_alive else "_new_connection")
                    if key in results:
                        continue  # measured above, in turns with the "before" server
                    loop = Loop(Client(port, keep_alive), pngs, batch, encode)
                    loop.run(n)
                    results[key] = loop.summary()
    finally:
        after.terminate()
        after.wait(timeout=30)
    return results


class Loop:
    """One client's bounded loop of requests to one server (after a warm-up request), run
    in one go or in rounds; every request timed (encoding apart from the round trip)."""

    def __init__(self, client: Client, items, batch: int, encoder, check=check_pictures):
        self.client, self.items, self.batch = client, items, batch
        self.encoder, self.check = encoder, check
        self.encoding: list[float] = []
        self.round_trips: list[float] = []
        self.round_medians: list[float] = []
        self.sent, self.size = 0, 0
        check(client.post(encoder(items[:batch])), batch)  # warm-up

    def run(self, n: int) -> None:
        if self.round_medians:
            # A later round: the server may have closed the connection while the other
            # one's round ran (uvicorn's keep-alive timeout is 5 s). A new connection and
            # an untimed request, as the first round had.
            self.client.close()
            self.check(self.client.post(self.encoder(self.items[: self.batch])), self.batch)
        trips = []
        for _ in range(n):
            start = (self.sent * self.batch) % (len(self.items) - self.batch + 1)
            self.sent += 1
            t = time.perf_counter()
            payload = self.encoder(self.items[start : start + self.batch])
            self.encoding.append(time.perf_counter() - t)
            t = time.perf_counter()
            answer = self.client.post(payload)
            trips.append(time.perf_counter() - t)
            self.check(answer, self.batch)
            self.size = len(payload)
        self.round_trips += trips
        self.round_medians.append(statistics.median(trips))

    def summary(self) -> dict:
        return {
            "requests": self.sent,
            "rounds": len(self.round_medians),
            "images_per_second": round(self.sent * self.batch / sum(self.round_trips)),
            "round_trip_ms": spread([1000 * t for t in self.round_trips], 2),
            "client_encoding_ms": spread([1000 * t for t in self.encoding], 3),
            "request_kib": round(self.size / 1024, 1),
        }


def ratios(before: Loop, after: Loop) -> dict:
    """How many times faster the pictures are served than the tensors were: median round
    trips, images/s (both over all requests), and each round's medians (round i of one
    against round i of the other, run next to each other)."""
    return {
        "median_round_trip": round(
            statistics.median(before.round_trips) / statistics.median(after.round_trips), 1
        ),
        "images_per_second": round(sum(before.round_trips) / sum(after.round_trips), 1),
        "per_round": spread([b / a for b, a in zip(before.round_medians, after.round_medians)], 1),
    }


def in_process(
    uri: str, keras_folder: Path, requests: int, pictures: dict[str, list[bytes]], tensors
) -> dict:
    """The pyfunc's predict alone, on what the server hands it: a table of bytes (the
    served model), or the float array (the keras flavor's pyfunc, "before")."""
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    before = mlflow.pyfunc.load_model(str(keras_folder))
    results: dict = {"before": {}}
    for kind, pngs in pictures.items():
        for batch in BATCHES:
            n = requests if batch == 1 else max(1, requests // 4)
            key = f"{kind}_batch_{batch}"
            results[key] = _predict_ms(model, pngs, batch, n, lambda b: pd.DataFrame({"image": b}))
            if kind == COMPARED:
                results["before"][key] = _predict_ms(before, tensors, batch, n, lambda b: b)
    return results


def _predict_ms(model, items, batch: int, n: int, frame) -> dict:
    inputs = [
        frame(items[start : start + batch])
        for start in ((i * batch) % (len(items) - batch + 1) for i in range(n))
    ]
    seconds = []
    # The keras pyfunc's model.predict prints a progress bar per call; the servers' output
    # goes to /dev/null, and so does this.
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        model.predict(inputs[0])  # warm-up
        for x in inputs:
            t = time.perf_counter()
            model.predict(x)
            seconds.append(time.perf_counter() - t)
    return {"predict_ms": spread([1000 * s for s in seconds], 2)}


def save_keras_flavor(uri: str, folder: Path, tensors: np.ndarray) -> None:
    """The champion's network saved as models were logged before they took pictures:
    `mlflow.keras.save_model`, keras flavor only, the signature and input example of
    MNIST-format float tensors (5 test images and their probabilities)."""
    import mlflow
    import mlflow.keras
    from mlflow.models import infer_signature

    from digit_experiments.tracking import provenance

    mlflow.set_tracking_uri(uri)
    network = mlflow.keras.load_model(f"models:/{NAME}@champion")
    example = tensors[:5]
    os.makedirs(folder)  # mlflow/mlflow#16183: the input example is written first
    mlflow.keras.save_model(
        network,
        str(folder),
        signature=infer_signature(example, network.predict(example, verbose=0)),
        input_example=example,
        pip_requirements=provenance.requirements(),
    )


def make_pictures(test: np.ndarray, count: int) -> dict[str, list[bytes]]:
    import io

    from PIL import Image

    def png(image) -> bytes:
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()

    scans = (Image.fromarray(255 - t).resize((112, 112), Image.Resampling.BICUBIC) for t in test)
    return {
        "mnist": [png(Image.fromarray(t)) for t in test[:count]],
        "scan": [png(s) for s, _ in zip(scans, range(count))],
    }


# The predict start-up section's processes (run in the store's folder, whose mlflow.db is
# the default store), the TensorFlow baseline first.
STARTUP = {
    "tensorflow": ["python", "-c", "import tensorflow"],
    "file": ["digits", "predict", "--model", "model.h5", "digit.png"],
    "registry": ["digits", "predict", "--model", f"models:/{NAME}@champion", "digit.png"],
}
STARTUP_TARGET_SECONDS = 1.0  # beyond importing TensorFlow (issue 12)


def predict_startup(store: Path, uri: str, repeat: int) -> dict:
    """`digits predict` on one picture as a fresh process, with a model file and with a
    registry URI, against importing TensorFlow alone; the three alternated."""
    export = ["export", "--model", f"models:/{NAME}@champion", "--out", "model.h5"]
    timed([str(BIN / "digits"), "--tracking-uri", uri, *export], cwd=store)
    commands = {name: _resolved(argv) for name, argv in STARTUP.items()}
    for command in commands.values():
        timed(command, cwd=store)  # warm-up: file caches
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _, name in rounds(list(commands), repeat):
        seconds[name].append(timed(commands[name], cwd=store)[0])
    rows = {}
    for name, command in commands.items():
        rows[name] = {
            "command": shlex.join(STARTUP[name]),
            "seconds": spread(seconds[name], 2),
            "imports_mlflow": "mlflow" in _top_level_imports(command, store),
        }
        if name != "tensorflow":
            # Per round: the two ran in the same round, so the machine's drift falls on both.
            beyond = [s - t for s, t in zip(seconds[name], seconds["tensorflow"])]
            rows[name]["beyond_tensorflow_seconds"] = spread(beyond, 2)
    return {
        "repeat": repeat,
        "target_beyond_tensorflow_seconds": STARTUP_TARGET_SECONDS,
        "machine": machine(),
        "rows": rows,
    }


def _resolved(argv: list[str]) -> list[str]:
    program = sys.executable if argv[0] == "python" else str(BIN / argv[0])
    return [program, *argv[1:]]


def _top_level_imports(command: list[str], cwd: Path) -> set[str]:
    """The top-level packages a command imports (python -X importtime)."""
    script = [] if command[0] == sys.executable else [command[0]]
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", *script, *command[1:]],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        line.split("|")[-1].strip().split(".")[0]
        for line in traced.stderr.splitlines()
        if line.startswith("import time:")
    }


def startup_setup(repeat: int) -> str:
    return (
        f"Predict start-up (`--startup-repeat {repeat}`): `digits predict` on one 112x112 PNG "
        "as a fresh process, in the store's folder (its mlflow.db is the default store), "
        "with the champion exported as model.h5 and with its `models:/` URI, and a bare "
        '`python -c "import tensorflow"`; after a warm-up each (file caches), the three '
        f"alternated over {repeat} rounds. Beyond TensorFlow: each process minus the same "
        "round's `import tensorflow` process (min / median / max over the rounds); target: "
        f"at most {STARTUP_TARGET_SECONDS:.0f} s. MLflow imported: by the process itself (a "
        "registry URI is resolved in a child process on 2+ CPUs), one `python -X importtime` "
        "run each."
    )


def startup_markdown(startup: dict) -> str:
    """The section below the other figures: its setup, its machine, its table."""
    setup = startup_setup(startup["repeat"])
    return f"{setup} Machine: {startup['machine']}\n\n{startup_table(startup)}"


def startup_table(startup: dict) -> str:
    rows = []
    for r in startup["rows"].values():
        beyond = r.get("beyond_tensorflow_seconds")
        rows.append(
            [
                f"`{r['command']}`",
                show(r["seconds"], "{:.2f}", " s"),
                show(beyond, "{:+.2f}", " s") if beyond else "(the baseline)",
                "yes" if r["imports_mlflow"] else "no",
            ]
        )
    header = ["process", "wall (min / median / max)", "beyond TensorFlow", "MLflow imported"]
    return table(header, rows)


def save_startup_only(startup: dict) -> None:
    """`--only startup`: this section into results/inference.json, the others kept (with
    their setup and machine; this section records its own)."""
    path = RESULTS / "inference.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    if "serve" not in earlier:
        setup, table_ = startup_setup(startup["repeat"]), startup_table(startup)
        save("inference", setup, {"startup": startup}, table_)
        return
    setup = earlier.pop("setup")
    earlier["startup"] = startup
    save("inference", setup, earlier, results_markdown(earlier))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="batch-1 requests")
    parser.add_argument("--repeat", type=int, default=3, help="digits predict runs each")
    parser.add_argument("--train-limit", type=int, default=10000, help="images to train on")
    parser.add_argument(
        "--rounds", type=int, default=5, help="turns of the before/after serving loops"
    )
    parser.add_argument(
        "--startup-repeat", type=int, default=7, help="predict start-up processes each"
    )
    parser.add_argument(
        "--only",
        choices=["startup"],
        help="only the predict start-up section (merged into results/inference.json)",
    )
    args = parser.parse_args()

    from PIL import Image

    from digit_experiments.core import data

    with tempfile.TemporaryDirectory(prefix="inference-bench-") as tmp:
        store = Path(tmp)
        uri = f"sqlite:///{store}/mlflow.db"
        timed(
            [
                sys.executable,
                "-m",
                "digit_experiments.train",
                f"data.train_limit={args.train_limit}",
                "trainer.epochs=1",
                f"tracking.uri={uri}",
            ],
            cwd=store,
        )
        timed(
            [
                str(BIN / "digits"),
                "--tracking-uri",
                uri,
                "promote",
                "--experiment",
                "digit-experiments",
            ],
            cwd=store,
        )
        test = data.load_idx_dir(data.bundled_dir())["test_images"]
        Image.fromarray(255 - test[0]).resize((112, 112)).save(store / "digit.png")  # a "scan"
        startup = predict_startup(store, uri, args.startup_repeat)
        if args.only == "startup":
            save_startup_only(startup)
            return
        np.save(store / "test.npy", test)
        model = f"models:/{NAME}@champion"
        predict = [str(BIN / "digits"), "--tracking-uri", uri, "predict", "--model", model]
        inputs = {"one": "digit.png", "many": "test.npy"}
        seconds: dict[str, list[float]] = {name: [] for name in inputs}
        for _, name in rounds(list(inputs), args.repeat):
            seconds[name].append(timed([*predict, inputs[name]], cwd=store)[0])
        pictures = make_pictures(test, count=1000)
        tensors = data.to_model_input(test[:1000])  # what a client of the keras flavor sent
        keras_folder = store / "keras-flavor"
        save_keras_flavor(uri, keras_folder, tensors)
        served = serve(store, uri, keras_folder, args.requests, args.rounds, pictures, tensors)
        measured = in_process(uri, keras_folder, args.requests, pictures, tensors)
        for key, value in measured.pop("before").items():
            served["before"][key].update(value)
        for key, value in measured.items():
            served[key].update(value)

    one, many = spread(seconds["one"], 2), spread(seconds["many"], 2)
    results = {
        "repeat": args.repeat,
        "predict_one_image_seconds": one,
        "predict_10000_images_seconds": many,
        # The process's fixed cost (imports, model load) is what one image measures.
        "predict_images_per_second_beyond_startup": round(
            10000 / max(many["median"] - one["median"], 1e-9)
        ),
        "serve": served,
        "speedup": served.pop("speedup"),
        "startup": startup,
    }
    save("inference", results_setup(args, results), results, results_markdown(results))


def results_markdown(results: dict) -> str:
    """The predict and serve figures' table, then the start-up section's."""
    markdown = table(
        [
            "what",
            "time (min / median / max)",
            "client encoding",
            "pyfunc predict (in-process)",
            "rate",
        ],
        results_rows(results),
    )
    if "startup" in results:
        markdown += "\n\n" + startup_markdown(results["startup"])
    return markdown


def results_rows(results: dict) -> list[list[str]]:
    one, many, served = (
        results["predict_one_image_seconds"],
        results["predict_10000_images_seconds"],
        results["serve"],
    )
    rows = [
        ["`digits predict` 1 PNG (whole process)", show(one, "{:.2f}", " s"), "", "", ""],
        [
            "`digits predict` 10,000 images (.npy, whole process)",
            show(many, "{:.2f}", " s"),
            "",
            "",
            f"{results['predict_images_per_second_beyond_startup']:,} images/s beyond "
            "start-up (medians)",
        ],
    ]
    names = {"mnist": "28x28 MNIST PNG", "scan": "112x112 scan PNG"}
    for kind, label in names.items():
        for batch in BATCHES:
            for suffix in ("", "_new_connection"):
                r = served.get(f"{kind}_batch_{batch}{suffix}")
                if r is None:
                    continue
                how = "new connection each" if suffix else "keep-alive"
                in_model = served[f"{kind}_batch_{batch}"]["predict_ms"]
                rows.append(
                    [
                        f"`mlflow models serve` round trip, {batch} x {label} "
                        f"({r['request_kib']:,} KiB request, {how})",
                        show(r["round_trip_ms"], "{:.1f}", " ms"),
                        show(r["client_encoding_ms"], "{:.2f}", " ms"),
                        show(in_model, "{:.1f}", " ms"),
                        f"{r['images_per_second']:,} images/s",
                    ]
                )
            if kind == COMPARED:
                rows += comparison_rows(served, results["speedup"], batch)
    return rows


def results_setup(args, results: dict) -> str:
    served = results["serve"]
    before = served["before"]
    return (
        f"`benchmarks/inference.py --requests {args.requests} --repeat {args.repeat} "
        f"--rounds {args.rounds} --startup-repeat {args.startup_repeat}`: seed "
        f"CNN; `digits predict`: {args.repeat} processes each, the two alternated; serving: "
        f"{args.requests} batch-1 and {max(1, args.requests // 4)} batch-100 requests of base64 "
        f"PNGs in a loop, one client, after a warm-up request (server start-up: "
        f"{served['start_up_seconds']} s, one uvicorn worker). Round trip: the request "
        f"sent to the answer read (the server's work and the network); client encoding: "
        f"PNG bytes -> base64 -> JSON, not in the round trip; pyfunc predict: the served "
        f"model's `predict` alone, in-process on the same model and pictures; images/s "
        f"from the round trips. {BEFORE}: the same network saved with plain "
        f"`mlflow.keras.save_model` (keras flavor only, tensor signature), served by a second "
        f"`mlflow models serve` (start-up {before['start_up_seconds']} s; MLflow's keras "
        f"pyfunc, Keras `model.predict` per request), sent the same MNIST test digits as "
        f'`{{"inputs": <(N, 28, 28, 1) floats>}}`; both servers up, the 1- and 100-a-request '
        f"keep-alive loops of both cut into {args.rounds} rounds taking turns (each after "
        f"an untimed request on a new connection). Speed-up: "
        f"before / now, of the median round trips, of the images/s, and per round (each "
        f"round's median round trips; min / median / max)."
    )


def comparison_rows(served: dict, speedup: dict, batch: int) -> list[list[str]]:
    """The "before" row for `batch` MNIST digits a request, and the speed-up over it."""
    r = served["before"][f"{COMPARED}_batch_{batch}"]
    ratio = speedup[f"batch_{batch}"]
    return [
        [
            f"{BEFORE}: `mlflow models serve` round trip, {batch} x (28, 28, 1) float32 "
            f"tensor ({r['request_kib']:,} KiB request, keep-alive)",
            show(r["round_trip_ms"], "{:.1f}", " ms"),
            show(r["client_encoding_ms"], "{:.2f}", " ms"),
            show(r["predict_ms"], "{:.1f}", " ms"),
            f"{r['images_per_second']:,} images/s",
        ],
        [
            f"**speed-up, {batch} a request**: 28x28 MNIST PNGs now / {BEFORE}",
            f"**{ratio['median_round_trip']:.1f}x** lower median round trip (per round: "
            f"{show(ratio['per_round'], '{:.1f}', 'x')})",
            "",
            "",
            f"**{ratio['images_per_second']:.1f}x** images/s",
        ],
    ]


if __name__ == "__main__":
    main()
