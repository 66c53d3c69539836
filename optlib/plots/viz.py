r"""Plots shared by every chapter: the palette, contours with trajectories, loss curves, animations.

* :data:`PALETTE` gives each optimizer one fixed colour, the same in every chapter; :func:`color`
  looks a label up (case and punctuation do not matter, ``"GD"`` is SGD's colour, ``"Adam (η=0.1)"``
  is Adam's unless two Adam curves share the plot).
* :func:`contour_with_trajectories` draws a :mod:`optlib.problems.landscapes` landscape with
  log-spaced levels of :math:`f - f^\star`, its minimisers as stars, and optimizer paths
  :math:`\theta_0, \theta_1, \dots` on top.
* :func:`loss_curves` plots :math:`f(\theta_t)` (or any per-step series) against the step, the
  wall time or the number of examples seen, on a log scale by default.
* :func:`animate_trajectories` returns a :class:`matplotlib.animation.FuncAnimation`;
  :func:`jshtml` turns it into self-contained HTML/JavaScript that plays in the static site.

Matplotlib is imported here, not by ``import optlib``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation
from matplotlib.axes import Axes
from matplotlib.colors import to_hex, to_rgb

from ..experiments.train import History
from ..problems.landscapes import Landscape

__all__ = [
    "PALETTE",
    "color",
    "use_book_style",
    "contour",
    "contour_with_trajectories",
    "loss_curves",
    "animate_trajectories",
    "jshtml",
    "animation_html",
    "figure_png",
    "THETA1",
    "THETA2",
]

#: One colour per optimizer, fixed for the whole book.
PALETTE: Mapping[str, str] = MappingProxyType(
    {
        "SGD": "#1f77b4",
        "momentum": "#ff7f0e",
        "Nesterov": "#d62728",
        "Adagrad": "#8c564b",
        "RMSprop": "#e377c2",
        "Adam": "#2ca02c",
        "AdamW": "#17becf",
        "AMSGrad": "#98df8a",
        "NAdam": "#bcbd22",
        "RAdam": "#9467bd",
        "Adafactor": "#c49c94",
        "LBFGS": "#7f7f7f",
        "Lion": "#e6a800",
        "Sophia": "#393b79",
        "Shampoo": "#637939",
        "SOAP": "#8c6d31",
        "Muon": "#843c39",
        "KFAC": "#7b4173",
        "LARS": "#5254a3",
        "LAMB": "#e7969c",
        "schedule-free": "#6b6ecf",
        "Newton": "#000000",
        "CG": "#ad494a",
        "Jacobi": "#a55194",
        "GMRES": "#de9ed6",
        "ES": "#b5cf6b",
    }
)

_ALIASES = {
    "gd": "SGD",
    "gradientdescent": "SGD",
    "richardson": "SGD",
    "heavyball": "momentum",
    "sgdmomentum": "momentum",
    "polyak": "momentum",
    "nag": "Nesterov",
    "lbfgs": "LBFGS",
    "sophiag": "Sophia",
    "sophiah": "Sophia",
    "schedulefree": "schedule-free",
    "adamwschedulefree": "schedule-free",
    "conjugategradient": "CG",
    "pcg": "CG",
    "evolutionstrategies": "ES",
}

#: Colour map for labels that name no optimizer (settings such as κ = 10, 100, ...).
OTHER_CMAP = "viridis"

THETA1, THETA2 = r"$\theta_1$", r"$\theta_2$"


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


_LOOKUP = {_key(k): k for k in PALETTE} | _ALIASES


def color(name: str, default: str | None = None) -> str | None:
    """The palette colour of optimizer ``name`` (``default`` when it names no optimizer)."""
    canonical = _LOOKUP.get(_key(name))
    return PALETTE[canonical] if canonical else default


def _base(label: str) -> str:
    """The optimizer part of a label such as ``"Adam (η=0.1)"`` or ``"SGD, B=32"``."""
    return re.split(r"\s*[(,:;]|\s+[^\s]*=", label, maxsplit=1)[0]


def _shades(base: str, n: int) -> list[str]:
    """``n`` shades of one colour, dark to light (settings of one optimizer)."""
    rgb = np.array(to_rgb(base))
    out = []
    for w in np.linspace(-0.5, 0.55, n):
        mixed = rgb * (1 + w) if w < 0 else rgb + (1 - rgb) * w
        out.append(to_hex(np.clip(mixed, 0, 1)))
    return out


def _colors_for(labels: Sequence[str], overrides: Mapping[str, str] | None) -> dict[str, str]:
    """Colour each label in a plot.

    An explicit override wins; then the palette colour of an optimizer name; a label such as
    ``"GD, η=0.1"`` gets its optimizer's colour, or shades of it (dark to light, in order) when
    several labels share the optimizer (``"GD (full batch)"`` and ``"SGD, B=32"`` do); labels
    naming no optimizer get evenly spaced colours of :data:`OTHER_CMAP`, in order.
    """
    overrides = dict(overrides or {})
    out: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    others: list[str] = []
    for label in labels:
        if label in overrides:
            out[label] = overrides[label]
        elif color(label) is not None:
            out[label] = color(label)
        elif color(_base(label)) is not None:
            groups.setdefault(color(_base(label)), []).append(label)
        else:
            others.append(label)
    for base_color, members in groups.items():
        shades = _shades(base_color, len(members)) if len(members) > 1 else [base_color]
        out.update(zip(members, shades))
    cmap = plt.get_cmap(OTHER_CMAP)
    for label, v in zip(others, np.linspace(0.0, 0.85, max(len(others), 1))):
        out[label] = to_hex(cmap(v))
    return out


def use_book_style() -> None:
    """The book's matplotlib defaults: small, light figures that read well on a page."""
    plt.rcParams.update(
        {
            "figure.figsize": (6.0, 3.8),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "font.size": 10,
            "axes.titlesize": 10,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "lines.linewidth": 1.6,
            "figure.constrained_layout.use": True,
        }
    )
    _use_sharp_pngs()


