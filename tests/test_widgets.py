"""optlib.plots.widgets: a live widget tree in Jupyter, a meaningful animation in the static
book."""

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


def test_static_explorer_animates_the_settings(monkeypatch):
    monkeypatch.setenv("OPTLIB_STATIC", "1")
    e = widgets.explorer("GD", "quadratic (κ=10)", lr=0.5, steps=20, optimizers=("GD", "Adam"))
    assert isinstance(e, widgets.StaticExplorer)
    html = e._repr_html_()
    assert html.count("data:image/png;base64") == 20  # 21 points, at most 20 frames
    assert widgets.STATIC_NOTE in html
    assert set(e.histories) == {"GD, η=0.5", "Adam, η=0.5, β=0.9"}
    gd = e.histories["GD, η=0.5"]
    assert gd.steps == 20 and gd.final_loss < gd.loss[0]
    assert "f(θ_T) =" in e.caption


def test_static_explorer_reports_divergence_and_checks_its_settings():
    settings = [
        Setting("GD", "quadratic (κ=10)", lr=0.5, steps=10),
        Setting("GD", "quadratic (κ=10)", lr=5.0, steps=10),
    ]
    e = widgets.explorer(static=True, static_settings=settings)
    assert "diverged at step" in e.caption
    with pytest.raises(ValueError, match="one landscape"):
        widgets.StaticExplorer([settings[0], Setting("GD", "rosenbrock", lr=1e-3)])
    with pytest.raises(ValueError, match="unknown"):
        widgets.explorer(optimizers=("GD", "Sophocles"), static=True)


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
