"""``optlib.bench.model_steps``: a smoke run with tiny settings, and a check that the iterations
it labels as refreshes are exactly those where Shampoo, SOAP and K-FAC change their
preconditioners."""

import pytest
import torch
import torch.nn.functional as F

from optlib.bench import model_steps


def test_tiny_run_formats_both_tables():
    threads = torch.get_num_threads()
    timings = model_steps.run(["SGD", "KFAC", "Shampoo", "Muon"], hidden=8, warmup=1, iterations=12)
    assert torch.get_num_threads() == threads
    names = [t.optimizer for t in timings]
    assert names == ["AdamW", "SGD", "KFAC", "Shampoo", "Muon", "Muon (NS float32)"]
    assert all(t.iteration_ms > 0 and t.step_ms > 0 for t in timings)
    kfac = next(t for t in timings if t.optimizer == "KFAC")
    assert len(kfac.kinds["factors (TCov=10)"]) == 1  # iteration 10 of 1..12
    text = model_steps.format_tables(timings, hidden=8)
    assert "x AdamW" in text and "Refresh steps" in text
    assert "Shampoo    inverse roots" in text and "KFAC       factors (TCov=10)" in text


def _watch(name, iterations):
    torch.manual_seed(0)
    X, y = model_steps.digits_batch(32)
    model = model_steps._model(6)
    proto = model_steps.protocol(name)
    opt = proto.build(model)
    W = model[0].weight

    def snapshot():
        state = opt.state[W]
        if name == "Shampoo":
            return [r.clone() for r in state["blocks"][0]["roots"]] if "blocks" in state else []
        if name == "SOAP":
            return [q.clone() for q in state.get("Q", []) if q is not None]
        return [state["QA"].clone()] if "QA" in state else []

    changed = []
    for _ in range(iterations):
        before = snapshot()
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
        after = snapshot()
        changed.append(
            len(before) != len(after) or any(not torch.equal(a, b) for a, b in zip(before, after))
        )
    return changed, proto


@pytest.mark.parametrize("name", ["Shampoo", "SOAP", "KFAC"])
def test_refresh_labels_match_the_optimizers(name):
    iterations = 2 * model_steps.TINV + 1 if name == "KFAC" else 31
    changed, proto = _watch(name, iterations)
    if name == "KFAC":
        labelled = [i % model_steps.TINV == 0 for i in range(iterations)]
    else:
        labelled = [proto.refresh(i) != "" for i in range(iterations)]
    first = 0 if name == "KFAC" else 1  # the first step creates Shampoo's roots, SOAP's bases
    assert changed[first:] == labelled[first:]
