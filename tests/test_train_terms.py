"""The optional training terms of scripts/train_tiny_clip.py (docs/models.md, v3.2 candidates):
the stage-1 neighbourhood term and the stage-2 vocabulary terms, on small hand-made text
spaces whose right answers are known."""

from types import SimpleNamespace

import pytest
from conftest import load_script

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ttc():
    return load_script("train_tiny_clip")


def unit(x):
    return torch.nn.functional.normalize(x, dim=-1)


@pytest.fixture(scope="module")
def space(ttc):
    """Every value of both worlds a random unit vector; "crimson" next to red; "hub" the mean
    of the colour values (near all of them, the "multicolored" of the naming failure); "tan"
    a word of its own."""
    values = sorted({v.lower() for _, _, v in ttc.language.all_values()})
    colours = [v.lower() for w, a, v in ttc.language.all_values() if a == "color"]
    gen = torch.Generator().manual_seed(0)
    vecs = {v: unit(torch.randn(32, generator=gen)) for v in values}
    vecs["crimson"] = unit(vecs["red"] + 0.2 * unit(torch.randn(32, generator=gen)))
    vecs["hub"] = unit(torch.stack([vecs[c] for c in colours]).mean(0))
    vecs["tan"] = unit(torch.randn(32, generator=gen))
    row = {w: i for i, w in enumerate(vecs)}
    return torch.stack(list(vecs.values())), row, colours


def test_relation_term_is_zero_only_when_neighbourhoods_agree(ttc):
    gen = torch.Generator().manual_seed(1)
    target = unit(torch.randn(16, 8, generator=gen))
    anchors = unit(torch.randn(40, 8, generator=gen))
    assert float(ttc.relation_loss(target, target, anchors, 0.05)) == pytest.approx(0, abs=1e-6)
    moved = unit(target + 0.5 * torch.randn(16, 8, generator=gen))
    assert float(ttc.relation_loss(moved, target, anchors, 0.05)) > 0.1


def test_near_words_spare_a_hub_for_one_value_only_when_asked(ttc, space):
    bank, row, colours = space
    colour_rows = torch.tensor([row[c] for c in colours])
    hub_cos = bank[colour_rows] @ bank[row["hub"]]
    threshold = float(hub_cos.min()) - 0.01  # the hub is "near" every colour
    every = ttc.NearWords(bank, row, threshold)
    assert bool(every.of(colour_rows)[:, row["hub"]].all())
    own = ttc.NearWords(bank, row, threshold, own=True)
    assert int(own.of(colour_rows)[:, row["hub"]].sum()) == 1
    red = torch.tensor([row["red"]])
    assert bool(own.of(red)[0, row["crimson"]]) and not bool(own.of(red)[0, row["tan"]])
    assert int(own.is_value().sum()) == len({v.lower() for _, _, v in
                                              ttc.language.all_values()})


def test_vocab_terms_prefer_the_image_at_its_own_word(ttc, space):
    bank, row, _ = space
    model = SimpleNamespace(logit_scale=torch.tensor(2.0))  # exp(2) ~ 7.4
    labels = [{"color": "red"}, {"color": "blue"}]
    right = torch.stack([bank[row["red"]], bank[row["blue"]]])
    at_tan = torch.stack([bank[row["tan"]], bank[row["tan"]]])
    soft = [float(ttc.vocab_loss(model, img, labels, bank, row)) for img in (right, at_tan)]
    assert soft[0] < soft[1] - 1
    near = ttc.NearWords(bank, row, 0.5, own=True)
    per_aspect = [float(ttc.aspect_vocab_loss(model, img, labels, bank, row, near,
                                              torch.Generator().manual_seed(0), sample=64))
                  for img in (right, at_tan)]
    assert per_aspect[0] < per_aspect[1] - 1
