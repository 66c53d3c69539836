/* optlib explorer, static edition: redraws precomputed optimizer runs when a control moves.
 *
 * Inlined once per explorer by optlib.plots.widgets.StaticExplorer, right after the explorer's
 * <figure>; it reads the figure's <script type="application/json"> data (runs computed by optlib
 * when the notebook ran) and needs no kernel, no network and no library. The paths are SVG, so
 * they stay sharp on high-density screens; the controls are native <select> and <input
 * type="range"> elements with labels, so they work from the keyboard.
 */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVGNS, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function fmt(x) {
    if (!isFinite(x)) return String(x);
    if (x === 0) return "0";
    var a = Math.abs(x);
    if (a >= 1e-3 && a < 1e4) return String(Number(x.toPrecision(3)));
    return x.toExponential(1).replace("e+", "e");
  }

  function sup(k) {  // 10^k with Unicode superscripts
    var map = { "-": "\u207b", "0": "\u2070", "1": "\u00b9", "2": "\u00b2", "3": "\u00b3",
      "4": "\u2074", "5": "\u2075", "6": "\u2076", "7": "\u2077", "8": "\u2078", "9": "\u2079" };
    return "10" + String(k).split("").map(function (c) { return map[c]; }).join("");
  }

  function decode(b64) {
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer().then(function (buf) {
      var b = new Uint8Array(buf), n = b.length / 2, words = new Uint16Array(n);
      for (var i = 0; i < n; i++) words[i] = b[i] | (b[n + i] << 8);  // low bytes, then high
      return words;
    });
  }

  function undelta(runs, index) {  // each run is stored as differences along the path
    index.forEach(function (e) {
      for (var t = 1; t < e[1]; t++) {
        for (var c = 0; c < 3; c++) {
          var i = 3 * (e[0] + t) + c;
          runs[i] = (runs[i] + runs[i - 3]) & 0xffff;
        }
      }
    });
    return runs;
  }

  function setup(root, data, runs) {
    var q = function (sel) { return root.querySelector(sel); };
    var ctl = {
      optimizer: q("[data-role=optimizer]"), landscape: q("[data-role=landscape]"),
      lr: q("[data-role=lr]"), beta: q("[data-role=beta]"), steps: q("[data-role=steps]"),
    };
    var out = {
      lr: q("[data-out=lr]"), beta: q("[data-out=beta]"), steps: q("[data-out=steps]"),
      status: q("[data-role=status]"),
    };
    var P = data.plot;  // plot geometry, in SVG user units
    var path = q("[data-role=path]"), curve = q("[data-role=curve]");
    var start = q("[data-role=start]"), end = q("[data-role=end]");
    var contours = q("[data-role=contours]"), stars = q("[data-role=stars]");
    var yticks = q("[data-role=yticks]"), xticks = q("[data-role=xticks]");
    var shownLandscape = -1;

    function run() {
      var o = data.optimizers.indexOf(ctl.optimizer.value);
      var l = +ctl.landscape.value, r = +ctl.lr.value, b = +ctl.beta.value;
      if (!data.uses_beta[o]) b = 0;
      var k = ((l * data.optimizers.length + o) * data.betas.length + b) * data.lrs.length + r;
      return { o: o, l: l, r: r, b: b, entry: data.index[k] };
    }

    function drawLandscape(l) {
      var L = data.landscapes[l];
      contours.textContent = "";
      L.contours.forEach(function (d) { el("path", { d: d }, contours); });
      stars.textContent = "";
      L.minimizers.forEach(function (m) {
        el("text", { x: m[0], y: m[1], "text-anchor": "middle", "dominant-baseline": "central",
          class: "oe-star" }, stars).textContent = "\u2605";
      });
      yticks.textContent = "";
      for (var k = Math.ceil(L.log_range[0]); k <= Math.floor(L.log_range[1]); k++) {
        if ((k - Math.ceil(L.log_range[0])) % L.tick_every) continue;
        var y = ly(L, k);
        el("line", { x1: P.loss.x0, x2: P.loss.x1, y1: y, y2: y, class: "oe-grid" }, yticks);
        el("text", { x: P.loss.x0 - 4, y: y, "text-anchor": "end",
          "dominant-baseline": "central" }, yticks).textContent = sup(k);
      }
      shownLandscape = l;
    }

    function ly(L, v) {  // log10 value -> y in the loss panel
      var t = (v - L.log_range[0]) / (L.log_range[1] - L.log_range[0]);
      return P.loss.y1 - t * (P.loss.y1 - P.loss.y0);
    }

    function redraw() {
      var s = run(), L = data.landscapes[s.l], e = s.entry;
      var offset = e[0], n = e[1], diverged = e[2] === 1;
      if (shownLandscape !== s.l) drawLandscape(s.l);
      var maxSteps = +ctl.steps.max, T = Math.min(+ctl.steps.value, n - 1);
      ctl.beta.disabled = !data.uses_beta[s.o];
      var beta = data.betas[s.b], lr = data.lrs[s.r];
      out.lr.textContent = fmt(lr);
      ctl.lr.setAttribute("aria-valuetext", "\u03b7 = " + fmt(lr));
      out.beta.textContent = data.uses_beta[s.o] ? fmt(beta) : "(unused)";
      ctl.beta.setAttribute("aria-valuetext", "\u03b2 = " + fmt(data.betas[+ctl.beta.value]));
      out.steps.textContent = ctl.steps.value;
      var Q = data.q, pts = [], loss = [], cx = P.path, sx = (cx.x1 - cx.x0) / Q * 3;
      var sy = (cx.y1 - cx.y0) / Q * 3;
      for (var t = 0; t <= T; t++) {
        var i = 3 * (offset + t);
        var x = cx.x0 + (runs[i] * sx - (cx.x1 - cx.x0));
        var y = cx.y1 - (runs[i + 1] * sy - (cx.y1 - cx.y0));
        pts.push(x.toFixed(1) + "," + y.toFixed(1));
        var lv = runs[i + 2] / Q * 32 - 16;
        var xs = P.loss.x0 + (maxSteps ? t / maxSteps : 0) * (P.loss.x1 - P.loss.x0);
        loss.push(xs.toFixed(1) + "," + ly(L, Math.max(lv, L.log_range[0])).toFixed(1));
      }
      var colour = data.colors[s.o];
      path.setAttribute("points", pts.join(" "));
      path.setAttribute("stroke", colour);
      curve.setAttribute("points", loss.join(" "));
      curve.setAttribute("stroke", colour);
      var first = pts[0].split(","), last = pts[pts.length - 1].split(",");
      start.setAttribute("cx", first[0]); start.setAttribute("cy", first[1]);
      start.setAttribute("stroke", colour);
      end.setAttribute("cx", last[0]); end.setAttribute("cy", last[1]);
      end.setAttribute("fill", colour);
      var name = data.optimizers[s.o] + ", \u03b7 = " + fmt(lr) +
        (data.uses_beta[s.o] ? ", \u03b2 = " + fmt(beta) : "");
      var lastLoss = Math.pow(10, runs[3 * (offset + T) + 2] / Q * 32 - 16);
      var text;
      if (diverged && +ctl.steps.value >= n - 1) {
        text = name + " on " + L.name + ": diverged at step " + (n - 1) + ".";
      } else {
        text = name + " on " + L.name + ": f(\u03b8\u209c) \u2212 f\u22c6 = " + fmt(lastLoss) +
          " after " + T + " steps" + (lastLoss > L.loss0 ? ", above where it started." : ".");
      }
      out.status.textContent = text;
      root.setAttribute("data-drawn", JSON.stringify([s.o, s.l, s.r, s.b, T]));
    }

    Object.keys(ctl).forEach(function (k) {
      ctl[k].addEventListener("input", redraw);
      ctl[k].addEventListener("change", redraw);
    });
    redraw();
    root.classList.add("oe-ready");
  }

  var script = document.currentScript;
  var root = script && script.previousElementSibling;
  if (!root || !root.classList.contains("optlib-explorer")) return;
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  decode(data.runs).then(function (runs) { setup(root, data, undelta(runs, data.index)); }, function (err) {
    root.querySelector("[data-role=status]").textContent =
      "This browser cannot unpack the explorer's data (" + err + ").";
  });
})();
