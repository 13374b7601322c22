"""Tests for jaxkd.selection.mixup (Active Mixup pair-confidence scan).

References are brute force: Python loops over pairs and lambdas, the student
re-implemented in NumPy float64.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import parallel
from jaxkd.models import get_model, init_model
from jaxkd.selection import pair_scan as mixup
from jaxkd.validation import JaxkdError

LAMS = mixup.default_lambdas()


# ------------------------------------------------------------ tiny model ---


def _tiny_params(seed=0, d=16, hidden=8, classes=4):
  rng = np.random.default_rng(seed)
  return {"w1": rng.normal(size=(d, hidden)).astype(np.float32),
          "b1": rng.normal(size=(hidden,)).astype(np.float32) * 0.1,
          "w2": rng.normal(size=(hidden, classes)).astype(np.float32),
          "b2": rng.normal(size=(classes,)).astype(np.float32) * 0.1}


def tiny_apply(p, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
  return h @ p["w2"] + p["b2"]


def tiny_stem(p, x):
  return x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]


def tiny_head(p, h):
  return jnp.tanh(h) @ p["w2"] + p["b2"]


def _np_c1(p, x):
  """Max softmax of the tiny model on one image, NumPy float64."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  logits = np.tanh(x.reshape(-1) @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
  e = np.exp(logits - logits.max())
  return (e / e.sum()).max()


def _brute_force(p, images, lams):
  """Every pair i < j in row-major order with min_lam C1 and its lam."""
  images = np.asarray(images, np.float64)
  pairs, c2, lam_star, gap = [], [], [], []
  n = len(images)
  for i in range(n):
    for j in range(i + 1, n):
      c1 = [_np_c1(p, lam * images[i] + (1 - lam) * images[j]) for lam in lams]
      order = np.argsort(c1, kind="stable")
      pairs.append((i, j))
      c2.append(c1[order[0]])
      lam_star.append(lams[order[0]])
      gap.append(c1[order[1]] - c1[order[0]] if len(lams) > 1 else np.inf)
  return (np.asarray(pairs), np.asarray(c2), np.asarray(lam_star),
          np.asarray(gap))


def _images(n=12, shape=(4, 4, 1), seed=1):
  return np.random.default_rng(seed).uniform(size=(n,) + shape).astype(
      np.float32)


@pytest.fixture(scope="module")
def tiny():
  p = _tiny_params()
  x = _images()
  return p, x, _brute_force(p, x, LAMS)


# ---------------------------------------------------------------- helpers ---


def test_default_lambdas():
  lams = mixup.default_lambdas()
  assert lams.shape == (11,)
  np.testing.assert_allclose(lams, 0.3 + 0.04 * np.arange(11), atol=1e-12)
  assert lams[0] == 0.3 and lams[-1] == 0.7


def test_mix_images_matches_numpy():
  x = _images(5)
  pairs = np.array([[0, 3], [4, 1], [2, 2]])
  lams = np.array([0.3, 0.62, 1.0])
  want = np.stack([l * x[i] + (1 - l) * x[j] for (i, j), l in zip(pairs, lams)])
  got = mixup.mix_images(x, pairs, lams)
  assert got.shape == (3, 4, 4, 1)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_pair_numbering_roundtrip():
  n = 9
  iu = np.stack(np.triu_indices(n, 1), -1)
  np.testing.assert_array_equal(mixup.pair_indices(np.arange(len(iu)), n), iu)
  np.testing.assert_array_equal(mixup.pair_numbers(iu[:, ::-1], n),
                                np.arange(len(iu)))


# ------------------------------------------------------ pair_confidence ---


def test_pair_confidence_matches_brute_force(tiny):
  p, x, (pairs, c2, lam_star, gap) = tiny
  got_pairs, got_c2, got_lam = mixup.pair_confidence(tiny_apply, p, x, LAMS,
                                                     batch_size=50)
  assert got_pairs.dtype == np.int32 and got_pairs.shape == (66, 2)
  np.testing.assert_array_equal(got_pairs, pairs)
  np.testing.assert_allclose(got_c2, c2, atol=1e-5)
  clear = gap > 1e-5    # lam* is only defined up to float noise on near-ties
  assert clear.mean() > 0.9
  np.testing.assert_allclose(got_lam[clear], lam_star[clear], atol=1e-6)


