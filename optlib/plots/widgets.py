r"""Interactive explorers: pick an optimizer, a landscape, :math:`\eta`, :math:`\beta` and a number
of steps, and watch the path :math:`\theta_0, \theta_1, \dots` and the loss :math:`f(\theta_t)`.

In Jupyter with ``ipywidgets``, :func:`explorer` returns live controls that re-run
:func:`optlib.experiments.train.run` whenever a value changes. A static page cannot run Python, so
when the environment variable ``OPTLIB_STATIC`` is set (the book build sets it) or ``ipywidgets`` is
not installed, the same call returns a :class:`StaticExplorer`: the same controls over a grid of
runs that optlib computes when the cell runs (every offered optimizer and landscape, learning
rates a quarter of a decade apart, several :math:`\beta`), redrawn by a few lines of JavaScript
(``explorer.js``, inlined; no kernel, no network, no library) as SVG, sharp on any screen.

The optimizers are optlib's: ``"GD"`` is :class:`optlib.SGD` without momentum, ``"momentum"``
and ``"Nesterov"`` are :class:`optlib.SGD` with ``momentum=β`` (and ``nesterov=True``), ``"Adam"``
is :class:`optlib.Adam` with ``betas=(β, 0.999)``.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from ..experiments.train import History, run
from ..optim import SGD, Adagrad, Adam, RMSprop
from ..problems import landscapes as ls

__all__ = [
    "OPTIMIZERS",
    "Setting",
    "StaticExplorer",
    "Explorer",
    "explorer",
    "is_static",
    "simulate_grid",
    "lr_grid",
]

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

#: Under the static explorer in the book (no kernel: runs computed when the page was built).
BOOK_NOTE = (
    "Precomputed runs: move the sliders and pick an optimizer or a landscape. In the notebook, "
    "with ipywidgets, the explorer re-runs the optimizer for any setting."
)
#: Under the static explorer in a notebook whose Python has no ipywidgets.
NO_WIDGETS_NOTE = (
    "Precomputed runs (this Python has no ipywidgets). For live runs of any setting, run "
    "%pip install ipywidgets in a cell, restart the kernel and run this cell again."
)

#: Momentum values of the static explorer's β slider (joined by the ones a chapter asks for).
BETAS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
#: Optimizers whose update has no β.
NO_BETA = frozenset({"GD", "Adagrad"})


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


def lr_grid(
    lo: float = 1e-4, hi: float = 10.0, per_decade: int = 4, extra: Sequence[float] = ()
) -> list[float]:
    """Learning rates ``per_decade`` to a decade from ``lo`` to ``hi``, joined by ``extra``."""
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    n = round(math.log10(hi / lo) * per_decade)
    grid = [float(f"{lo * 10 ** (k / per_decade):.3g}") for k in range(n + 1)]
    return sorted(set(grid) | {float(v) for v in extra})


@dataclass
class GridRun:
    r"""One run of :func:`simulate_grid`: the points :math:`\theta_t` and losses, aligned."""

    params: np.ndarray  # (T + 1, 2)
    loss: np.ndarray  # (T + 1,)
    diverged: bool


def simulate_grid(
    optimizer: str,
    landscapes: Sequence[ls.Landscape],
    lrs: Sequence[float],
    betas: Sequence[float],
    steps: int,
    *,
    divergence_factor: float = 1e6,
) -> list[dict[tuple[float, float], GridRun]]:
    """Every ``(lr, beta)`` run of ``optimizer`` on each landscape, batched.

    For each β, one optimizer from :data:`OPTIMIZERS` holds one parameter group per learning
    rate, and each group one ``(len(landscapes), 2)`` tensor whose row ``k`` is a point of
    landscape ``k``. The explorer's optimizers update element by element, so every row follows
    exactly the path that ``simulate`` computes alone (a test checks it); one call per step
    and landscape evaluates all gradients. A run counts as diverged by the rule of
    :func:`optlib.experiments.train.run` and is cut there.
    """
    make = OPTIMIZERS[optimizer]
    starts = torch.tensor([f.start for f in landscapes], dtype=torch.float64)
    n_land = len(landscapes)
    traj: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = {}
    for beta in betas:
        thetas = [starts.clone().requires_grad_() for _ in lrs]
        opt = make([thetas[0]], lrs[0], beta)
        for theta, lr in zip(thetas[1:], lrs[1:]):
            opt.add_param_group({"params": [theta], "lr": lr})
        pts = [starts.numpy()[None].repeat(len(lrs), 0)]  # per step: (lrs, landscapes, 2)
        vals = []  # per step: (lrs, landscapes)
        for t in range(steps + 1):
            with torch.no_grad():
                X = torch.stack([th.detach() for th in thetas])  # (lrs, landscapes, 2)
                F = torch.empty(X.shape[:2], dtype=X.dtype)
                G = torch.empty_like(X)
                for k, f in enumerate(landscapes):
                    F[:, k], G[:, k] = f.f(X[:, k]), f.grad(X[:, k])
            vals.append(F.numpy())
            if t == steps:
                break
            for i, th in enumerate(thetas):
                th.grad = G[i]
            opt.step()
            pts.append(torch.stack([th.detach() for th in thetas]).numpy().copy())
        P, V = np.stack(pts), np.stack(vals)  # (T + 1, lrs, landscapes, ...)
        for i, lr in enumerate(lrs):
            traj[lr, beta] = (P[:, i], V[:, i])
    out: list[dict[tuple[float, float], GridRun]] = []
    for k in range(n_land):
        runs = {}
        for key, (pts, vals) in traj.items():
            loss = vals[:, k]
            loss0 = loss[0]
            bad = ~np.isfinite(loss) | (loss > loss0 + divergence_factor * max(abs(loss0), 1.0))
            n = int(np.argmax(bad)) + 1 if bad.any() else len(loss)
            runs[key] = GridRun(pts[:n, k].copy(), loss[:n].copy(), bool(bad.any()))
        out.append(runs)
    return out


# The paths are stored as 12-bit integers (finer than a pixel): a coordinate u in [-1, 2] (0 and 1
# are the edges of the landscape's window; paths that leave it further are clipped), and
# log10(f - f*) in [-16, 16]; then as differences along each path, mod 2^16, low bytes first and
# high bytes after them, gzipped: about a quarter of the plain 16-bit size.
_Q = 4095


def _quantise(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.round((np.clip(v, lo, hi) - lo) / (hi - lo) * _Q).astype("<u2")


def _contour_paths(landscape: ls.Landscape, geom: dict, n_grid: int = 64, levels: int = 12):
    r"""SVG path data of the landscape's contours of :math:`f - f^\star` (log-spaced levels, as
    :func:`optlib.plots.viz.contour` draws them), in the plot's coordinates."""
    import contourpy

    (x0, x1), (y0, y1) = landscape.box
    xs, ys = np.linspace(x0, x1, n_grid), np.linspace(y0, y1, n_grid)
    X, Y = np.meshgrid(xs, ys)
    Z = landscape.f(torch.from_numpy(np.stack([X, Y], axis=-1))).numpy()
    f_min = landscape.f_min
    D = Z - (float(Z.min()) if f_min is None else min(f_min, float(Z.min())))
    top = float(D.max())
    if top <= 0:
        return []
    low = max(float(np.quantile(D, 0.01)), top * 1e-8)
    gen = contourpy.contour_generator(X, Y, D)
    sx = (geom["x1"] - geom["x0"]) / (x1 - x0)
    sy = (geom["y1"] - geom["y0"]) / (y1 - y0)
    paths = []
    for level in np.geomspace(low, top, levels):
        parts = []
        for line in gen.lines(level):
            u = geom["x0"] + (line[:, 0] - x0) * sx
            v = geom["y1"] - (line[:, 1] - y0) * sy
            coords = " ".join(f"{a:.0f} {b:.0f}" for a, b in zip(u, v))
            parts.append("M" + coords)
        paths.append("".join(parts))
    return paths


