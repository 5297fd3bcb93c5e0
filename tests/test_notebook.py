"""notebooks/mlp_vs_cnn.ipynb executes (nbclient, a real kernel) on a small slice: it runs
the mlp_vs_cnn sweep into a temporary store and shows the table, the curves, the
confusion matrices and the CNN's mistakes from MLflow. The committed file carries no
outputs."""

from __future__ import annotations

import json

import nbformat
from nbclient import NotebookClient

from .conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "mlp_vs_cnn.ipynb"


def test_the_committed_notebook_has_no_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"]


def test_the_notebook_tells_the_comparison_from_mlflow(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source += (
        f"\nTRACKING_URI = 'sqlite:///{tmp_path}/mlflow.db'"
        f"\nWORKDIR = '{tmp_path}'"
        "\nOVERRIDES = ['data.train_limit=2000', 'data.test_limit=500', 'trainer.epochs=2']"
    )
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()

    def outputs(marker: str) -> list[dict]:
        (cell,) = [c for c in notebook.cells if c.cell_type == "code" and marker in c.source]
        return cell.outputs

    printed = "".join(o.get("text", "") for o in outputs("def latest_sweep"))
    assert "running: -m digit_experiments.train -m experiment=mlp_vs_cnn" in printed
    assert ": sweep experiment=mlp_vs_cnn " in printed and printed.endswith("(FINISHED)\n")
    (table,) = [o for o in outputs("table = pd.DataFrame") if o.output_type == "execute_result"]
    html = table["data"]["text/html"]
    assert "mlp" in html and "cnn" in html and "98.7% / 0.987" in html
    for marker in ("client.get_metric_history", "def confusion", "wrong = np.flatnonzero"):
        assert any("image/png" in o.get("data", {}) for o in outputs(marker)), marker
    printed = "".join(o.get("text", "") for o in outputs("wrong = np.flatnonzero"))
    assert "of 10000 test digits wrong" in printed