def test_pair_confidence_block_size_invariant(tiny):
  p, x, _ = tiny
  _, c_a, l_a = mixup.pair_confidence(tiny_apply, p, x, LAMS, batch_size=1)
  _, c_b, l_b = mixup.pair_confidence(tiny_apply, p, x, LAMS, batch_size=10**5)
  np.testing.assert_allclose(c_a, c_b, atol=1e-6)
  np.testing.assert_array_equal(l_a, l_b)


@pytest.mark.parametrize("chunk_forwards", [22, 33, 10**6])
def test_chunked_blocks_match_brute_force(tiny, monkeypatch, chunk_forwards):
  """On CPU a block runs as a loop over chunks of pairs (2 or 3 pairs per
  chunk here, or none); C2, lam* and the picks stay the brute-force ones."""
  monkeypatch.setattr(mixup, "_CPU_CHUNK_FORWARDS", chunk_forwards)
  p, x, (pairs, c2, lam_star, gap) = tiny
  _, got_c2, got_lam = mixup.pair_confidence(tiny_apply, p, x, LAMS,
                                             batch_size=200)
  np.testing.assert_allclose(got_c2, c2, atol=1e-5)
  clear = gap > 1e-5
  np.testing.assert_allclose(got_lam[clear], lam_star[clear], atol=1e-6)
  ref = _reference_topk(pairs, c2, 7)
  _, _, top_c2 = mixup.select_pairs(tiny_apply, p, x, 7, LAMS, batch_size=200)
  np.testing.assert_allclose(top_c2, c2[ref], atol=1e-5)


# ---------------------------------------------------------- select_pairs ---


def _reference_topk(pairs, c2, k, exclude=()):
  taken = {tuple(sorted(e)) for e in exclude}
  order = [q for q in np.lexsort((np.arange(len(c2)), c2))
           if tuple(pairs[q]) not in taken]
  return np.asarray(order[:k])


@pytest.mark.parametrize("batch_size", [33, 4096])
def test_select_pairs_matches_brute_force(tiny, batch_size):
  p, x, (pairs, c2, lam_star, gap) = tiny
  exclude = np.array([[3, 1], [0, 5], [1, 3]])    # duplicates, either order
  ref = _reference_topk(pairs, c2, 9, exclude)
  got_pairs, got_lam, got_c2 = mixup.select_pairs(
      tiny_apply, p, x, 9, LAMS, exclude=exclude, batch_size=batch_size)
  assert got_pairs.shape == (9, 2) and got_lam.shape == got_c2.shape == (9,)
  np.testing.assert_allclose(got_c2, c2[ref], atol=1e-5)
  assert np.all(np.diff(got_c2) >= 0)
  # Pairs agree except where the reference C2 values are within float noise.
  near = np.abs(np.diff(c2[ref])) < 1e-5
  if not near.any():
    np.testing.assert_array_equal(got_pairs, pairs[ref])
  got = {tuple(q) for q in got_pairs}
  assert len(got) == 9
  assert not got & {(1, 3), (0, 5)}
  assert all(i < j for i, j in got_pairs)


def test_select_all_available_pairs_no_duplicates(tiny):
  p, x, (pairs, c2, _, _) = tiny
  exclude = pairs[::5]
  k = len(pairs) - len(exclude)
  got, _, got_c2 = mixup.select_pairs(tiny_apply, p, x, k, LAMS,
                                      exclude=exclude, batch_size=40)
  got = {tuple(q) for q in got}
  assert len(got) == k
  assert got == {tuple(q) for q in pairs} - {tuple(q) for q in exclude}
  assert np.all(np.diff(got_c2) >= 0)


def test_ties_are_deterministic_by_pair_order():
  # Constant logits: every pair ties at C2 = 1/4, lam* = smallest lam.
  const = lambda p, x: jnp.zeros((x.shape[0], 4)) + p
  x = _images(7)
  lams = np.array([0.7, 0.3, 0.5])   # unsorted on purpose
  got, lam, c2 = mixup.select_pairs(const, jnp.zeros(4), x, 5, lams,
                                    exclude=[[2, 0]], batch_size=6)
  np.testing.assert_array_equal(got, [[0, 1], [0, 3], [0, 4], [0, 5], [0, 6]])
  np.testing.assert_allclose(lam, 0.3)
  np.testing.assert_allclose(c2, 0.25, atol=1e-7)
  _, c2_all, lam_all = mixup.pair_confidence(const, jnp.zeros(4), x, lams)
  np.testing.assert_allclose(lam_all, 0.3)


