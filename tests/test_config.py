"""Config: composition, schemas and range checks; nothing heavy is imported for them."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from digit_experiments.app.help import CONF_DIR
from digit_experiments.core.config import validate
from digit_experiments.errors import ConfigError

from .conftest import HEAVY, clean_env, compose_cfg, run_cli, run_cli_imports


def test_defaults_are_the_seed_cnn_with_adam_and_dropout():
    cfg = compose_cfg()
    conf = validate(cfg)
    assert (conf.model.name, conf.optimizer.name, conf.regularization.name) == (
        "cnn",
        "adam",
        "dropout",
    )
    assert conf.model.conv_filters == [32, 64] and conf.model.dense_units == [128]
    assert conf.data.source == "bundled"


@pytest.mark.parametrize("group", ["model", "optimizer", "regularization"])
def test_every_option_composes_and_validates(group):
    for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
        conf = validate(compose_cfg(f"{group}={option}"))
        assert getattr(conf, group).name == option


@pytest.mark.parametrize(
    ("overrides", "regularization"),
    [
        ([], "dropout"),  # the seed's CNN had dropout
        (["model=mlp"], "none"),  # the seed's MLP had none
        (["model=mlp", "regularization=dropout"], "dropout"),
        (["regularization=l2", "model=mlp"], "l2"),  # order does not matter
        (["model=cnn", "regularization=none"], "none"),
    ],
)
def test_each_model_defaults_to_the_seeds_regularization(overrides, regularization):
    assert validate(compose_cfg(*overrides)).regularization.name == regularization


# Each bad override, and the text the error must contain (the key, and what is allowed).
OUT_OF_RANGE = [
    ("trainer.epochs=0", "trainer.epochs must be >= 1, got 0"),
    ("trainer.batch_size=0", "trainer.batch_size must be >= 1"),
    ("trainer.early_stopping.patience=-1", "trainer.early_stopping.patience must be >= 0"),
    ("trainer.early_stopping.monitor=val_f1", "trainer.early_stopping.monitor must be one of"),
    ("optimizer.learning_rate=0", "optimizer.learning_rate must be > 0.0"),
    ("optimizer.learning_rate=-0.1", "optimizer.learning_rate must be > 0.0"),
    ("optimizer.beta_1=1.0", "optimizer.beta_1 must be < 1.0"),
    ("trainer.recalibrate_bn=-1", "trainer.recalibrate_bn must be >= 0, got -1"),
    ("trainer.test_time_shift=5", "trainer.test_time_shift must be <= 4, got 5"),
    ("trainer.test_time_shift=-1", "trainer.test_time_shift must be >= 0, got -1"),
    ("regularization.conv_dropout=1.0", "regularization.conv_dropout must be < 1.0"),
    ("regularization.dense_dropout=-0.1", "regularization.dense_dropout must be >= 0.0"),
    ("regularization.l2=-1", "regularization.l2 must be >= 0.0"),
    ("regularization.augment.elastic=-1", "regularization.augment.elastic must be >= 0.0"),
    ("regularization.augment.elastic_sigma=0", "regularization.augment.elastic_sigma must be > 0"),
    ("data.train_limit=-5", "data.train_limit must be >= 10"),
    ("data.test_limit=-1", "data.test_limit must be >= 10"),
    ("data.val_fraction=1.5", "data.val_fraction must be < 1.0"),
    ("data.source=s3", "data.source must be one of [bundled, keras, path, folder]"),
    ("model.conv_filters=[32,0]", "model.conv_filters[1] must be >= 1"),
    ("model.activation=sigmoidal", "model.activation must be one of"),
    ("tracking.sample_predictions=0", "tracking.sample_predictions must be >= 1"),
    ("model.name=resnet", "model.name must be one of [cnn], got 'resnet'"),
    ("optimizer.name=lion", "optimizer.name must be one of [adam], got 'lion'"),
]


@pytest.mark.parametrize(("override", "message"), OUT_OF_RANGE)
def test_out_of_range_values_are_refused_with_the_key(override, message):
    with pytest.raises(ConfigError, match="invalid config") as err:
        validate(compose_cfg(override))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.convs_per_block=0", "model.convs_per_block must be an int >= 1 or a list"),
        ("model.kernel_size=[5,x,3]", "model.kernel_size must be an int >= 1 or a list"),
        ("model.kernel_size=true", "model.kernel_size must be an int >= 1 or a list"),
        ("model.convs_per_block=[1,2]", "must have one item per block (3, as block_filters)"),
    ],
)
def test_vgg_takes_one_value_or_one_per_block(override, message):
    assert validate(compose_cfg("model=vgg", "model.kernel_size=[5,3,3]")).model.kernel_size
    with pytest.raises(ConfigError, match="invalid config") as err:
        validate(compose_cfg("model=vgg", override))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.epochz=3", "trainer.epochz"),  # mistyped key
        ("trainer.epochs=ten", "trainer.epochs"),  # wrong type
        ("optimizer.momentum=0.5", "optimizer.momentum"),  # adam has no momentum
        ("model=resnet", "model/resnet"),  # unknown option
    ],
)
def test_schema_errors_are_refused_at_compose_time(override, key):
    with pytest.raises((HydraException, OmegaConfBaseException)) as err:
        compose_cfg(override)
    assert key in str(err.value)


@pytest.mark.parametrize("override", ["+model.depth=3", "+optimizer.momentum=0.9"])
def test_keys_added_with_plus_are_refused(override):
    key = override[1:].split("=")[0]
    with pytest.raises(ConfigError, match=f"{key} is not a known key"):
        validate(compose_cfg(override))


def test_cli_refuses_bad_value_before_importing_tensorflow(tmp_path):
    result, imported = run_cli_imports("trainer.epochs=0", cwd=tmp_path)
    assert result.returncode == 2
    assert "trainer.epochs must be >= 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not imported & HEAVY
    assert not (tmp_path / "mlflow.db").exists()  # no run was opened


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]])
def test_help_and_cfg_do_not_import_tensorflow_or_mlflow(tmp_path, args):
    result, imported = run_cli_imports(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not imported & HEAVY
    assert "model:" in result.stdout


def test_the_import_check_sees_nested_imports(tmp_path):
    # Negative control: a run imports TensorFlow and MLflow from deep inside the package,
    # and the check sees both (so the checks above can fail).
    result, imported = run_cli_imports(
        "model=mlp",
        "data.train_limit=200",
        "data.test_limit=50",
        "trainer.epochs=1",
        "tracking.log_model=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert HEAVY <= imported


def test_help_lists_every_option():
    result = run_cli("--help", cwd=CONF_DIR.parent)
    lines = result.stdout.splitlines()
    for group in ("model", "optimizer", "regularization", "experiment", "hparams_search"):
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        start = next(i for i, ln in enumerate(lines) if ln.strip().startswith(group + ":"))
        entry = [lines[start].split(":", 1)[1]]
        entry += itertools.takewhile(lambda ln: ln.startswith(" " * 10), lines[start + 1 :])
        listed = " ".join(entry).replace(",", " ").replace("(", " ").split()
        assert set(options) <= set(listed), group


@pytest.mark.parametrize("overrides", [[], ["experiment=best_cnn", "trainer.epochs=3"]])
def test_fast_help_is_hydras_own_help(tmp_path, overrides):
    # `python -m digit_experiments.train --help` skips Hydra's slow app_help; what it
    # prints must still be exactly what Hydra prints.
    fast = run_cli("--help", *overrides, cwd=tmp_path)
    hydra_help = subprocess.run(
        [
            sys.executable,
            "-c",
            "from digit_experiments.app.main import main; main()",
            "--help",
            *overrides,
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fast.returncode == hydra_help.returncode == 0, fast.stderr + hydra_help.stderr
    assert fast.stdout == hydra_help.stdout
    if overrides:
        assert "name: vgg" in fast.stdout and "epochs: 3" in fast.stdout


def test_help_with_a_bad_override_gets_hydras_error(tmp_path):
    result = run_cli("--help", "model=transformer", cwd=tmp_path)
    assert result.returncode != 0
    assert "transformer" in result.stderr


# What a user sees on the command line: one row per kind of mistake, in every group.
CLI_MISTAKES = [
    ("model=resnet", ["model/resnet", "Available options", "cnn", "mlp", "vgg"]),
    ("optimizer=lion", ["optimizer/lion", "adam", "sgd"]),
    ("regularization=heavy", ["regularization/heavy", "dropout"]),
    ("trainer.epochz=3", ["trainer.epochz"]),
    ("trainer.epochs=ten", ["trainer.epochs", "ten"]),
    ("trainer.epochs=0", ["trainer.epochs must be >= 1, got 0"]),
    ("trainer.batch_size=0", ["trainer.batch_size must be >= 1"]),
    ("trainer.schedule.name=linear", ["trainer.schedule.name must be one of", "cosine"]),
    ("optimizer.learning_rate=0", ["optimizer.learning_rate must be > 0.0"]),
    ("regularization.dense_dropout=1", ["regularization.dense_dropout must be < 1.0"]),
    ("data.val_fraction=1.5", ["data.val_fraction must be < 1.0"]),
    ("data.source=s3", ["data.source must be one of [bundled, keras, path, folder]"]),
    ("tracking.sample_predictions=500", ["tracking.sample_predictions must be <= 100"]),
    ("+model.depth=3", ["model.depth is not a known key"]),
]


@pytest.mark.parametrize(("override", "fragments"), CLI_MISTAKES)
def test_cli_refuses_each_mistake_clearly_and_records_nothing(tmp_path, override, fragments):
    result, imported = run_cli_imports(override, cwd=tmp_path)
    assert result.returncode != 0
    errors = result.stderr
    for fragment in fragments:
        assert fragment in errors, (fragment, errors)
    assert "Traceback" not in errors
    assert not imported & HEAVY  # refused before TensorFlow or MLflow was imported
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
