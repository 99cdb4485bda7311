r"""Runs ``examples/tutorial.ipynb`` cell by cell (the code cells, in order, in one namespace),
so the tutorial can't rot. No Jupyter kernel is needed."""

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"


@pytest.mark.slow
def test_tutorial_notebook_runs(capsys):
    pytest.importorskip("quantus")
    import matplotlib

    matplotlib.use("Agg")
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    namespace: dict = {"__name__": "__tutorial__"}
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        exec(compile(source, f"{NOTEBOOK.name}[code cell {i}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert "flip rate:" in out and "validity" in out
    res = namespace["res"]
    assert res.success.float().mean() >= 0.5  # the shipped models flip most paired images
    import matplotlib.pyplot as plt

    plt.close("all")