#: Plot geometry of the static explorer (SVG user units): the landscape panel and the loss panel.
_GEOM = {
    "path": {"x0": 34.0, "x1": 334.0, "y0": 8.0, "y1": 308.0, "w": 342, "h": 340},
    "loss": {"x0": 46.0, "x1": 330.0, "y0": 8.0, "y1": 272.0, "w": 342, "h": 320},
}


class StaticExplorer:
    """The explorer without a kernel: the same controls, over runs precomputed by optlib.

    Every offered optimizer runs on every offered landscape at every learning rate of
    :func:`lr_grid` (and of the chapter's settings) and, for optimizers with momentum, every β of
    ``BETAS`` (and the chapter's), for ``steps`` steps. ``html`` holds the controls, the runs
    (16-bit, gzip, base64) and the script that redraws them; it needs no network.
    """

    def __init__(
        self,
        initial: Setting,
        optimizers: Sequence[str],
        landscapes: Sequence[str],
        *,
        extra: Sequence[Setting] = (),
        note: str = BOOK_NOTE,
        lr_range: tuple[float, float] = (1e-4, 10.0),
    ) -> None:
        settings = [initial, *extra]
        self.optimizers = list(dict.fromkeys([initial.optimizer, *optimizers]))
        self.landscape_names = list(
            dict.fromkeys([initial.landscape, *landscapes, *(s.landscape for s in extra)])
        )
        for s in settings:
            if s.optimizer not in self.optimizers:
                self.optimizers.append(s.optimizer)
        self.lrs = lr_grid(*lr_range, extra=[s.lr for s in settings])
        self.betas = sorted(set(BETAS) | {float(s.beta) for s in settings})
        self.steps = max(s.steps for s in settings)
        self.initial = initial
        self.note = note
        self.runs: dict[tuple[str, str], dict[tuple[float, float], GridRun]] = {}
        fs = [ls.LANDSCAPES[name]() for name in self.landscape_names]
        for opt in self.optimizers:
            betas = [self.betas[0]] if opt in NO_BETA else self.betas
            per_landscape = simulate_grid(opt, fs, self.lrs, betas, self.steps)
            for name, runs in zip(self.landscape_names, per_landscape):
                self.runs[opt, name] = runs
        self.html = self._html()

    def run_for(self, setting: Setting) -> GridRun:
        """The precomputed run closest to ``setting`` (same optimizer and landscape)."""
        runs = self.runs[setting.optimizer, setting.landscape]
        lr = min(self.lrs, key=lambda v: abs(math.log(v / setting.lr)))
        beta = self.betas[0] if setting.optimizer in NO_BETA else setting.beta
        beta = min(self.betas, key=lambda v: abs(v - beta))
        return runs[lr, beta]

    @property
    def caption(self) -> str:
        s = self.initial
        r = self.run_for(s)
        what = (
            f"diverged at step {len(r.loss) - 1}"
            if r.diverged
            else f"f(θ_T) = {r.loss[-1]:.3g} after {len(r.loss) - 1} steps"
        )
        return f"{s.label} on {s.landscape}: {what}. {self.note}"

    def _payload(self) -> dict:
        from . import viz

        geom = _GEOM
        blobs, index, landscapes = [], [], []
        offset = 0
        for name in self.landscape_names:
            f = ls.LANDSCAPES[name]()
            (x0, x1), (y0, y1) = f.box
            f_min = f.f_min if f.f_min is not None else 0.0
            gaps = []
            for opt in self.optimizers:
                for b in range(len(self.betas)):
                    for lr in self.lrs:
                        beta = self.betas[0] if opt in NO_BETA else self.betas[b]
                        r = self.runs[opt, name][lr, beta]
                        gap = np.log10(np.maximum(r.loss - f_min, 1e-16))
                        gaps.append(gap[np.isfinite(gap)])
                        u = (r.params[:, 0] - x0) / (x1 - x0)
                        v = (r.params[:, 1] - y0) / (y1 - y0)
                        u, v = np.nan_to_num(u, nan=2.0), np.nan_to_num(v, nan=2.0)
                        n = min(len(u), len(gap))
                        triple = np.stack(
                            [_quantise(u[:n], -1, 2), _quantise(v[:n], -1, 2),
                             _quantise(np.nan_to_num(gap[:n], nan=16.0), -16, 16)], axis=1,
                        )  # fmt: skip
                        # differences along the path (mod 2^16) compress several times better
                        delta = np.diff(triple.astype(np.int64), axis=0, prepend=0) % 65536
                        blobs.append(delta.astype("<u2").reshape(-1))
                        index.append([offset, n, int(r.diverged)])
                        offset += n
            allgap = np.concatenate(gaps)
            lo = max(math.floor(float(allgap.min())), -16)
            hi = min(math.ceil(float(np.quantile(allgap, 0.98))) + 1, 16)
            hi = max(hi, lo + 1)
            g = geom["path"]
            sx, sy = (g["x1"] - g["x0"]) / (x1 - x0), (g["y1"] - g["y0"]) / (y1 - y0)
            stars = [] if f.minimizers is None else f.minimizers.numpy().tolist()
            landscapes.append({
                "name": name,
                "contours": _contour_paths(f, g),
                "minimizers": [
                    [round(g["x0"] + (a - x0) * sx, 1), round(g["y1"] - (b - y0) * sy, 1)]
                    for a, b in stars
                ],
                "log_range": [lo, hi],
                "tick_every": max(1, math.ceil((hi - lo) / 6)),
                "loss0": float(self.runs[self.optimizers[0], name][self.lrs[0], self.betas[0]]
                               .loss[0]) - f_min,
            })  # fmt: skip
        words = np.concatenate(blobs).astype("<u2")
        raw = (words & 0xFF).astype(np.uint8).tobytes() + (words >> 8).astype(np.uint8).tobytes()
        runs = base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")
        return {
            "optimizers": self.optimizers,
            "uses_beta": [o not in NO_BETA for o in self.optimizers],
            "colors": [viz.color(o, "#1f77b4") for o in self.optimizers],
            "landscapes": landscapes,
            "lrs": self.lrs,
            "betas": self.betas,
            "steps": self.steps,
            "plot": geom,
            "q": _Q,
            "index": index,
            "runs": runs,
        }

    def _html(self) -> str:
        data = self._payload()
        s = self.initial
        uid = f"oe{abs(hash((id(self), s))) % 10**8}"
        lr_i = min(range(len(self.lrs)), key=lambda i: abs(math.log(self.lrs[i] / s.lr)))
        b_i = min(range(len(self.betas)), key=lambda i: abs(self.betas[i] - s.beta))
        opts = "".join(
            f'<option{" selected" if o == s.optimizer else ""}>{html.escape(o)}</option>'
            for o in self.optimizers
        )
        lands = "".join(
            f'<option value="{i}"{" selected" if n == s.landscape else ""}>{html.escape(n)}'
            "</option>"
            for i, n in enumerate(self.landscape_names)
        )
        p, q = _GEOM["path"], _GEOM["loss"]
        e = html.escape
        caption = (
            f"Explorer: {s.optimizer} on {s.landscape}. Left, the path θ₀, θ₁, … on the contours "
            "of f (star: minimiser); right, f(θₜ) − f⋆ on a log scale."
        )
        return f"""<figure class="optlib-explorer" id="{uid}" aria-label="{e(caption)}">
<style>
.optlib-explorer{{margin:1em 0;font:14px/1.4 system-ui,sans-serif;max-width:720px}}
.optlib-explorer .oe-controls{{display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center}}
.optlib-explorer label{{display:inline-flex;gap:.4em;align-items:center;white-space:nowrap}}
.optlib-explorer input[type=range]{{width:9em}}
.optlib-explorer output{{min-width:4.2em;font-variant-numeric:tabular-nums}}
.optlib-explorer .oe-plots{{display:flex;flex-wrap:wrap;gap:4px}}
.optlib-explorer .oe-plots svg{{flex:1 1 300px;min-width:0;max-width:342px;height:auto;
overflow:visible}}
.optlib-explorer figcaption{{text-align:left;color:inherit;font-size:14px;margin-top:.3em}}
.optlib-explorer svg text{{font-size:12px;fill:currentColor}}
.optlib-explorer .oe-contours path{{fill:none;stroke:#8a8a8a;stroke-width:.8;opacity:.75}}
.optlib-explorer .oe-frame{{fill:none;stroke:currentColor;stroke-width:.8;opacity:.6}}
.optlib-explorer .oe-grid{{stroke:#8a8a8a;stroke-width:.5;opacity:.4}}
.optlib-explorer .oe-star{{font-size:15px}}
.optlib-explorer polyline{{fill:none;stroke-width:2;stroke-linejoin:round}}
.optlib-explorer .oe-status{{min-height:2.8em}}
.optlib-explorer .oe-note{{font-size:12px;opacity:.8}}
</style>
<div class="oe-controls">
<label>optimizer <select data-role="optimizer">{opts}</select></label>
<label>landscape <select data-role="landscape">{lands}</select></label>
<label>learning rate η <input type="range" data-role="lr" min="0" max="{len(self.lrs) - 1}"
 step="1" value="{lr_i}"><output data-out="lr">{s.lr:.3g}</output></label>
<label>momentum β <input type="range" data-role="beta" min="0" max="{len(self.betas) - 1}"
 step="1" value="{b_i}"><output data-out="beta">{s.beta:.3g}</output></label>
<label>steps <input type="range" data-role="steps" min="1" max="{self.steps}" step="1"
 value="{s.steps}"><output data-out="steps">{s.steps}</output></label>
</div>
<div class="oe-plots">
<svg viewBox="0 0 {p["w"]} {p["h"]}" role="img" aria-label="path of the optimizer on the contours">
<defs><clipPath id="{uid}-clip"><rect x="{p["x0"]}" y="{p["y0"]}" width="{p["x1"] - p["x0"]}"
 height="{p["y1"] - p["y0"]}"/></clipPath></defs>
<g class="oe-contours" data-role="contours" clip-path="url(#{uid}-clip)"></g>
<rect class="oe-frame" x="{p["x0"]}" y="{p["y0"]}" width="{p["x1"] - p["x0"]}"
 height="{p["y1"] - p["y0"]}"/>
<g clip-path="url(#{uid}-clip)">
<g data-role="stars"></g>
<polyline data-role="path" points=""/>
<circle data-role="start" r="4.5" fill="white" stroke-width="2"/>
<circle data-role="end" r="3.5"/>
</g>
<text x="{(p["x0"] + p["x1"]) / 2}" y="{p["y1"] + 24}" text-anchor="middle">θ₁</text>
<text x="{p["x0"] - 12}" y="{(p["y0"] + p["y1"]) / 2}" text-anchor="middle">θ₂</text>
</svg>
<svg viewBox="0 0 {q["w"]} {q["h"]}" role="img" aria-label="loss gap against the step">
<defs><clipPath id="{uid}-clip-loss"><rect x="{q["x0"]}" y="{q["y0"]}"
 width="{q["x1"] - q["x0"]}" height="{q["y1"] - q["y0"]}"/></clipPath></defs>
<g data-role="yticks"></g><g data-role="xticks"></g>
<rect class="oe-frame" x="{q["x0"]}" y="{q["y0"]}" width="{q["x1"] - q["x0"]}"
 height="{q["y1"] - q["y0"]}"/>
<polyline data-role="curve" points="" clip-path="url(#{uid}-clip-loss)"/>
<text x="{q["x0"]}" y="{q["y1"] + 16}" text-anchor="middle">0</text>
<text x="{q["x1"]}" y="{q["y1"] + 16}" text-anchor="middle">{self.steps}</text>
<text x="{(q["x0"] + q["x1"]) / 2}" y="{q["y1"] + 34}" text-anchor="middle">step t</text>
<text x="{q["x0"] + 6}" y="{q["y0"] + 14}">f(θₜ) − f⋆</text>
</svg>
</div>
<figcaption><div class="oe-status" data-role="status" aria-live="polite">{e(self.caption)}</div>
<div class="oe-note">{e(self.note)}</div></figcaption>
<script type="application/json">{json.dumps(data, separators=(",", ":"))}</script>
</figure>
<script>{_script()}</script>"""

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"StaticExplorer({len(self.optimizers)} optimizers). {self.caption}"


