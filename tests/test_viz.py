"""optlib.plots.viz: the palette is fixed; plots carry the expected artists, labels and colours."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.animation import FuncAnimation  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

import optlib  # noqa: E402
from optlib.experiments import train  # noqa: E402
from optlib.plots import viz  # noqa: E402
from optlib.problems import landscapes as ls  # noqa: E402

# The book promises one colour per optimizer in every chapter: changing one is a visible break.
EXPECTED = {
    "SGD": "#1f77b4",
    "momentum": "#ff7f0e",
    "Nesterov": "#d62728",
    "Adam": "#2ca02c",
    "AdamW": "#17becf",
    "RMSprop": "#e377c2",
    "Adagrad": "#8c564b",
    "LBFGS": "#7f7f7f",
    "Newton": "#000000",
}
REQUIRED = [
    "SGD", "momentum", "Nesterov", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam",
    "Adafactor", "LBFGS", "Lion", "Sophia", "Shampoo", "SOAP", "Muon", "KFAC", "LARS", "LAMB",
    "schedule-free", "Newton", "CG",
]  # fmt: skip


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def quadratic_runs():
    q = ls.Quadratic(10.0, angle=0.4)
    return q, {
        "GD": train.run(lambda p: optlib.SGD(p, lr=1.0), q, 15),
        "momentum": train.run(lambda p: optlib.SGD(p, lr=0.5, momentum=0.5), q, 15),
    }


def test_palette_is_stable_complete_and_distinct():
    for name, hexcode in EXPECTED.items():
        assert viz.PALETTE[name] == hexcode
    assert set(REQUIRED) <= set(viz.PALETTE)
    assert len(set(viz.PALETTE.values())) == len(viz.PALETTE)
    with pytest.raises(TypeError):
        viz.PALETTE["SGD"] = "#ffffff"  # read-only


def test_color_lookup_ignores_case_punctuation_and_knows_aliases():
    assert viz.color("adam") == viz.color("ADAM") == viz.PALETTE["Adam"]
    assert viz.color("GD") == viz.PALETTE["SGD"]
    assert viz.color("L-BFGS") == viz.PALETTE["LBFGS"]
    assert viz.color("SophiaG") == viz.PALETTE["Sophia"]
    assert viz.color("heavy ball") == viz.PALETTE["momentum"]
    assert viz.color("schedule free") == viz.PALETTE["schedule-free"]
    assert viz.color("no such method") is None
    assert viz.color("no such method", "#123456") == "#123456"


def test_label_colours_in_a_plot():
    cols = viz._colors_for(["Adam (η=0.1)", "SGD"], None)
    assert cols == {"Adam (η=0.1)": viz.PALETTE["Adam"], "SGD": viz.PALETTE["SGD"]}
    # Two settings of one optimizer: distinct shades, neither equal to another optimizer's colour.
    cols = viz._colors_for(["GD, η=0.1", "GD, η=1.9", "momentum"], None)
    assert cols["GD, η=0.1"] != cols["GD, η=1.9"]
    assert cols["momentum"] == viz.PALETTE["momentum"]
    cols = viz._colors_for(["GD (full batch)", "SGD, B=32"], None)
    assert cols["GD (full batch)"] != cols["SGD, B=32"]
    # Labels naming no optimizer get distinct colours; overrides win.
    cols = viz._colors_for(["κ=10", "κ=100"], {"κ=100": "#000001"})
    assert cols["κ=100"] == "#000001" and cols["κ=10"] != "#000001"


def test_contour_with_trajectories_draws_paths_minimisers_and_labels():
    q, runs = quadratic_runs()
    ax = viz.contour_with_trajectories(q, runs, title="two paths")
    assert ax.get_xlabel() == viz.THETA1 and ax.get_ylabel() == viz.THETA2
    assert ax.get_title() == "two paths"
    assert len(ax.collections) >= 1  # the contour set
    levels = ax.collections[0].levels
    ratios = levels[1:] / levels[:-1]
    # log-spaced: 10**(a + k h) for each k, so ratios agree to ulps of the exponentials (~1e-15)
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for label, hist in runs.items():
        ln = lines[label]
        assert to_hex(ln.get_color()) == viz.color(label)
        np.testing.assert_allclose(ln.get_xydata(), hist.params, rtol=0)  # the data, copied
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 1
    np.testing.assert_allclose(stars[0].get_xydata(), q.minimizers.numpy(), rtol=0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == list(runs)


def test_contour_accepts_arrays_and_marks_all_minimisers():
    f = ls.Himmelblau()
    path = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 2.0]])
    ax = viz.contour_with_trajectories(f, {"a path": path})
    star = next(ln for ln in ax.get_lines() if ln.get_marker() == "*")
    assert len(star.get_xydata()) == 4
    with pytest.raises(ValueError, match="shape"):
        viz.contour_with_trajectories(f, {"bad": np.zeros((3, 3))})


def test_loss_curves_axes_scales_and_divergence_mark():
    q, runs = quadratic_runs()
    runs["SGD"] = train.run(lambda p: optlib.SGD(p, lr=3.0), q, 200)
    assert runs["SGD"].diverged
    ax = viz.loss_curves(runs, subtract=0.0)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "step $t$" and "f^\\star" in ax.get_ylabel()
    crosses = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert len(crosses) == 1 and to_hex(crosses[0].get_color()) == viz.PALETTE["SGD"]
    ax2 = viz.loss_curves({"GD": runs["GD"]}, x="time", logy=False)
    assert ax2.get_yscale() == "linear" and "time" in ax2.get_xlabel()
    np.testing.assert_allclose(ax2.get_lines()[0].get_xdata(), runs["GD"].time, rtol=0)
    ax3 = viz.loss_curves({"rate": np.array([1.0, 0.5, 0.25])}, ylabel="error")
    assert ax3.get_ylabel() == "error"
    with pytest.raises(ValueError, match="x must be"):
        viz.loss_curves(runs, x="minutes")
    with pytest.raises(ValueError, match="n_examples"):
        viz.loss_curves(runs, x="epochs")


def test_animation_is_small_and_plays_offline():
    q, runs = quadratic_runs()
    anim = viz.animate_trajectories(q, runs, frames=8)
    assert isinstance(anim, FuncAnimation)
    html = viz.jshtml(anim)
    assert html.count("data:image/png;base64") == 8
    assert "<script" in html and "play_animation()" in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    assert 'class="fa' not in html  # Font Awesome icons replaced by Unicode symbols
    assert len(html) < 400_000
    assert not plt.get_fignums()  # jshtml closed the figure


def test_animation_panels_give_each_path_its_own_axes():
    q, runs = quadratic_runs()
    anim = viz.animate_trajectories(q, runs, frames=5, panels=True, title="demo")
    axes = anim._fig.axes
    assert [ax.get_title() for ax in axes] == list(runs)
    anim._draw_frame(4)  # the last frame shows each full path in its own panel
    for ax, (label, hist) in zip(axes, runs.items()):
        path = next(ln for ln in ax.get_lines() if ln.get_label() == label)
        np.testing.assert_allclose(path.get_xydata(), hist.params, rtol=0)  # copied data
    assert anim._fig._suptitle.get_text() == "demo, step 15"
    assert viz.jshtml(anim).count("data:image/png;base64") == 5


def test_book_style_sets_rcparams():
    viz.use_book_style()
    assert plt.rcParams["axes.spines.top"] is False and plt.rcParams["font.size"] == 10
    matplotlib.rcdefaults()

