r"""Interactive explorers: pick an optimizer, a landscape, :math:`\eta`, :math:`\beta` and a number
of steps, and watch the path :math:`\theta_0, \theta_1, \dots` and the loss :math:`f(\theta_t)`.

In Jupyter, :func:`explorer` returns live ``ipywidgets`` controls that re-run
:func:`optlib.experiments.train.run` whenever a value changes. A static page cannot run Python, so
when the environment variable ``OPTLIB_STATIC`` is set (the book build sets it) or ``ipywidgets`` is
not
installed, the same call returns a :class:`StaticExplorer`: a JavaScript animation of a few
representative settings, which plays without a kernel, and a line inviting the reader to open the
notebook.

The optimizers are optlib's: ``"GD"`` is :class:`optlib.SGD` without momentum, ``"momentum"``
and ``"Nesterov"`` are :class:`optlib.SGD` with ``momentum=β`` (and ``nesterov=True``), ``"Adam"``
is :class:`optlib.Adam` with ``betas=(β, 0.999)``.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..experiments.train import History, run
from ..optim import SGD, Adagrad, Adam, RMSprop
from ..problems import landscapes as ls

__all__ = ["OPTIMIZERS", "Setting", "StaticExplorer", "Explorer", "explorer", "is_static"]

OptimizerFactory = Callable[[list[torch.Tensor], float, float], torch.optim.Optimizer]

#: name -> ``(params, lr, beta) -> optimizer``
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "GD": lambda p, lr, beta: SGD(p, lr=lr),
    "momentum": lambda p, lr, beta: SGD(p, lr=lr, momentum=beta),
    "Nesterov": lambda p, lr, beta: SGD(p, lr=lr, momentum=beta, nesterov=beta > 0),
    "Adagrad": lambda p, lr, beta: Adagrad(p, lr=lr),  # beta unused: no momentum
    "RMSprop": lambda p, lr, beta: RMSprop(p, lr=lr, momentum=beta),
    "Adam": lambda p, lr, beta: Adam(p, lr=lr, betas=(beta, 0.999)),
}

STATIC_NOTE = "Open this notebook in Jupyter to move the sliders."


def is_static() -> bool:
    """True when explorers must render statically: ``OPTLIB_STATIC`` set, or no ipywidgets."""
    if os.environ.get("OPTLIB_STATIC", "") not in ("", "0"):
        return True
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return True
    return False


@dataclass(frozen=True)
class Setting:
    """One explorer configuration."""

    optimizer: str
    landscape: str
    lr: float
    beta: float = 0.9
    steps: int = 50

    @property
    def label(self) -> str:
        if self.optimizer in ("GD", "Adagrad"):  # no β
            return f"{self.optimizer}, η={self.lr:.3g}"
        return f"{self.optimizer}, η={self.lr:.3g}, β={self.beta:.3g}"


def simulate(
    setting: Setting,
    optimizers: Mapping[str, OptimizerFactory] = OPTIMIZERS,
    landscapes: Mapping[str, Callable[[], ls.Landscape]] = ls.LANDSCAPES,
) -> tuple[ls.Landscape, History]:
    """Run one setting: the landscape and the :class:`~optlib.experiments.train.History`."""
    f = landscapes[setting.landscape]()
    make = optimizers[setting.optimizer]
    hist = run(
        lambda p: make(p, setting.lr, setting.beta),
        f,
        setting.steps,
        label=setting.label,
        progress=False,
    )
    return f, hist


def _describe(hist: History) -> str:
    if hist.diverged:
        return f"diverged at step {hist.steps}"
    if hist.final_loss > hist.loss[0]:
        return f"f(θ_T) = {hist.final_loss:.3g} > f(θ_0) after {hist.steps} steps: growing"
    return f"f(θ_T) = {hist.final_loss:.3g} after {hist.steps} steps"


class StaticExplorer:
    """What an explorer shows in a static page: an animation of a few settings, one panel each,
    and a note. All settings must share one landscape. ``html`` needs no network to play.
    """

    def __init__(self, settings: Sequence[Setting], *, frames: int = 20, dpi: int = 64) -> None:
        from . import viz

        if not settings:
            raise ValueError("a static explorer needs at least one setting")
        names = {s.landscape for s in settings}
        if len(names) != 1:
            raise ValueError(f"static settings must share one landscape, got {sorted(names)}")
        self.settings = list(settings)
        runs = [simulate(s) for s in self.settings]
        self.landscape = runs[0][0]
        self.histories = {h.label: h for _, h in runs}
        anim = viz.animate_trajectories(
            self.landscape,
            self.histories,
            frames=frames,
            dpi=dpi,
            panels=len(self.histories) > 1,
            title=self.settings[0].landscape,
        )
        results = "; ".join(f"{label}: {_describe(h)}" for label, h in self.histories.items())
        self.caption = f"{results}. {STATIC_NOTE}"
        self.html = (
            '<div class="optlib-explorer">'
            + viz.jshtml(anim)
            + f'<p class="optlib-explorer-note"><em>{html.escape(self.caption)}</em></p></div>'
        )

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"StaticExplorer({len(self.settings)} settings). {self.caption}"


class Explorer:
    """Live explorer: ipywidgets controls, a contour plot with the path, and the loss curve.

    ``controls`` maps ``"optimizer"``, ``"landscape"``, ``"lr"``, ``"beta"``, ``"steps"`` to the
    widgets; changing any of them re-runs the optimizer (``history`` holds the latest run).
    """

    def __init__(
        self,
        setting: Setting,
        optimizers: Sequence[str],
        landscapes: Sequence[str],
        lr_range: tuple[float, float] = (1e-4, 10.0),
    ) -> None:
        import ipywidgets as W

        lo, hi = (math.log10(v) for v in lr_range)
        style = {"description_width": "initial"}
        self.controls = {
            "optimizer": W.Dropdown(
                options=list(optimizers), value=setting.optimizer, description="optimizer"
            ),
            "landscape": W.Dropdown(
                options=list(landscapes), value=setting.landscape, description="landscape"
            ),
            "lr": W.FloatLogSlider(
                value=setting.lr, base=10, min=lo, max=hi, step=0.05, description="η (lr)",
                readout_format=".3g", style=style, continuous_update=False,
            ),
            "beta": W.FloatSlider(
                value=setting.beta, min=0.0, max=0.99, step=0.01, description="β",
                style=style, continuous_update=False,
            ),
            "steps": W.IntSlider(
                value=setting.steps, min=1, max=500, description="steps", style=style,
                continuous_update=False,
            ),
        }  # fmt: skip
        self.output = W.Output()
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        c = self.controls
        self.widget = W.VBox(
            [
                W.HBox([c["optimizer"], c["landscape"]]),
                W.HBox([c["lr"], c["beta"], c["steps"]]),
                self.output,
            ]
        )
        self.history: History | None = None
        self.update()

    @property
    def setting(self) -> Setting:
        c = self.controls
        return Setting(
            c["optimizer"].value, c["landscape"].value, c["lr"].value, c["beta"].value,
            c["steps"].value,
        )  # fmt: skip

    def _on_change(self, _change) -> None:
        self.update()

    def update(self) -> None:
        """Re-run the optimizer with the current control values and redraw."""
        from IPython.display import clear_output, display

        self.landscape, self.history = simulate(self.setting)
        with self.output:
            clear_output(wait=True)
            fig = self.figure()
            display(fig)
            import matplotlib.pyplot as plt

            plt.close(fig)

    def figure(self):
        """The current run: path on the contours (left) and :math:`f(\\theta_t) - f^\\star`."""
        import matplotlib.pyplot as plt

        from . import viz

        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
        label = self.controls["optimizer"].value
        viz.contour_with_trajectories(self.landscape, {label: self.history}, a, legend=False)
        a.set_title(_describe(self.history))
        viz.loss_curves({label: self.history}, b, subtract=self.landscape.f_min, legend=False)
        return fig

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def explorer(
    optimizer: str = "GD",
    landscape: str = "quadratic (κ=10)",
    lr: float = 0.1,
    beta: float = 0.9,
    steps: int = 50,
    *,
    optimizers: Sequence[str] = ("GD", "momentum", "Nesterov", "Adam"),
    landscapes: Sequence[str] | None = None,
    static: bool | None = None,
    static_settings: Sequence[Setting] | None = None,
) -> Explorer | StaticExplorer:
    """An optimizer explorer, live in Jupyter and animated in the static book.

    Args:
        optimizer, landscape, lr, beta, steps: the initial setting.
        optimizers: names (keys of :data:`OPTIMIZERS`) offered in the live explorer.
        landscapes: names (keys of :data:`optlib.problems.landscapes.LANDSCAPES`) offered; default
        all. static: force static (``True``) or live (``False``); ``None`` asks :func:`is_static`.
        static_settings: the settings the static rendering animates (one landscape); default:
            every optimizer in ``optimizers`` at the initial setting.
    """
    landscapes = list(ls.LANDSCAPES) if landscapes is None else list(landscapes)
    unknown = [o for o in optimizers if o not in OPTIMIZERS] + [
        name for name in landscapes if name not in ls.LANDSCAPES
    ]
    if unknown:
        raise ValueError(f"unknown optimizer or landscape names: {unknown}")
    first = Setting(optimizer, landscape, lr, beta, steps)
    if static is None:
        static = is_static()
    if static:
        if static_settings is None:
            static_settings = [
                Setting(o, landscape, lr, beta, steps)
                for o in dict.fromkeys([optimizer, *optimizers])
            ]
        return StaticExplorer(static_settings)
    return Explorer(first, optimizers, landscapes)