def _script() -> str:
    return resources.files(__package__).joinpath("explorer.js").read_text(encoding="utf-8")


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
        r"""The current run: path on the contours (left) and :math:`f(\theta_t) - f^\star`."""
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
    """An optimizer explorer: live in Jupyter, precomputed and redrawn by JavaScript in the book.

    Args:
        optimizer, landscape, lr, beta, steps: the initial setting.
        optimizers: names (keys of :data:`OPTIMIZERS`) offered.
        landscapes: names (keys of :data:`optlib.problems.landscapes.LANDSCAPES`) offered; default
            all.
        static: force static (``True``) or live (``False``); ``None`` asks :func:`is_static`.
        static_settings: settings the static explorer must hold exactly (their learning rates and
            β join its grid); the chapter's prose may name them.
    """
    landscapes = list(ls.LANDSCAPES) if landscapes is None else list(landscapes)
    extra = list(static_settings or [])
    unknown = [o for o in [*optimizers, optimizer, *(s.optimizer for s in extra)]
               if o not in OPTIMIZERS]  # fmt: skip
    unknown += [
        n for n in [*landscapes, landscape, *(s.landscape for s in extra)] if n not in ls.LANDSCAPES
    ]
    if unknown:
        raise ValueError(f"unknown optimizer or landscape names: {sorted(set(unknown))}")
    first = Setting(optimizer, landscape, lr, beta, steps)
    if static is None:
        static = is_static()
    if static:
        book = os.environ.get("OPTLIB_STATIC", "") not in ("", "0")
        return StaticExplorer(
            first, optimizers, landscapes, extra=extra, note=BOOK_NOTE if book else NO_WIDGETS_NOTE
        )
    return Explorer(first, optimizers, landscapes)
