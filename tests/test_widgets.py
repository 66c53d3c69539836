"""optlib.plots.widgets: a live widget tree in Jupyter; in the static book (or without
ipywidgets) the same controls over runs precomputed by optlib."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from optlib.plots import widgets  # noqa: E402
from optlib.plots.widgets import Setting  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_static_mode_is_chosen_by_the_environment(monkeypatch):
    monkeypatch.setenv("OPTLIB_STATIC", "1")
    assert widgets.is_static()
    monkeypatch.setenv("OPTLIB_STATIC", "0")
    assert not widgets.is_static()
    monkeypatch.delenv("OPTLIB_STATIC")
    assert not widgets.is_static()


def test_without_ipywidgets_the_explorer_is_static(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ipywidgets(name, *args, **kwargs):
        if name == "ipywidgets" or name.startswith("ipywidgets."):
            raise ImportError("no ipywidgets here")
        return real_import(name, *args, **kwargs)

    monkeypatch.delenv("OPTLIB_STATIC", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_ipywidgets)
    assert widgets.is_static()


def _payload(html: str) -> dict:
    import json
    import re

    return json.loads(re.search(r'application/json">(.*?)</script>', html, re.S).group(1))


def test_static_explorer_holds_every_setting_and_the_script(monkeypatch):
    monkeypatch.setenv("OPTLIB_STATIC", "1")
    e = widgets.explorer(
        "GD", "quadratic (κ=10)", lr=0.5, steps=20, optimizers=("GD", "Adam"),
        landscapes=("quadratic (κ=10)", "rosenbrock"),
        static_settings=[Setting("Adam", "rosenbrock", lr=0.0123, beta=0.77, steps=25)],
    )  # fmt: skip
    assert isinstance(e, widgets.StaticExplorer)
    html = e._repr_html_()
    assert widgets.BOOK_NOTE in html and "Jupyter to move" not in html
    assert "DecompressionStream" in html and "<script>" in html  # the redraw script is inlined
    assert 'type="range"' in html and "<label>learning rate η" in html
    assert "cdn" not in html.lower() and "http" not in html.replace("http://www.w3.org", "")
    data = _payload(html)
    assert data["optimizers"] == ["GD", "Adam"] and data["uses_beta"] == [False, True]
    assert 0.5 in data["lrs"] and 0.0123 in data["lrs"] and 0.77 in data["betas"]
    assert data["steps"] == 25
    n = len(data["landscapes"]) * len(data["optimizers"]) * len(data["betas"]) * len(data["lrs"])
    assert len(data["index"]) == n
    gd = e.run_for(Setting("GD", "quadratic (κ=10)", lr=0.5, steps=25))
    assert not gd.diverged and gd.loss[-1] < gd.loss[0]
    assert "f(θ_T) =" in e.caption


def test_static_explorer_without_ipywidgets_names_the_install_command(monkeypatch):
    monkeypatch.delenv("OPTLIB_STATIC", raising=False)
    e = widgets.explorer("GD", steps=5, optimizers=("GD",), landscapes=("saddle",), static=True)
    assert widgets.NO_WIDGETS_NOTE in e.html and "pip install ipywidgets" in e.html


def test_static_explorer_reports_divergence_and_checks_its_settings():
    e = widgets.explorer("GD", "quadratic (κ=10)", lr=5.0, steps=10, optimizers=("GD",),
                         landscapes=("quadratic (κ=10)",), static=True)  # fmt: skip
    assert "diverged at step" in e.caption
    with pytest.raises(ValueError, match="unknown"):
        widgets.explorer(optimizers=("GD", "Sophocles"), static=True)
    with pytest.raises(ValueError, match="unknown"):
        widgets.explorer(static=True, static_settings=[Setting("GD", "moonscape", lr=0.1)])


@pytest.mark.parametrize("name", sorted(widgets.OPTIMIZERS))
def test_grid_runs_equal_single_runs(name):
    """The batched grid (one optimizer, a param group per lr, a row per landscape) follows each
    setting's path exactly as a run of its own does, divergence included."""
    from optlib.problems import landscapes as ls

    names = ["quadratic (κ=50)", "rosenbrock", "saddle"]
    fs = [ls.LANDSCAPES[n]() for n in names]
    lrs, betas = [0.003, 0.1, 3.0], [0.0, 0.9]
    grid = widgets.simulate_grid(name, fs, lrs, betas, 40)
    for k, n in enumerate(names):
        for lr in lrs:
            for beta in betas:
                _, h = widgets.simulate(Setting(name, n, lr, beta, 40))
                r = grid[k][lr, beta]
                assert r.diverged == h.diverged and len(r.loss) == len(h.loss)
                np.testing.assert_array_equal(r.params, h.params)
                np.testing.assert_array_equal(r.loss, h.loss)


def test_lr_grid_spans_the_range_and_keeps_the_extras():
    g = widgets.lr_grid(1e-3, 1.0, per_decade=4, extra=[0.1818])
    assert g[0] == 1e-3 and g[-1] == 1.0 and 0.1818 in g and len(g) == 14
    assert g == sorted(g)
    with pytest.raises(ValueError, match="lo < hi"):
        widgets.lr_grid(1.0, 0.1)


def test_live_explorer_builds_the_widget_tree_and_recomputes():
    import ipywidgets as W

    e = widgets.explorer("momentum", "quadratic (κ=50)", lr=0.2, beta=0.5, steps=30, static=False)
    assert isinstance(e, widgets.Explorer)
    assert isinstance(e.widget, W.VBox)
    assert isinstance(e.controls["lr"], W.FloatLogSlider)
    assert isinstance(e.controls["optimizer"], W.Dropdown)
    assert set(e.controls["optimizer"].options) == {"GD", "momentum", "Nesterov", "Adam"}
    assert e.output in e.widget.children
    first = e.history
    assert first.steps == 30 and first.label == "momentum, η=0.2, β=0.5"

    e.controls["lr"].value = 0.02
    assert e.history is not first and e.history.label == "momentum, η=0.02, β=0.5"
    assert not np.allclose(e.history.params, first.params)

    e.controls["steps"].value = 12
    assert e.history.steps == 12
    e.controls["optimizer"].value = "Adam"
    assert e.history.label.startswith("Adam")
    e.controls["landscape"].value = "rosenbrock"
    np.testing.assert_array_equal(e.history.params[0], [-1.2, 1.0])

    fig = e.figure()
    left, right = fig.axes
    assert right.get_yscale() == "log"
    assert "Adam" in [ln.get_label() for ln in left.get_lines()]


@pytest.mark.parametrize("name", sorted(widgets.OPTIMIZERS))
def test_every_explorer_optimizer_descends_on_the_quadratic(name):
    """Each optimizer the explorer offers builds and lowers the loss at a modest step size."""
    setting = widgets.Setting(name, "quadratic (κ=10)", lr=0.05, steps=40)
    _, hist = widgets.simulate(setting)
    assert not hist.diverged and hist.loss[-1] < hist.loss[0]