#: Width of the book's text column in inches at ``figure.dpi`` = 100 (about 690 CSS pixels).
COLUMN_WIDTH_IN = 6.9


def figure_png(fig, *, scale_fonts: bool = True) -> tuple[bytes, dict[str, int]]:
    """``fig`` as a PNG at twice its pixel size, with the display size as metadata (sharp on
    high-density screens). A figure wider than the text column is shown shrunk to fit it, which
    would shrink its text too: its fonts are enlarged by the same factor (at most 1.6) while it is
    drawn, so legends and labels keep their size on the page."""
    import io

    from matplotlib.text import Text

    factor = min(max(fig.get_figwidth() / COLUMN_WIDTH_IN, 1.0), 1.6) if scale_fonts else 1.0
    texts = [t for t in fig.findobj(Text) if t.get_text()] if factor > 1 else []
    sizes = [t.get_fontsize() for t in texts]
    try:
        for t, size in zip(texts, sizes):
            t.set_fontsize(size * factor)
        buf = io.BytesIO()
        dpi = 2 * fig.get_dpi()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    finally:
        for t, size in zip(texts, sizes):
            t.set_fontsize(size)
    data = buf.getvalue()
    w, h = _png_size(data)
    return data, {"width": w // 2, "height": h // 2}


def _png_size(data: bytes) -> tuple[int, int]:
    import struct

    return struct.unpack(">II", data[16:24])


def _use_sharp_pngs() -> None:
    """In IPython, show figures with :func:`figure_png` (no-op elsewhere)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    from matplotlib.figure import Figure

    ip.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


def _xy(trajectory) -> np.ndarray:
    """A trajectory (History, tensor or array of points) as a ``(T+1, 2)`` float array."""
    if isinstance(trajectory, History):
        if trajectory.params is None:
            raise ValueError(f"history {trajectory.label!r} recorded no parameters")
        pts = trajectory.params
    elif isinstance(trajectory, torch.Tensor):
        pts = trajectory.detach().cpu().numpy()
    else:
        pts = np.asarray(trajectory)
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"a trajectory must have shape (T+1, 2), got {pts.shape}")
    return pts


def _grid(landscape: Landscape, box, n_grid: int):
    (x0, x1), (y0, y1) = box
    xs = np.linspace(x0, x1, n_grid)
    ys = np.linspace(y0, y1, n_grid)
    X, Y = np.meshgrid(xs, ys)
    pts = torch.from_numpy(np.stack([X, Y], axis=-1))
    Z = landscape.f(pts).numpy()
    return X, Y, Z


def contour(
    landscape: Landscape,
    ax: Axes | None = None,
    *,
    box=None,
    levels: int = 18,
    n_grid: int = 160,
    mark_minimizers: bool = True,
    antialiased: bool = True,
    ticks: bool = True,
    greys: tuple[float, float] = (0.45, 0.85),
) -> Axes:
    r"""Contours of :math:`f - f^\star` at ``levels`` log-spaced values, minimisers as stars.

    The levels run from the 1% quantile of :math:`f - f^\star` over the window to its maximum,
    in ``greys`` (black 0 to white 1), darker near the bottom of the landscape, so coloured
    paths stand out.
    ``antialiased=False`` and ``ticks=False`` make animation frames small and fast to draw.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.8))
    box = box or landscape.box
    X, Y, Z = _grid(landscape, box, n_grid)
    f_min = landscape.f_min
    floor = float(Z.min()) if f_min is None else min(f_min, float(Z.min()))
    D = Z - floor
    top = float(D.max())
    if top > 0:
        low = max(float(np.quantile(D, 0.01)), top * 1e-8)
        lv = np.geomspace(low, top, levels)
        shades = [str(g) for g in np.linspace(*greys, levels)]
        ax.contour(X, Y, D, levels=lv, colors=shades, linewidths=0.7, antialiased=antialiased)
    if mark_minimizers and landscape.minimizers is not None:
        m = landscape.minimizers.numpy()
        ax.plot(
            m[:, 0], m[:, 1], linestyle="none", marker="*", markersize=11, color="black", zorder=5
        )
    (x0, x1), (y0, y1) = box
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(THETA1)
    ax.set_ylabel(THETA2)
    ax.grid(False)
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])
    return ax


