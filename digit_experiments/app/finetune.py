"""Fine-tuning in a run (`model.init_from=URI`), and what a run on a folder of
pictures records. app/run.py calls these at its steps:

1. `load_source`, before the run opens: the URI resolved against the store (lineage
   tags), the network loaded in safe mode (a `runs:/.../x.h5` artifact downloaded
   first), checked against the data and against finetune.freeze. A URI the store does
   not know, a file that is not a model, a network whose input or output does not fit
   the data: refused in one line, no run opened.
2. `Source.network`, after seeding: the network to train (core.finetune), and
   `Source.conf`: the config with finetune.learning_rate as the optimizer's rate.
3. `Source.before`, before training: the source model as it ships (in its shifted
   views, if it has them) on the new test split (`baseline_test_*`) and on MNIST's
   test set (`baseline_mnist_test_accuracy`); the source as the run's model input.
4. `Source.after`, after the test evaluation: `mnist_test_accuracy` (how much of MNIST
   the fine-tuned model still reads), the before/after confusion matrices.

`log_folder_data` (every run on data.source=folder) records the folder's digest and
per-digit counts and the test split (for `digits promote`), and `log_few_shot` draws a
sweep over data.per_class on its parent run (called by app/sweep.py).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from digit_experiments.core.config import Config
from digit_experiments.errors import ModelError
from digit_experiments.tracking import lineage as lineage_

log = logging.getLogger(__name__)

PREDICT_BATCH = 256


@dataclass
class Source:
    """The network model.init_from names, loaded and checked, and where it came from."""

    uri: str
    model: object  # keras.Model, as loaded (its layers become the new network's)
    lineage: lineage_.Lineage
    freeze: str
    # The source as it ships, which the baselines judge: `model` with its shifted views
    # (trainer.test_time_shift) when it has them, `model` itself otherwise.
    shipped: object
    before_predictions: object = None  # the source's test-split predictions (y_pred)

    @property
    def tags(self) -> dict[str, str]:
        """Lineage tags; `model` is the network's own name (cnn, mlp, vgg for ours), since
        its layers, not the model group's, are what the run trains."""
        return {**self.lineage.tags, "model": self.model.name}

    def conf(self, conf: Config) -> Config:
        """`conf` with finetune.learning_rate (when set) as the optimizer's rate."""
        rate = conf.finetune.learning_rate
        if rate is None:
            return conf
        return dataclasses.replace(
            conf, optimizer=dataclasses.replace(conf.optimizer, learning_rate=rate)
        )

    def network(self, conf: Config, splits, record):
        """The network to train (see core.finetune), its frozen layers recorded."""
        from digit_experiments.core import finetune

        model = finetune.network(
            self.model, conf.regularization, splits.image_shape, self.freeze, self.uri
        )
        frozen = finetune.frozen_layer_names(model)
        record.params(
            {
                "model.trainable_params": finetune.trainable_params(model),
                "finetune.frozen_layers": len(frozen),
            }
        )
        record.tags({"finetune.frozen": ", ".join(frozen) or "(none)"})
        log.info(
            "fine-tuning %s (%s): %s frozen",
            self.uri,
            self.model.name,
            ", ".join(frozen) or "no layer",
        )
        return model

    def before(self, splits, record) -> dict[str, float]:
        """The source model on the new test split and on MNIST's, before any training;
        logged at once (the run shows its baseline while it trains)."""
        from digit_experiments.core import evaluate

        self.before_predictions = _predict(self.shipped, splits.x_test)
        scores = evaluate.classification_metrics(splits.y_test, self.before_predictions)
        x_mnist, y_mnist = mnist_test()
        metrics = {
            "baseline_test_accuracy": scores["test_accuracy"],
            "baseline_test_f1_macro": scores["test_f1_macro"],
            "baseline_mnist_test_accuracy": _accuracy(self.shipped, x_mnist, y_mnist),
        }
        record.metrics(metrics)
        if self.lineage.model_id:
            try:
                lineage_.log_input(record.client, record.run_id, self.lineage.model_id)
            except Exception as e:  # noqa: BLE001 - the tags say it too; never fail a run on it
                log.warning("could not record the source model as the run's input: %s", e)
        log.info(
            "before fine-tuning: test accuracy %.4f, MNIST test accuracy %.4f",
            metrics["baseline_test_accuracy"],
            metrics["baseline_mnist_test_accuracy"],
        )
        return metrics

    def after(self, model, splits, y_pred, record) -> dict[str, float]:
        """`mnist_test_accuracy` of the fine-tuned model, and the confusion matrices
        before and after on the test split (plots/confusion_before_after.png,
        reports/confusion_matrix_before.csv)."""
        from digit_experiments.core import evaluate
        from digit_experiments.reporting import finetune as figures

        x_mnist, y_mnist = mnist_test()
        metrics = {"mnist_test_accuracy": _accuracy(model, x_mnist, y_mnist)}
        if self.before_predictions is not None:
            before = evaluate.confusion(splits.y_test, self.before_predictions, splits.num_classes)
            after = evaluate.confusion(splits.y_test, y_pred, splits.num_classes)
            record.text(evaluate.confusion_csv(before), "reports/confusion_matrix_before.csv")
            record.figure(
                figures.before_after(
                    before, after, f"{self.uri} on {splits.name}'s test split, row-normalised"
                ),
                "plots/confusion_before_after.png",
            )
        return metrics