def test_exact_ties_across_blocks_follow_pair_order():
  # One pixel, 0 or 1; logits (10 x, 0). Pairs of two 0-images mix to 0 and
  # tie exactly at C2 = 1/2, below every other pair (C2 >= sigmoid(3)).
  bits = np.array([1, 0, 1, 0, 0, 1, 0, 1, 0], np.float32)
  x = bits.reshape(-1, 1, 1, 1)
  fn = lambda p, x: jnp.concatenate([p * x.reshape(-1, 1),
                                     jnp.zeros((x.shape[0], 1))], 1)
  zeros = np.flatnonzero(bits == 0)
  want = [(i, j) for i, j in itertools.combinations(zeros, 2)]
  got, lam, c2 = mixup.select_pairs(fn, jnp.float32(10.0), x, len(want), LAMS,
                                    batch_size=11 * 3)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(c2, 0.5, atol=1e-7)
  np.testing.assert_allclose(lam, 0.3, atol=1e-7)
  # One more: the next lowest is a (1, 0) or (0, 1) pair, at C2 = sigmoid(3).
  got, _, c2 = mixup.select_pairs(fn, jnp.float32(10.0), x, len(want) + 1,
                                  LAMS, exclude=[want[0]], batch_size=11 * 3)
  np.testing.assert_array_equal(got[:-2], want[1:])
  assert bits[got[-1]].sum() == 1
  np.testing.assert_allclose(c2[-1], 1 / (1 + np.exp(-3.0)), atol=1e-6)


# ------------------------------------------------------------ fast path ---


@pytest.mark.parametrize("name,kwargs", [("lenet5_half", {}),
                                         ("mlp", {"hidden": (16, 8)})])
def test_fast_path_equals_plain(name, kwargs):
  model = get_model(name, 10, **kwargs)
  v = init_model(model, jax.random.key(0), (8, 8, 1))
  x = _images(12, (8, 8, 1), seed=2)
  apply_fn = lambda v, x: model.apply(v, x)
  stem_fn, head_fn = mixup.linear_stem_fns(model)
  _, c_plain, l_plain = mixup.pair_confidence(apply_fn, v, x, LAMS)
  _, c_fast, l_fast = mixup.pair_confidence(None, v, x, LAMS, stem_fn=stem_fn,
                                            head_fn=head_fn)
  np.testing.assert_allclose(c_fast, c_plain, atol=1e-5)
  assert np.mean(l_fast == l_plain) > 0.95
  s_plain = mixup.select_pairs(apply_fn, v, x, 6, LAMS)
  s_fast = mixup.select_pairs(apply_fn, v, x, 6, LAMS, stem_fn=stem_fn,
                              head_fn=head_fn)
  np.testing.assert_allclose(s_fast[2], s_plain[2], atol=1e-5)


def test_linear_stem_fns_requires_declaration():
  class NoStem:
    pass
  with pytest.raises(JaxkdError, match="has_linear_stem"):
    mixup.linear_stem_fns(NoStem())


# -------------------------------------------------------------- sharding ---


def test_sharded_equals_single_device(tiny):
  p, x, _ = tiny
  single = parallel.make_mesh(jax.devices()[:1])
  full = parallel.make_mesh()
  assert parallel.num_shards(full) == 8
  kw = dict(batch_size=40, stem_fn=tiny_stem, head_fn=tiny_head)
  _, c_1, l_1 = mixup.pair_confidence(None, p, x, LAMS, mesh=single, **kw)
  _, c_8, l_8 = mixup.pair_confidence(None, p, x, LAMS, mesh=full, **kw)
  np.testing.assert_allclose(c_8, c_1, atol=1e-6)
  np.testing.assert_array_equal(l_8, l_1)
  ex = np.array([[0, 1], [2, 7]])
  s_1 = mixup.select_pairs(None, p, x, 10, LAMS, exclude=ex, mesh=single, **kw)
  s_8 = mixup.select_pairs(None, p, x, 10, LAMS, exclude=ex, mesh=full, **kw)
  np.testing.assert_array_equal(s_8[0], s_1[0])
  np.testing.assert_array_equal(s_8[1], s_1[1])
  np.testing.assert_allclose(s_8[2], s_1[2], atol=1e-6)