def contour_with_trajectories(
    landscape: Landscape,
    trajectories: Mapping[str, History | np.ndarray | torch.Tensor] | None = None,
    ax: Axes | None = None,
    *,
    box=None,
    levels: int = 18,
    colors: Mapping[str, str] | None = None,
    legend: bool = True,
    title: str | None = None,
    max_markers: int = 80,
) -> Axes:
    r"""A landscape's contours with the paths :math:`\theta_0, \theta_1, \dots` drawn on top.

    Paths with at most ``max_markers`` points show a dot per iterate; the start is a hollow
    circle. A path that leaves the window is clipped by the axes.
    """
    ax = contour(landscape, ax, box=box, levels=levels)
    trajectories = dict(trajectories or {})
    cols = _colors_for(list(trajectories), colors)
    for label, traj in trajectories.items():
        pts = _xy(traj)
        c = cols[label]
        marker = "o" if len(pts) <= max_markers else None
        ax.plot(
            pts[:, 0],
            pts[:, 1],
            color=c,
            marker=marker,
            markersize=2.5,
            linewidth=1.2,
            label=label,
            zorder=3,
        )
        ax.plot(
            pts[0, 0],
            pts[0, 1],
            marker="o",
            markersize=6,
            markerfacecolor="white",
            markeredgecolor=c,
            linestyle="none",
            zorder=4,
        )
    if title:
        ax.set_title(title)
    if legend and trajectories:
        ax.legend(loc="best")
    return ax


def _series(item, x: str, n_examples: int | None):
    """(x values, y values, diverged) of a History or an array of per-step values."""
    if isinstance(item, History):
        y = np.asarray(item.loss, dtype=np.float64)
        if x == "step":
            xs = np.arange(len(y))
        elif x == "time":
            xs = np.asarray(item.time)
        elif x == "examples":
            xs = np.asarray(item.examples, dtype=np.float64)
        else:  # epochs
            xs = np.asarray(item.examples, dtype=np.float64) / n_examples
        return xs, y, item.diverged
    if x != "step":
        raise ValueError(f"x={x!r} needs History objects (a plain array has steps only)")
    y = np.asarray(item.detach().cpu() if isinstance(item, torch.Tensor) else item, dtype=float)
    return np.arange(len(y)), y, False


_XLABELS = {
    "step": "step $t$",
    "time": "wall-clock time (s)",
    "examples": "training examples used",
    "epochs": "epochs",
}


def loss_curves(
    histories: Mapping[str, History | np.ndarray | Sequence[float]],
    ax: Axes | None = None,
    *,
    logy: bool = True,
    x: str = "step",
    subtract: float | None = None,
    n_examples: int | None = None,
    ylabel: str | None = None,
    colors: Mapping[str, str] | None = None,
    legend: bool = True,
) -> Axes:
    r"""Per-step curves: a History's loss :math:`f(\theta_t)` (minus ``subtract``, e.g.
    :math:`f^\star`) or any array of per-step values, against ``x`` = ``"step"``, ``"time"``,
    ``"examples"`` or ``"epochs"`` (which needs ``n_examples``). A diverged run ends in a cross.
    """
    if x not in _XLABELS:
        raise ValueError(f"x must be one of {sorted(_XLABELS)}, got {x!r}")
    if x == "epochs" and not n_examples:
        raise ValueError('x="epochs" needs n_examples (the training-set size)')
    if ax is None:
        _, ax = plt.subplots()
    cols = _colors_for(list(histories), colors)
    for label, item in histories.items():
        xs, y, diverged = _series(item, x, n_examples)
        if subtract is not None:
            y = y - subtract
        if logy:
            y = np.where(y > 0, y, np.nan)
        (line,) = ax.plot(xs, y, color=cols[label], label=label)
        if diverged:
            finite = np.flatnonzero(np.isfinite(y))
            if finite.size:
                i = finite[-1]
                ax.plot(xs[i], y[i], marker="x", markersize=8, color=line.get_color())
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(_XLABELS[x])
    if ylabel is None:
        ylabel = r"$f(\theta_t)$" if subtract is None else r"$f(\theta_t) - f^\star$"
    ax.set_ylabel(ylabel)
    if legend and histories:
        ax.legend(loc="best")
    return ax


