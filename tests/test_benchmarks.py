"""The benchmarks run end to end on tiny settings and write their figures, and README.md's
figures are exactly what benchmarks/readme.py makes of benchmarks/results/ (the real
figures come from full runs: see benchmarks/README.md)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys

import pytest

from digit_experiments.app.help import CONF_DIR

from .conftest import clean_env, needs_postgres

ROOT = CONF_DIR.parent
BENCHMARKS = ROOT / "benchmarks"
TINY = ["data.train_limit=1000", "data.test_limit=200", "trainer.epochs=1"]


def spread_of(stats: dict, repeats: int) -> bool:
    """A timing as every benchmark records it: each repeat, and min <= median <= max."""
    return len(stats["values"]) == repeats and stats["min"] <= stats["median"] <= stats["max"]


def mean_std(values: list[float]) -> str:
    """As the README shows accuracies over seeds: mean ± sample std (n=N)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2%} ± {spread:.2%} (n={len(values)})"


def run_benchmark(script: str, args: list[str], results, timeout: int = 300):
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        env={**clean_env(), "BENCHMARK_RESULTS": str(results)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def generate(readme, results, *flags: str):
    """benchmarks/readme.py on a README and a results folder."""
    command = [sys.executable, str(BENCHMARKS / "readme.py"), "--readme", str(readme)]
    command += ["--results", str(results), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("script", "args", "check"),
    [
        (
            "startup.py",
            ["--repeat", "2"],
            lambda r: (
                r["rows"]["--help"]["heavy_imports"] == []
                and all(spread_of(row["seconds"], 2) for row in r["rows"].values())
            ),
        ),
        (
            "throughput.py",
            ["--images", "1000", "--epochs", "2", "--repeat", "1"]
            + ["--only", "mlp;mlp, NumPy arrays"],
            lambda r: (
                [row["variant"] for row in r["rows"]] == ["mlp", "mlp, NumPy arrays"]
                and all(spread_of(row["images_per_second"], 1) for row in r["rows"])
                and all(row["images_per_second"]["min"] > 0 for row in r["rows"])
            ),
        ),
        (
            "stalls.py",
            ["--images", "1000", "--epochs", "3", "--repeat", "1"],
            lambda r: (
                [row["variant"] for row in r["rows"]] == ["dataset", "dataset, autotuned", "arrays"]
                and all(spread_of(row["mean_epoch_seconds"], 1) for row in r["rows"])
                and all(row["epochs"] == 2 for row in r["rows"])
                and all(len(row["processes"][0]["epoch_seconds"]) == 3 for row in r["rows"])
            ),
        ),
        (
            "blur.py",
            ["--images", "300"],
            lambda r: (
                [row["way"] for row in r["rows"]]
                == ["clean", "three Keras layers", "one transform"]
                and r["rows"][0]["edge_fraction"] == 1.0
                # Three resamplings blur more than one; the ink stays.
                and r["rows"][1]["edge_fraction"] < r["rows"][2]["edge_fraction"] < 1.0
                and all(0.9 < row["ink"] / r["rows"][0]["ink"] < 1.1 for row in r["rows"])
            ),
        ),
        (
            "time_to_99.py",
            ["--target", "0.5", "--max-epochs", "3", "--repeat", "2"]
            + ["data.train_limit=2000", "data.test_limit=500"],
            lambda r: (
                r["reached_count"] == 2
                and all(rep["reached"]["test_accuracy"] >= 0.5 for rep in r["repeats"])
                and spread_of(r["epoch"], 2)
                and spread_of(r["train_seconds"], 2)
            ),
        ),
        (
            "overhead.py",
            ["--epochs", "1", "--repeat", "1", "--train-limit", "1000", "--test-limit", "200"],
            lambda r: (
                spread_of(r["plain_s"], 1)
                and spread_of(r["tracked_s"], 1)
                and spread_of(r["pair_ratio"], 1)
                and r["pair_ratio"]["median"] > 0
            ),
        ),
        (
            "memory.py",
            ["--repeat", "2", "model=mlp", *TINY],
            lambda r: (
                len(r["runs"]) == 2
                and spread_of(r["peak_rss_mib"], 2)
                and r["peak_rss_mib"]["min"] > 100  # TensorFlow alone is more
            ),
        ),
        (
            "sweep_parallel.py",
            ["--train-limit", "500", "--epochs", "1", "--repeat", "1", "--only", "joblib"],
            lambda r: (
                [row["name"] for row in r["rows"]] == ["basic", "joblib"]
                and all(row["finished_jobs"] == [4] for row in r["rows"])
                and all(spread_of(row["wall_seconds"], 1) for row in r["rows"])
            ),
        ),
        (
            "scale.py",
            ["--train-limit", "500", "--epochs", "1", "--repeat", "1", "--run-repeat", "1"],
            lambda r: (
                [row["name"] for row in r["rows"]] == ["basic", "joblib", "ray"]
                and all(row["finished_jobs"] == [8] for row in r["rows"])
                and all(spread_of(row["wall_seconds"], 1) for row in r["rows"])
                and all(spread_of(c, 1) for c in r["tracking_cost_seconds"].values())
            ),
        ),
        (
            "inference.py",
            ["--requests", "4", "--repeat", "1", "--train-limit", "1000", "--startup-repeat", "1"],
            lambda r: (
                spread_of(r["predict_one_image_seconds"], 1)
                # predict start-up: a model file never imports MLflow; figures per round
                and not r["startup"]["rows"]["file"]["imports_mlflow"]
                and spread_of(r["startup"]["rows"]["registry"]["beyond_tensorflow_seconds"], 1)
                and spread_of(r["predict_10000_images_seconds"], 1)
                and spread_of(r["serve"]["mnist_batch_1"]["round_trip_ms"], 4)
                and spread_of(r["serve"]["scan_batch_100"]["predict_ms"], 1)
                # the same network served the old way (keras flavor, MNIST tensors)
                and spread_of(r["serve"]["before"]["mnist_batch_1"]["round_trip_ms"], 4)
                and spread_of(r["serve"]["before"]["mnist_batch_100"]["predict_ms"], 1)
                and all(r["speedup"][f"batch_{n}"]["median_round_trip"] > 0 for n in (1, 100))
            ),
        ),
        (
            "fast.py",
            ["--repeat", "2", "--profile-repeat", "1", "--images", "1000"]
            + ["--only", "batch 64", "data.train_limit=1000", "data.test_limit=200"],
            lambda r: (
                [run["seed"] for run in r["runs"]] == [1, 2]
                and all(run["epochs_trained"] == 3 for run in r["runs"])
                and spread_of(r["train_seconds"], 2)
                and spread_of(r["import_tensorflow_seconds"], 2)
                and list(r["profile"]) == ["batch 64"]
                and spread_of(r["profile"]["batch 64"]["epoch_seconds"], 1)
                and r["met"] is False  # 900 training images do not make 99%
            ),
        ),
        (
            # On this CPU: the same script, the runs' device tag says where they ran.
            "gpu.py",
            ["--only", "fast", "data.train_limit=1000", "data.test_limit=200"],
            lambda r: (
                list(r["rows"]) == ["fast"]
                and r["rows"]["fast"]["device"] == "cpu"
                and r["rows"]["fast"]["epochs_trained"] == 3
                and 0 < r["rows"]["fast"]["test_accuracy"] <= 1
                and r["not_run"] == ["fast_mixed", "best_cnn", "best_cnn_mixed"]
            ),
        ),
        (
            # Two candidates side by side, as on a GPU, on a slice small enough for CPU.
            "recipes.py",
            ["--variants", "best_cnn,dense512", "--seeds", "1", "--parallel", "2"]
            + ["trainer.epochs=1", "data.train_limit=1000", "data.test_limit=200"],
            lambda r: (
                list(r["variants"]) == ["best_cnn", "dense512"]
                and all([run["seed"] for run in v["runs"]] == [1] for v in r["variants"].values())
                and all(0 < v["summary"]["mean"] <= 1 for v in r["variants"].values())
                and r["variants"]["dense512"]["overrides"] == ["model.dense_units=[512]"]
                and r["not_finished"] == []
            ),
        ),
    ],
)
def test_benchmark_runs_and_writes_its_figures(tmp_path, script, args, check):
    if script == "scale.py":
        needs_postgres()  # it runs on a `digits stack`
    result = run_benchmark(script, args, tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    name = script.removesuffix(".py")
    figures = json.loads((tmp_path / f"{name}.json").read_text())
    assert check(figures), figures
    assert "Machine:" in (tmp_path / f"{name}.md").read_text()
    # The README generator renders these figures in full (min / median / max).
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    assert generate(readme, tmp_path).returncode == 0
    rows = [line for line in readme.read_text().splitlines() if f"`make bench-{name}`" in line]
    assert rows and all("not measured" not in r and "recorded)" not in r for r in rows), rows


def test_accuracy_rows_merge_and_the_readme_shows_them(tmp_path):
    results = tmp_path / "results"
    result = run_benchmark("accuracy.py", ["--only", "seed_mlp", *TINY], results)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = json.loads((results / "accuracy.json").read_text())["rows"]["seed_mlp"]["runs"]
    assert run["command"] == "python -m digit_experiments.train model=mlp " + " ".join(TINY)
    assert run["epochs_trained"] == 1 and 0 < run["test_accuracy"] <= 1
    assert run["wall_seconds"] > run["train_seconds"] > 0 and run["machine"] and run["run_id"]

    # A second row is merged into the file: the first stays.
    result = run_benchmark("accuracy.py", ["--only", "seed_cnn", *TINY], results)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((results / "accuracy.json").read_text())["rows"]
    assert list(rows) == ["seed_cnn", "seed_mlp"] and rows["seed_mlp"]["runs"] == [run]

    # The generator, on these results, into a copy of the README.
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    assert generate(readme, results).returncode == 0
    text = readme.read_text()
    assert f"| seed MLP | `{run['command']}` | {run['test_accuracy']:.2%} |" in text
    assert "*seed's report*" in text
    # No other results file there: every other figure is "not measured yet".
    assert "| `make bench-overhead` | (not measured yet) |" in text
    assert generate(readme, results, "--check").returncode == 0


def test_a_row_whose_runs_were_tested_in_shifted_views_says_so(tmp_path):
    """Their test accuracy is the views': the row declares it, with the bare networks'."""
    machine = "a machine"

    def child(seed, accuracy, bare):
        return {
            "seed": seed,
            "run_id": f"run{seed}",
            "status": "FINISHED",
            "test_accuracy": accuracy,
            "single_view_test_accuracy": bare,
            "test_f1_macro": accuracy,
            "epochs_trained": 2,
            "best_epoch": 2,
            "train_seconds": 60.0,
        }

    sweep = {
        "command": "python -m digit_experiments.train -m trainer.seed=1,2 model=mlp",
        "wall_seconds": 130.0,
        "machine": machine,
        "date": "2026-12-06",
        "parent_run_id": "sweep",
        "status": "FINISHED",
        "children": [child(1, 0.99, 0.98), child(2, 0.97, 0.96)],
    }
    results = tmp_path / "results"
    results.mkdir()
    (results / "accuracy.json").write_text(json.dumps({"rows": {"seed_mlp": {"runs": [sweep]}}}))
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    result = generate(readme, results)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [x for x in readme.read_text().splitlines() if x.startswith("| seed MLP |")]
    assert (
        "98.00% ± 1.41% (n=2); best 99.00% (seed 1); test-time augmentation: each picture in "
        "5 shifted views (trainer.test_time_shift), the bare networks 97.00% ± 1.41% (n=2)"
    ) in line

    # A seed that joined the sweep later, in views too: counted with the sweep's own, and
    # its best shown only with all of them.
    late = {**child(3, 0.995, 0.99), "command": "python -m x trainer.seed=3 p=SWEEP"}
    sweep["joined"] = [late]
    (results / "accuracy.json").write_text(json.dumps({"rows": {"seed_mlp": {"runs": [sweep]}}}))
    assert generate(readme, results).returncode == 0
    (line,) = [x for x in readme.read_text().splitlines() if x.startswith("| seed MLP |")]
    assert (
        "best 99.00% (seed 1); test-time augmentation: each picture in 5 shifted views "
        "(trainer.test_time_shift), "
        "the bare networks 97.00% ± 1.41% (n=2); with seeds 3, which joined the sweep later "
        "(`python -m x trainer.seed=N p=SWEEP_RUN_ID`), all its runs: "
        f"{mean_std([0.99, 0.97, 0.995])}; best 99.50% (seed 3); test-time augmentation: each "
        f"picture in 5 shifted views (trainer.test_time_shift), the bare networks "
        f"{mean_std([0.98, 0.96, 0.99])} | 0.9800 ± 0.0141 (n=2) |"
    ) in line


def test_the_readme_shows_an_inference_file_with_only_the_startup_section(tmp_path):
    """`inference.py --only startup` on a machine without the other figures: the README
    generator shows what there is, and the rest as not measured."""
    beyond = {"values": [0.5], "min": 0.5, "median": 0.5, "max": 0.5}
    rows = {name: {"beyond_tensorflow_seconds": beyond} for name in ("file", "registry")}
    results = tmp_path / "results"
    results.mkdir()
    (results / "inference.json").write_text(
        json.dumps({"setup": "s", "machine": "m", "startup": {"rows": rows}})
    )
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    result = generate(readme, results)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [r for r in readme.read_text().splitlines() if "| `make bench-inference` |" in r]
    assert "a .h5 file +0.50 s" in rows[0] and all("not measured" in r for r in rows[1:])


def test_readme_figures_are_the_generated_ones():
    """README.md is exactly what benchmarks/readme.py makes of benchmarks/results/: a
    typed figure, or results re-run without `make readme`, fail here."""
    result = generate(ROOT / "README.md", BENCHMARKS / "results", "--check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_an_accuracy_row_over_seeds_is_one_sweep_and_the_readme_shows_mean_and_std(tmp_path):
    """... and, with the sweep's store kept, benchmarks/ensemble.py averages its runs and
    the README shows the ensemble under the row."""
    results = tmp_path / "results"
    args = ["--only", "seed_mlp", "--seeds", "1,2", "--keep", str(tmp_path / "kept"), *TINY]
    result = run_benchmark("accuracy.py", args, results)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = json.loads((results / "accuracy.json").read_text())["rows"]["seed_mlp"]["runs"]
    assert sweep["command"].startswith("python -m digit_experiments.train -m trainer.seed=1,2")
    children = sweep["children"]
    assert [c["seed"] for c in children] == [1, 2]
    assert all(c["status"] == "FINISHED" and 0 < c["test_accuracy"] <= 1 for c in children)

    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    assert generate(readme, results).returncode == 0
    (line,) = [x for x in readme.read_text().splitlines() if x.startswith("| seed MLP |")]
    accuracies = [c["test_accuracy"] for c in children]
    mean = sum(accuracies) / 2
    std = abs(accuracies[0] - accuracies[1]) / 2**0.5  # the sample std of two values
    best = max(children, key=lambda c: c["test_accuracy"])
    assert f"{mean:.2%} ± {std:.2%} (n=2); best {best['test_accuracy']:.2%} (seed " in line
    assert "test-time augmentation" not in line  # tested bare

    result = run_benchmark(
        "ensemble.py", [str(tmp_path / "kept" / "seed_mlp"), "--top", "2"], results
    )
    assert result.returncode == 0, result.stderr[-3000:]
    entry = json.loads((results / "ensemble.json").read_text())["rows"]["seed_mlp"]
    assert entry["sweep_run_id"] == sweep["parent_run_id"]
    assert {m["run_id"] for m in entry["members"]} == {c["run_id"] for c in children}
    assert sorted(m["seed"] for m in entry["members"]) == [1, 2]
    best_member = max(m["test_accuracy"] for m in entry["members"])
    assert entry["gain_over_best_member"] == pytest.approx(entry["test_accuracy"] - best_member)
    assert generate(readme, results).returncode == 0
    lines = readme.read_text().splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("| seed MLP |"))
    assert lines[at + 1].startswith("| ensemble of the 2 runs above (averaged probabilities) |")
    assert f"{entry['test_accuracy']:.2%}" in lines[at + 1] and "SWEEP_RUN_ID" in lines[at + 1]
    assert generate(readme, results, "--check").returncode == 0

    # One more seed joins the sweep later, in its store; --joined records it (training
    # nothing), and the ensemble may take it, named as joined in the README.
    kept = tmp_path / "kept" / "seed_mlp"
    # It ships shifted views (trainer.test_time_shift): its bare accuracy is kept too.
    joining = ["model=mlp", "trainer.seed=3", *TINY, "trainer.test_time_shift=1"]
    joining.append(f"tracking.uri=sqlite:///{kept}/mlflow.db")
    joining.append(f"tracking.parent_run_id={sweep['parent_run_id']}")
    train = [sys.executable, "-m", "digit_experiments.train", *joining]
    done = subprocess.run(train, cwd=kept, env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    joined = ["--only", "seed_mlp", "--joined", str(tmp_path / "kept")]
    assert run_benchmark("accuracy.py", [*joined, "--seeds", "4"], results).returncode == 2
    result = run_benchmark("accuracy.py", joined, results)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = json.loads((results / "accuracy.json").read_text())["rows"]["seed_mlp"]["runs"]
    assert record["children"] == children  # the sweep's own runs, as they were
    (late,) = record["joined"]
    assert late["seed"] == 3 and late["status"] == "FINISHED" and 0 < late["test_accuracy"] <= 1
    assert late["command"].startswith("python -m digit_experiments.train model=mlp trainer.seed=3")
    assert late["command"].endswith("trainer.test_time_shift=1 tracking.parent_run_id=SWEEP")
    assert 0 < late["single_view_test_accuracy"] <= 1
    assert all("single_view_test_accuracy" not in c for c in children)
    result = run_benchmark("ensemble.py", [str(kept), "--top", "3"], results)
    assert result.returncode == 0, result.stderr[-3000:]
    entry = json.loads((results / "ensemble.json").read_text())["rows"]["seed_mlp"]
    assert [m.get("joined", False) for m in entry["members"]].count(True) == 1
    assert generate(readme, results).returncode == 0
    lines = readme.read_text().splitlines()
    assert lines[at + 1].startswith(
        "| ensemble of 3 runs (averaged probabilities): the 2 above and seeds 3, which joined "
        "the same sweep later (their command is in the row above); the members: "
    )
    # The row names the joined seed and its command, and counts it with the sweep's own.
    assert (
        "; with seeds 3, which joined the sweep later (`python -m digit_experiments.train "
        "model=mlp trainer.seed=N "
    ) in lines[at]
    every = [c["test_accuracy"] for c in children] + [late["test_accuracy"]]
    assert f"tracking.parent_run_id=SWEEP_RUN_ID`), all its runs: {mean_std(every)}" in lines[at]
    assert "the joined seeds' training: " in lines[at]

    # The same members in shifted views: a second entry, shown under the plain one.
    in_views = [str(kept), "--top", "3", "--test-time-shift", "1"]
    result = run_benchmark("ensemble.py", in_views, results)
    assert result.returncode == 0, result.stderr[-3000:]
    entries = json.loads((results / "ensemble.json").read_text())["rows"]
    shifted = entries["seed_mlp+shift1"]
    assert shifted["test_time_shift"] == 1 and shifted["command"].endswith("--test-time-shift 1")
    assert {m["run_id"] for m in shifted["members"]} == {
        m["run_id"] for m in entries["seed_mlp"]["members"]
    }
    assert 0 < shifted["single_view_test_accuracy"] <= 1
    assert generate(readme, results).returncode == 0
    lines = readme.read_text().splitlines()
    assert lines[at + 1].startswith("| ensemble of 3 runs (averaged probabilities): the 2 above")
    assert "test-time augmentation" not in lines[at + 1]
    assert lines[at + 2].startswith("| ensemble of 3 runs (averaged probabilities): the 2 above")
    assert (
        "; test-time augmentation: each picture in 5 views, shifted 1 px, through the "
        f"members' bare networks ({shifted['single_view_test_accuracy']:.2%} without the "
        "views)" in lines[at + 2]
    )
    assert f"{shifted['test_accuracy']:.2%} (" in lines[at + 2]
    assert "over the best bare member)" in lines[at + 2]  # its members answered bare

    # A variant of the row's command, run on its own in the same store (no parent): --all
    # averages every run of the experiment, and the README names the variant's command.
    varied = ["model=mlp", "model.hidden_units=[32]", "trainer.seed=5", *TINY]
    train = [sys.executable, "-m", "digit_experiments.train", *varied]
    train.append(f"tracking.uri=sqlite:///{kept}/mlflow.db")
    done = subprocess.run(train, cwd=kept, env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert run_benchmark("ensemble.py", [str(kept), "--all", "--top", "2"], results).returncode
    result = run_benchmark("ensemble.py", [str(kept), "--all"], results)
    assert result.returncode == 0, result.stderr[-3000:]
    entries = json.loads((results / "ensemble.json").read_text())["rows"]
    every = entries["seed_mlp+all"]
    assert entries["seed_mlp"]["run_id"] != every["run_id"]  # the earlier entries stay
    assert every["command"] == "digits ensemble --experiment digit-experiments --top 4"
    assert sorted(m["seed"] for m in every["members"]) == [1, 2, 3, 5]
    (other,) = [m for m in every["members"] if m.get("variant")]
    assert other["seed"] == 5 and other["command"].startswith(
        "python -m digit_experiments.train model=mlp model.hidden_units=[32] trainer.seed=5"
    )
    assert 0 < other["own_test_accuracy"] <= 1 and other["train_seconds"] > 0
    assert generate(readme, results).returncode == 0
    lines = readme.read_text().splitlines()
    assert lines[at + 3].startswith(
        "| ensemble of 4 runs (every run of the sweep's experiment, averaged probabilities): "
        "the 2 above, seeds 3, which joined the same sweep later (their command is in the row "
        "above), and 1 variant of its command, each run on its own in the sweep's store: "
        f"`{other['command']}` ({other['own_test_accuracy']:.2%}; "
    )
    assert "`digits ensemble --experiment digit-experiments --top 4`" in lines[at + 3]
    assert generate(readme, results, "--check").returncode == 0

    # A store that is not a kept row's: refused, naming it.
    result = run_benchmark("ensemble.py", [str(tmp_path)], results)
    assert result.returncode != 0 and f"{tmp_path}: no mlflow.db" in result.stderr

    # --keep never mixes stores, and says so before anything trains (not hours in).
    again = run_benchmark("accuracy.py", args, results)
    assert again.returncode == 2 and f"--keep: {kept} already exists" in again.stderr
    repeated = ["--only", "seed_mlp", "--repeat", "2", "--keep", str(tmp_path / "new")]
    again = run_benchmark("accuracy.py", repeated, results)
    assert again.returncode == 2 and "use it with --repeat 1" in again.stderr
    assert not (tmp_path / "new").exists()


def test_recipes_deadline_ends_the_runs_and_says_which_did_not_finish(tmp_path):
    # TensorFlow alone takes longer than 3 s to import: no run can finish in time.
    args = ["--variants", "best_cnn", "--seeds", "1,2", "--parallel", "1", "--deadline", "3"]
    result = run_benchmark("recipes.py", [*args, "data.train_limit=1000"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best_cnn seed 1: cut off by --deadline" in result.stdout
    figures = json.loads((tmp_path / "recipes.json").read_text())
    assert figures["variants"] == {}
    assert figures["not_finished"] == ["best_cnn seed 1", "best_cnn seed 2"]


@pytest.mark.parametrize(
    ("script", "flag"), [("accuracy.py", "--only"), ("recipes.py", "--variants")]
)
def test_an_unknown_row_is_refused_naming_the_flag_before_anything_runs(tmp_path, script, flag):
    result = run_benchmark(script, [flag, "best_cnn,nosuch"], tmp_path)
    assert result.returncode == 2
    assert f"{flag}: no row ['nosuch']; the rows: [" in result.stderr
    assert not list(tmp_path.iterdir())  # no results file written