def load_source(conf: Config, splits, client, output_dir: Path) -> Source | None:
    """model.init_from's network, loaded and checked (see the module); None without it."""
    uri = conf.model.init_from
    if not uri:
        return None
    from digit_experiments.core import finetune, views
    from digit_experiments.inference.loading import load_model

    found = lineage_.resolve(client, uri)
    try:
        if found.artifact:
            model = load_model(str(lineage_.download(client, found, output_dir / "init_from")))
        else:
            model = load_model(uri)
    except ModelError as e:
        message = str(e)
        raise ModelError(
            message if message.startswith("model.init_from") else f"model.init_from={message}"
        ) from None
    # A model that ships shifted views (trainer.test_time_shift): the network inside
    # them trains; the new run's own trainer.test_time_shift decides what it ships.
    network = views.inner(model)
    finetune.check_fits(network, splits.image_shape, splits.num_classes, uri)
    finetune.frozen_indices(finetune.units(network), conf.finetune.freeze, uri)
    return Source(uri, network, found, conf.finetune.freeze, model)


@lru_cache(maxsize=1)
def mnist_test():
    """MNIST's full test set (the bundled files, checked), as models take it."""
    from digit_experiments.core import data

    arrays = data.load_idx_dir(data.bundled_dir())
    return data.to_model_input(arrays["test_images"]), arrays["test_labels"]


def _predict(model, x):
    import numpy as np

    return np.asarray(model.predict(x, batch_size=PREDICT_BATCH, verbose=0)).argmax(axis=1)


def _accuracy(model, x, y) -> float:
    return float((_predict(model, x) == y).mean())


# --- runs on a folder of pictures ------------------------------------------------------


def log_folder_data(record, splits) -> None:
    """data.source=folder: the folder's digest and per-digit counts (tag
    `data.folder_digest`, reports/dataset.json) and the test split itself
    (data/test_split.npz), on which `digits promote` compares models."""
    if not splits.details:
        return
    record.tags({"data.folder_digest": splits.details["digest"]})
    record.json(
        {
            "source": splits.source,
            **splits.details,
            "used": {
                split: {"images": len(y), "per_digit": _counts(y)}
                for split, y in (
                    ("train", splits.y_train),
                    ("val", splits.y_val),
                    ("test", splits.y_test),
                )
            },
        },
        "reports/dataset.json",
    )
    lineage_.log_test_split(
        record.client, record.run_id, splits.x_test, splits.y_test, record.output_dir
    )


def _counts(labels) -> list[int]:
    import numpy as np

    return np.bincount(labels, minlength=10).tolist()


# --- a few-shot sweep's chart on its parent ---------------------------------------------


def log_few_shot(client, parent_id: str) -> bool:
    """When a sweep's jobs varied data.per_class: comparison/few_shot.png (accuracy
    against labelled images per class: after, before, MNIST after) and few_shot.csv on
    the parent. Returns whether it drew one. Never raises: the sweep's own comparison
    and status matter more."""
    from digit_experiments.reporting import finetune as figures
    from digit_experiments.tracking import search

    try:
        parent = client.get_run(parent_id)
        rows = figures.few_shot_rows(search.children(client, parent))
        if not figures.is_few_shot(rows):
            return False
        client.log_figure(parent_id, figures.few_shot_figure(rows), "comparison/few_shot.png")
        client.log_text(parent_id, figures.few_shot_csv(rows), "comparison/few_shot.csv")
        client.log_text(parent_id, figures.few_shot_markdown(rows), "comparison/few_shot.md")
        return True
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.warning("could not draw the few-shot chart on sweep %s: %s", parent_id, e)
        return False
