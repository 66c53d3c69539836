"""optlib.optim.param_groups: biases, norm layers and embeddings go to the weight_decay=0 group."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optlib
from optlib.optim.param_groups import CATEGORIES, decay_groups, decay_mask


class TinyLM(nn.Module):
    """Embedding, LayerNorm, attention, an MLP, a BatchNorm, an RMSNorm and a tied head."""

    def __init__(self, vocab: int = 11, d: int = 8, tied: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(5, d)
        self.ln = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.fc = nn.Linear(d, 2 * d)
        self.bn = nn.BatchNorm1d(2 * d)
        self.rms = nn.RMSNorm(2 * d)
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1]))
        x = self.ln(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        h = self.fc(x)
        h = self.bn(h.transpose(1, 2)).transpose(1, 2)
        return self.head(x + self.proj(torch.tanh(self.rms(h))))


DECAYED = {"attn.in_proj_weight", "attn.out_proj.weight", "fc.weight", "proj.weight", "head.weight"}


def test_mask_decays_only_weight_matrices():
    mask = decay_mask(TinyLM())
    assert {n for n, d in mask.items() if d} == DECAYED
    assert list(mask) == [n for n, _ in TinyLM().named_parameters()]
    exempt = {n for n, d in mask.items() if not d}
    assert {"embed.weight", "pos.weight", "ln.weight", "ln.bias", "bn.weight", "bn.bias"} <= exempt
    assert {"rms.weight", "attn.in_proj_bias", "attn.out_proj.bias", "fc.bias"} <= exempt


def test_groups_cover_every_parameter_once_with_the_right_decay():
    model = TinyLM()
    groups = decay_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups[0]["params"]} == DECAYED


def test_tied_embedding_is_exempt_and_listed_once():
    model = TinyLM(tied=True)
    mask = decay_mask(model)
    assert "head.weight" not in mask  # named_parameters lists a shared tensor once
    assert mask["embed.weight"] is False
    groups = decay_groups(model, 0.1)
    assert all(p is not model.embed.weight for p in groups[0]["params"])
    assert sum(p is model.embed.weight for g in groups for p in g["params"]) == 1


def test_categories_and_module_types_can_be_chosen():
    model = TinyLM()
    only_bias = decay_mask(model, no_decay=("bias",))
    assert only_bias["embed.weight"] and only_bias["ln.weight"] and not only_bias["ln.bias"]
    everything = decay_mask(model, no_decay=())
    assert all(everything.values())
    custom = decay_mask(model, no_decay=("bias", nn.MultiheadAttention))
    assert not custom["attn.in_proj_weight"] and not custom["attn.out_proj.weight"]
    assert custom["fc.weight"] and custom["embed.weight"]


def test_frozen_parameters_are_left_out():
    model = TinyLM()
    model.fc.weight.requires_grad_(False)
    assert "fc.weight" not in decay_mask(model)
    assert all(p is not model.fc.weight for g in decay_groups(model, 0.1) for p in g["params"])


def test_empty_group_is_dropped():
    groups = decay_groups(nn.Linear(3, 2, bias=False), 0.05)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.05
    groups = decay_groups(nn.LayerNorm(4), 0.05)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize("bad", ["biases", "Norm", 3, nn.Linear(2, 2)])
def test_bad_no_decay_entry_is_rejected(bad):
    with pytest.raises(ValueError, match="Invalid no_decay entry"):
        decay_mask(TinyLM(), no_decay=("bias", bad))


def test_negative_weight_decay_is_rejected():
    with pytest.raises(ValueError, match="weight_decay"):
        decay_groups(TinyLM(), -0.1)


def test_groups_drive_adamw_like_per_parameter_settings():
    """AdamW on the groups equals AdamW with decay on the decayed tensors only: exempt tensors
    follow plain Adam (weight_decay=0), decayed ones AdamW, to rounding."""
    torch.manual_seed(0)
    model = TinyLM().double()
    tokens = torch.randint(0, 11, (4, 5))
    twin = TinyLM().double()
    twin.load_state_dict(model.state_dict())
    opt = optlib.AdamW(decay_groups(model, 0.3), lr=0.05)
    mask = decay_mask(twin)
    named = dict(twin.named_parameters())
    ref = torch.optim.AdamW(
        [{"params": [named[n]], "weight_decay": 0.3 if mask[n] else 0.0} for n in mask],
        lr=0.05,
        foreach=False,
    )
    for _ in range(5):
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            m(tokens).logsumexp(-1).mean().backward()
            o.step()
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        # the same AdamW arithmetic on the same groups (measured: bit-identical); rounding
        # differences would be a few ulps per step over 5 steps from a random start, where the
        # gradients are far from 0 and Adam's scaling does not amplify them (4500 ulps allowed)
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14, msg=n)
    assert set(CATEGORIES) == {"bias", "norm", "embedding"}