def animate_trajectories(
    landscape: Landscape,
    trajectories: Mapping[str, History | np.ndarray | torch.Tensor],
    *,
    frames: int = 30,
    interval: int = 150,
    dpi: int = 72,
    panel_size: float = 3.3,
    panels: bool = False,
    box=None,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
) -> FuncAnimation:
    """The paths drawn step by step on the landscape, in at most ``frames`` frames.

    All paths share one panel, or with ``panels=True`` each gets its own (small multiples, for
    settings whose paths would hide each other). Keep ``frames`` (≤ 40) and ``dpi`` small:
    :func:`jshtml` embeds every frame as an image. The contour lines are drawn without
    antialiasing and the axes without ticks, which makes frames several times smaller and quicker
    to render.
    """
    paths = {label: _xy(t) for label, t in trajectories.items()}
    longest = max(len(p) for p in paths.values())
    n_frames = max(1, min(frames, longest))
    # Frame k shows the first idx[k] + 1 points of every path.
    idx = np.unique(np.round(np.linspace(0, longest - 1, n_frames)).astype(int))
    n_axes = len(paths) if panels else 1
    # A fixed layout: a layout engine would re-run at every frame.
    fig, axes = plt.subplots(
        1, n_axes, figsize=(panel_size * n_axes, panel_size * 0.92), dpi=dpi, layout="none",
        squeeze=False,
    )  # fmt: skip
    axes = list(axes[0])
    fig.subplots_adjust(left=0.06 / n_axes, right=0.98, bottom=0.08, top=0.86, wspace=0.08)
    for ax in axes:
        contour(
            landscape, ax, box=box, levels=14, antialiased=False, ticks=False, greys=(0.6, 0.85)
        )
    cols = _colors_for(list(paths), colors)
    lines = {}
    for k, (label, pts) in enumerate(paths.items()):
        ax = axes[k] if panels else axes[0]
        c = cols[label]
        ax.plot(
            pts[0, 0],
            pts[0, 1],
            marker="o",
            markersize=6,
            markerfacecolor="white",
            markeredgecolor=c,
            linestyle="none",
            zorder=4,
        )
        (lines[label],) = ax.plot(
            [], [], color=c, marker="o", markersize=2.5, linewidth=1.2, label=label, zorder=3
        )
        if panels:
            ax.set_title(label, color=c)
    head = title + ", " if title else ""
    if panels:
        caption = fig.suptitle(f"{head}step 0")
    else:
        axes[0].legend(loc="upper right")
        caption = axes[0].set_title(f"{head}step 0")

    def draw(k: int):
        stop = idx[k] + 1
        for label, pts in paths.items():
            lines[label].set_data(pts[:stop, 0], pts[:stop, 1])
        caption.set_text(f"{head}step {idx[k]}")
        return [*lines.values(), caption]

    return FuncAnimation(fig, draw, frames=len(idx), interval=interval, blit=False)


# matplotlib's player draws its buttons with Font Awesome 4 icons loaded from a CDN; the book is
# read offline, so the stylesheet link goes and each icon becomes a plain Unicode symbol.
_FA_LINK = re.compile(r"<link[^>]*font-awesome[^>]*>\s*")
_FA_ICONS = {  # only triangles and bars: glyphs that every common font has
    "fa fa-fast-backward": "\u25c0\u25c0",
    "fa fa-step-backward": "\u25c0|",
    "fa fa-play fa-flip-horizontal": "\u25c0",
    "fa fa-pause": "\u2016",
    "fa fa-play": "\u25b6",
    "fa fa-step-forward": "|\u25b6",
    "fa fa-fast-forward": "\u25b6\u25b6",
    "fa fa-minus": "\u2212",
    "fa fa-plus": "+",
}


def _offline_player(html: str) -> str:
    html = _FA_LINK.sub("", html)
    for cls, symbol in _FA_ICONS.items():
        html = html.replace(f'<i class="{cls}"></i>', symbol)
    return html


def jshtml(anim: FuncAnimation) -> str:
    """Self-contained HTML/JavaScript that plays ``anim`` offline (no CDN); closes the figure."""
    # Frames are rendered at the animation figure's own (low) dpi, whatever savefig.dpi says.
    with plt.rc_context({"savefig.dpi": "figure"}):
        html = anim.to_jshtml(default_mode="once")
    plt.close(anim._fig)
    return _offline_player(html)


def animation_html(anim: FuncAnimation):
    """``anim`` as an :class:`IPython.display.HTML` object, for the last line of a cell."""
    from IPython.display import HTML

    return HTML(jshtml(anim))
