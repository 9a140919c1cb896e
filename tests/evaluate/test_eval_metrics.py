"""Metric kernels on hand-built embeddings with known answers, and the caption swap builders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from litops.core.config import ConfigError
from litops.evaluate import metrics as M


def eye(n: int) -> torch.Tensor:
    return torch.eye(n)


# --------------------------------------------------------------------------- retrieval


def test_identity_embeddings_give_perfect_recall():
    captions = [f"caption {i}" for i in range(6)]
    texts, ids = M.caption_index(captions)
    r = M.retrieval_metrics(eye(6), eye(6), ids, [1, 5, 10])
    assert texts == captions
    assert r["retrieval_i2t_r1"] == 1.0 and r["retrieval_t2i_r1"] == 1.0
    assert r["retrieval_mean_r1"] == 1.0
    assert r["retrieval_i2t_r10"] == 1.0  # K beyond the gallery size is fine


def test_permutation_gives_fraction_of_fixed_points():
    # Image i embeds like caption perm[i]: only fixed points retrieve their own caption first.
    perm = torch.tensor([0, 2, 1, 4, 3, 5])  # fixed points 0 and 5 -> R@1 = 2/6
    images = eye(6)[perm]
    texts, ids = M.caption_index([f"c{i}" for i in range(6)])
    i2t, t2i = M.retrieval_ranks(images, eye(6), ids)
    assert M.recall_at_k(i2t, [1])[1] == pytest.approx(2 / 6)
    assert M.recall_at_k(t2i, [1])[1] == pytest.approx(2 / 6)
    # One-hot scores: the correct caption scores 0 like every other wrong one -> pessimistic rank.
    assert i2t.tolist() == [0, 5, 5, 5, 5, 0]


def test_graded_scores_give_known_ranks():
    # Image i matches text i exactly, but text i is the caption of another sample (a cyclic
    # shift): the correct caption is never first, and always within a 5-item gallery.
    n = 5
    img = torch.randn(n, 16)
    img = F.normalize(img, dim=-1)
    txt = img.clone()
    ids = torch.tensor([1, 2, 3, 4, 0])  # sample i's caption is text ids[i]; text ids[i] != image i
    i2t, _ = M.retrieval_ranks(img, txt, ids)
    # Image i scores highest with text i (itself), which belongs to another sample: rank >= 1.
    assert (i2t >= 1).all()
    assert M.recall_at_k(i2t, [1])[1] == 0.0
    assert M.recall_at_k(i2t, [5])[5] == 1.0  # a 5-item gallery


def test_duplicate_captions_count_as_hits():
    # Samples 0 and 1 share a caption. Image 0 looks exactly like sample 1's image and the
    # shared caption: retrieving either is a hit in both directions.
    captions = ["a red circle", "a red circle", "a blue square"]
    texts, ids = M.caption_index(captions)
    assert texts == ["a red circle", "a blue square"] and ids.tolist() == [0, 0, 1]
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    i2t, t2i = M.retrieval_ranks(images, text_emb, ids)
    assert i2t.tolist() == [0, 0, 0]
    assert t2i.tolist() == [0, 0, 0]


def test_duplicate_wrong_captions_take_several_slots():
    # The gallery is every sample's caption: a wrong caption held by 3 samples outranks the
    # right one 3 times.
    captions = ["x", "wrong", "wrong", "wrong"]
    _, ids = M.caption_index(captions)
    images = torch.tensor([[1.0, 0.0]] * 4)
    text_emb = torch.tensor([[0.6, 0.8], [1.0, 0.0]])  # "x", "wrong"
    i2t, t2i = M.retrieval_ranks(images, text_emb, ids)
    assert i2t[0].item() == 3
    r = M.recall_at_k(i2t, [1, 3, 4])
    assert r == {1: 0.75, 3: 0.75, 4: 1.0}


def test_constant_model_scores_zero_not_perfect():
    n = 8
    same = torch.ones(n, 4) / 2.0
    _, ids = M.caption_index([f"c{i}" for i in range(n)])
    r = M.retrieval_metrics(same, same, ids, [1, 5])
    assert r["retrieval_i2t_r1"] == 0.0 and r["retrieval_t2i_r1"] == 0.0
    assert r["retrieval_i2t_r5"] == 0.0


def test_chunking_matches_single_block(monkeypatch):
    torch.manual_seed(0)
    img = F.normalize(torch.randn(50, 8), dim=-1)
    txt = F.normalize(torch.randn(20, 8), dim=-1)
    ids = torch.randint(0, 20, (50,))
    ids[:20] = torch.arange(20)  # every text used
    full = M.retrieval_ranks(img, txt, ids)
    monkeypatch.setattr(M, "_BLOCK_FLOATS", 7 * 20)  # 7 rows of the 20 texts per i2t block
    chunked = M.retrieval_ranks(img, txt, ids)
    assert torch.equal(full[0], chunked[0]) and torch.equal(full[1], chunked[1])


def test_ranks_match_brute_force():
    torch.manual_seed(1)
    n = 30
    captions = [f"c{i % 12}" for i in range(n)]
    texts, ids = M.caption_index(captions)
    img = F.normalize(torch.randn(n, 6), dim=-1)
    txt = F.normalize(torch.randn(len(texts), 6), dim=-1)
    i2t, t2i = M.retrieval_ranks(img, txt, ids)
    slots = txt[ids]  # one gallery row per sample
    for i in range(n):
        s = img[i] @ slots.T
        gt = s[i]
        wrong = [j for j in range(n) if captions[j] != captions[i]]
        assert i2t[i].item() == sum(int(s[j] >= gt) for j in wrong)
        q = txt[ids[i]] @ img.T
        best = max(q[j] for j in range(n) if captions[j] == captions[i])
        assert t2i[i].item() == sum(int(q[j] >= best) for j in wrong)


# --------------------------------------------------------------------------- zero-shot


def test_zeroshot_classifier_averages_and_renormalises():
    # 2 classes x 2 templates, class-major.
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    w = M.zeroshot_classifier(prompts, 2)
    s = 2 ** -0.5
    assert torch.allclose(w, torch.tensor([[s, s], [0.0, 1.0]]))
    assert M.prompts_for(["red", "blue"], ["a {}", "{} thing"]) == ["a red", "red thing", "a blue", "blue thing"]


def test_zeroshot_eval_known_answers():
    clf = eye(3)
    # Rows: true 0 predicted 0; true 1 predicted 2 (second-best 1); true 2 predicted 2.
    img = torch.tensor([[1.0, 0.1, 0.0], [0.0, 0.5, 0.9], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    top1, top5, conf = M.zeroshot_eval(img, clf, labels, topk=5)
    assert top1 == pytest.approx(2 / 3)
    assert top5 == 1.0  # k clipped to 3 classes
    assert conf.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    _, top2, _ = M.zeroshot_eval(img, clf, labels, topk=2)
    assert top2 == 1.0


def test_zeroshot_ties_are_pessimistic():
    top1, top5, _ = M.zeroshot_eval(torch.ones(4, 3), eye(3), torch.tensor([0, 1, 2, 0]), topk=2)
    assert top1 == 0.0 and top5 == 0.0


def test_template_check():
    M.check_templates(["a {}", "{} shape"])
    with pytest.raises(ConfigError):
        M.check_templates(["a photo"])
    with pytest.raises(ConfigError):
        M.check_templates(["{} and {}"])
    with pytest.raises(ConfigError):
        M.check_templates([])


# --------------------------------------------------------------------------- swaps

VOCAB = {"colour": ["red", "green", "blue", "yellow"], "shape": ["circle", "square", "star"]}


def test_replace_words_is_whole_word_and_simultaneous():
    assert M.replace_words("a red circle and a blue star", {"red": "blue", "blue": "red"}) == "a blue circle and a red star"
    assert M.replace_words("reddish red", {"red": "green"}) == "reddish green"
    assert M.replace_words("Red circle", {"red": "blue"}) == "Blue circle"
    assert M.replace_words("unchanged", {}) == "unchanged"


def test_binding_swap_swaps_the_two_colours():
    objs = [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "star"}]
    assert M.binding_swap("a big red circle left of a blue star", objs) == "a big blue circle left of a red star"
    assert M.swap_caption("a red circle and a blue star", {"objects": objs}, VOCAB, 0) == (
        "binding", "a blue circle and a red star")


def test_binding_swap_skips_equal_or_missing_colours():
    same = [{"colour": "red", "shape": "circle"}, {"colour": "red", "shape": "star"}]
    assert M.binding_swap("a red circle and a red star", same) is None
    objs = [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "star"}]
    assert M.binding_swap("a circle and a star", objs) is None  # paraphrase without colour words
    assert M.binding_swap("a red circle", objs[:1]) is None


def test_attribute_swap_alternates_colour_and_shape_deterministically():
    obj = {"colour": "red", "shape": "circle"}
    cap = "there is a red circle on the left"
    even = M.attribute_swap(cap, obj, VOCAB, 0)
    odd = M.attribute_swap(cap, obj, VOCAB, 1)
    assert even == "there is a green circle on the left"  # colour replaced by the first other value
    assert odd == "there is a red square on the left"  # shape replaced
    assert M.attribute_swap(cap, obj, VOCAB, 2) == "there is a blue circle on the left"  # cycles on
    assert M.attribute_swap(cap, obj, VOCAB, 0) == even  # deterministic
    for i in range(10):
        s = M.attribute_swap(cap, obj, VOCAB, i)
        assert s != cap and len(s.split()) == len(cap.split())


def test_attribute_swap_falls_back_and_gives_up():
    obj = {"colour": "red", "shape": "circle"}
    assert M.attribute_swap("a red thing", obj, VOCAB, 1) == "a green thing"  # no shape word: colour
    assert M.attribute_swap("something", obj, VOCAB, 0) is None
    assert M.attribute_swap("a red circle", obj, {}, 0) is None  # no vocabulary (user data)
    assert M.swap_caption("a red circle", {}, VOCAB, 0) is None  # no metadata
    assert M.swap_caption("a red circle", {"objects": [obj]}, VOCAB, 0) == ("attribute", "a green circle")


def test_compositional_accuracy_is_strict():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    assert M.compositional_accuracy(img, true, swap).tolist() == [1.0, 0.0, 0.0]