# ---------------------------------------------------------------- errors ---


def test_bad_input_raises(tiny):
  p, x, _ = tiny
  sel = lambda **kw: mixup.select_pairs(
      tiny_apply, p, kw.pop("images", x), kw.pop("k", 3),
      kw.pop("lambdas", LAMS), **kw)
  with pytest.raises(JaxkdError, match="at least 2"):
    mixup.pair_confidence(tiny_apply, p, x[:1], LAMS)
  with pytest.raises(JaxkdError, match="at least 2"):
    sel(images=x[:1], k=1)
  with pytest.raises(JaxkdError, match="larger than"):
    sel(k=67)
  with pytest.raises(JaxkdError, match="larger than"):
    sel(k=65, exclude=[[0, 1], [1, 0], [3, 4]])
  with pytest.raises(JaxkdError, match="positive"):
    sel(k=0)
  with pytest.raises(JaxkdError, match=r"\[0, 1\]"):
    sel(lambdas=[0.2, 1.3])
  with pytest.raises(JaxkdError, match=r"\[0, 1\]"):
    mixup.pair_confidence(tiny_apply, p, x, [-0.1, 0.5])
  with pytest.raises(JaxkdError, match="non-empty"):
    sel(lambdas=[])
  bad = x.copy()
  bad[3, 0, 0, 0] = np.nan
  with pytest.raises(JaxkdError, match="NaN"):
    sel(images=bad)
  with pytest.raises(JaxkdError, match="NaN"):
    mixup.pair_confidence(tiny_apply, p, bad, LAMS)
  with pytest.raises(JaxkdError, match="rank"):
    mixup.pair_confidence(tiny_apply, p, x[..., 0], LAMS)
  with pytest.raises(JaxkdError, match="rank"):
    sel(images=x[..., 0])
  with pytest.raises(JaxkdError, match="exclude"):
    sel(exclude=[[0, 12]])
  with pytest.raises(JaxkdError, match="exclude"):
    sel(exclude=[1, 2])
  with pytest.raises(JaxkdError, match="both"):
    sel(stem_fn=tiny_stem)
  with pytest.raises(JaxkdError, match="batch_size"):
    sel(batch_size=0)


def test_vanilla_mixed_images_match_brute_force_over_pairs_and_lambdas(tiny):
  """Vanilla AL (Figure 4): the k lowest C1 over every (pair, lambda),
  one pair may come back at several lambdas; a paid (pair, lambda) is
  excluded only at its lambda (given in either pair order)."""
  p, x, _ = tiny
  n = len(x)
  rows = []   # (c1, lambda index, pair number, i, j, lam), NumPy float64
  for li, lam in enumerate(LAMS):
    for i in range(n):
      for j in range(i + 1, n):
        c1 = _np_c1(p, lam * x[i].astype(np.float64)
                    + (1 - lam) * x[j].astype(np.float64))
        rows.append((c1, li, mixup.pair_numbers([[i, j]], n)[0], i, j, lam))
  # Paid: (2, 7) at 0.5 as (7, 2, 0.5); (0, 1) at 0.3 given as (1, 0, 0.7).
  paid = {(2, 7, 5), (0, 1, 0)}
  rows = [r for r in rows if (r[3], r[4], r[1]) not in paid]
  rows.sort(key=lambda r: r[:3])
  k = 15
  got_pairs, got_lams, got_c1 = mixup.select_mixed_images(
      tiny_apply, p, x, k, LAMS, exclude=[[7, 2, 0.5], [1, 0, 0.7]],
      batch_size=40)
  ref = rows[:k]
  np.testing.assert_allclose(got_c1, [r[0] for r in ref], atol=1e-5)
  if np.all(np.diff([r[0] for r in ref]) > 1e-5):
    np.testing.assert_array_equal(got_pairs, [[r[3], r[4]] for r in ref])
    np.testing.assert_allclose(got_lams, [r[5] for r in ref])
  assert len({(i, j, l) for (i, j), l in zip(got_pairs.tolist(),
                                             got_lams.tolist())}) == k
  # With these images the lowest-confidence region repeats pairs at
  # neighbouring lambdas: the near-duplicates Figure 4 warns about.
  assert len({tuple(q) for q in got_pairs.tolist()}) < k
