"""The learned model's parts: exact invariances, the sampler's geometry, weights files, training."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from conftest import photo, save, scan

from ndup.config import ScanSettings
from ndup.model.align import UNDO_SIGN, AffineAligner, dihedral
from ndup.model.network import NdupNet
from ndup.model.spec import model_id
from ndup.model.weights import load_network, read_meta, save_weights
from ndup.neighbors import knn_pairs
from ndup.pair_cache import PairCache
from ndup.records import PairVerdict
from ndup.scan import verifier_id
from ndup.verify import DecisionUnit, PairInputs, SparseRows, pair_features


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return NdupNet().eval()


def as_tensor(im, side=256):
    x = torch.from_numpy(np.asarray(im.resize((side, side)), dtype=np.float32) / 255).permute(2, 0, 1)
    return x[None]


def test_rotated_and_mirrored_copies_get_identical_descriptors(net):
    """The orientation stage is invariant by construction, even untrained: the 8 candidates of a turned
    copy are the original's 8 candidates in another order."""
    x = as_tensor(photo(1))
    aspect = torch.tensor([4 / 3])
    with torch.no_grad():
        ref = net(x, aspect)
        for g in range(1, 8):
            turned_aspect = aspect if g % 2 == 0 else 1 / aspect
            out = net(dihedral(x, g), turned_aspect)
            assert torch.allclose(out["vector"], ref["vector"], atol=1e-5), g
            assert int(out["phash"][0]) == int(ref["phash"][0])


def test_sampler_undoes_a_rotation_of_a_non_square_picture():
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.uniform(0, 1, (3, 6, 8)).astype(np.float32))
    picture = TF.resize(base, [300, 400], interpolation=TF.InterpolationMode.BICUBIC)  # smooth, 4:3
    turned = TF.rotate(picture, 12.0, interpolation=TF.InterpolationMode.BILINEAR)
    squashed = TF.resize(turned, [256, 256], antialias=True)[None]
    target = TF.resize(picture, [256, 256], antialias=True)[None]
    params = torch.tensor([[UNDO_SIGN * math.radians(12.0), 1.0, 0.0, 0.0]])
    undone = AffineAligner.sample(squashed, params, 256, torch.tensor([4 / 3]))
    wrong_way = AffineAligner.sample(squashed, -params * torch.tensor([[1, -1, 1, 1]]), 256, torch.tensor([4 / 3]))
    centre = (slice(None), slice(None), slice(64, 192), slice(64, 192))
    assert (undone - target)[centre].abs().mean() < 0.02
    assert (wrong_way - target)[centre].abs().mean() > 3 * (undone - target)[centre].abs().mean()


def test_second_orientation_hypothesis_is_used_when_it_agrees_better():
    v = np.eye(3, dtype=np.float32)
    alt = np.full_like(v, np.nan)
    alt[1] = v[0]  # image 1's runner-up orientation looks exactly like image 0
    inputs = PairInputs(
        vectors=v, phash_aligned=np.array([1, 2, 3], dtype=np.uint64), phash=np.zeros(3, dtype=np.uint64),
        dhash=np.zeros(3, dtype=np.uint64), width=np.ones(3), height=np.ones(3),
        alt_vectors=alt, alt_phash_aligned=np.array([0, 1, 0], dtype=np.uint64),
    )  # fmt: skip
    feats = pair_features(inputs, np.array([[0, 1], [0, 2]]))
    assert feats[0, 0] == pytest.approx(1.0) and feats[1, 0] == pytest.approx(0.0)
    assert feats[0, 6] == 0.0  # the aligned hashes of the agreeing hypotheses are compared


def test_second_hypotheses_are_held_for_the_images_that_have_one_and_read_back_as_dense_rows():
    rng = np.random.default_rng(3)
    n, dim = 50, 8
    dense = np.full((n, dim), np.nan, dtype=np.float32)
    owners = np.array([2, 7, 8, 31, 49])
    dense[owners] = rng.standard_normal((len(owners), dim)).astype(np.float32)
    sparse = SparseRows.from_dense(dense)
    assert sparse.rows.shape == (5, dim) and sparse.owners.tolist() == owners.tolist()
    pick = rng.integers(0, n, size=200)
    np.testing.assert_array_equal(sparse[pick], dense[pick])  # NaN exactly where a row is absent
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    zeros = np.zeros(n, dtype=np.uint64)
    given = {"phash_aligned": zeros, "phash": zeros, "dhash": zeros, "width": np.ones(n), "height": np.ones(n)}
    from_dense = PairInputs(vectors, **given, alt_vectors=dense, alt_phash_aligned=zeros)
    from_sparse = PairInputs(vectors, **given, alt_vectors=sparse, alt_phash_aligned=zeros)
    assert isinstance(from_dense.alt_vectors, SparseRows)
    pairs = rng.integers(0, n, size=(300, 2))
    np.testing.assert_array_equal(pair_features(from_dense, pairs), pair_features(from_sparse, pairs))


def test_knn_pairs_merge_hypotheses_of_one_image():
    rows = np.array([[1, 0], [0, 1], [0.96, 0.28], [0.6, 0.8]], dtype=np.float32)
    owners = np.array([0, 1, 2, 1])  # row 3 is image 1's second hypothesis
    pairs = knn_pairs(rows, 3, min_similarity=0.5, owners=owners)
    assert set(pairs) == {(0, 1), (0, 2), (1, 2)}
    assert pairs[(0, 1)] == pytest.approx(0.6)  # via image 1's second hypothesis


def _trained_unit(tmp_path, steps=60):
    from ndup.model.train import Log, TrainConfig, train_decision_unit
    from ndup.verify import FEATURES

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(600, len(FEATURES)))
    labels = (feats[:, 0] > 0).astype(int) + (feats[:, 11] > 0.5).astype(int)
    cfg = TrainConfig(photos=tmp_path, out=tmp_path / "w.npz", decision_steps=steps)
    arrays = train_decision_unit(feats, labels, feats[:200], labels[:200], cfg, Log(say=lambda s: None))
    return arrays, feats


def test_decision_unit_in_numpy_matches_the_trained_torch_network(tmp_path):
    from ndup.model.train import MonotoneUnit

    arrays, feats = _trained_unit(tmp_path)
    unit = DecisionUnit(arrays)
    probs = unit.probabilities(feats[:5])
    torch_unit = MonotoneUnit(arrays["du_signs"])
    with torch.no_grad():
        for free, w in zip(torch_unit.free, [arrays[f"du_w{i}"] for i in range(3)]):
            free.copy_(torch.from_numpy(np.log(np.expm1(w))))  # softplus^-1: the same positive weights
        for bias, b in zip(torch_unit.biases, [arrays[f"du_b{i}"] for i in range(3)]):
            bias.copy_(torch.from_numpy(b))
        x = torch.from_numpy((feats[:5] - arrays["du_mean"]) / arrays["du_std"]).float()
        z = torch_unit(x).double().numpy() * arrays["du_scale"] + arrays["du_shift"]
    p_same, p_copy = 1 / (1 + np.exp(-z[:, 0])), 1 / (1 + np.exp(-z[:, 1]))
    assert np.allclose(probs[:, 2], p_copy, atol=1e-5)
    assert np.allclose(probs[:, 1] + probs[:, 2], np.maximum(p_same, p_copy), atol=1e-5)
    assert np.allclose(probs.sum(1), 1.0) and (probs >= 0).all()


def test_more_evidence_of_sameness_never_lowers_a_probability(tmp_path):
    """The unit is monotone in every feature it uses, whatever it learnt: a pair that looks more alike
    in one respect, all else equal, is never less likely a copy or the same scene."""
    from ndup.verify import EVIDENCE, FEATURES

    arrays, feats = _trained_unit(tmp_path)
    unit = DecisionUnit(arrays)
    base = unit.probabilities(feats)
    for j, name in enumerate(FEATURES):
        moved = feats.copy()
        moved[:, j] += EVIDENCE[name] * 0.7  # more alike by this feature (no change where it is unused)
        after = unit.probabilities(moved)
        assert (after[:, 2] >= base[:, 2] - 1e-12).all(), name
        assert (after[:, 1] + after[:, 2] >= base[:, 1] + base[:, 2] - 1e-12).all(), name


def test_weights_file_round_trip_and_model_id(tmp_path, net):
    path = tmp_path / "w.npz"
    net.canonicalizer.second_margin.fill_(0.7)
    save_weights(path, net, {"du_mean": np.zeros(2)}, {"note": "test"})
    loaded = load_network(path)
    assert float(loaded.canonicalizer.second_margin) == pytest.approx(0.7)
    x = as_tensor(photo(2))
    with torch.no_grad():
        assert torch.allclose(loaded(x)["vector"], net(x)["vector"], atol=1e-6)
    assert read_meta(path) == {"note": "test"}
    assert model_id(path).startswith("ndup-full-")
    # a recalibrated decision unit keeps the library's cached embeddings; a new embedding part does not
    recalibrated = tmp_path / "recalibrated.npz"
    save_weights(recalibrated, loaded, {"du_mean": np.ones(2)}, {"note": "other"})
    assert model_id(recalibrated) == model_id(path)
    with torch.no_grad():
        loaded.projection.parameters().__next__().add_(0.01)
    retrained = tmp_path / "retrained.npz"
    save_weights(retrained, loaded, {"du_mean": np.zeros(2)}, {"note": "test"})
    assert model_id(retrained) != model_id(path)


def test_new_decision_unit_weights_never_reuse_cached_pair_verdicts(tmp_path, net):
    # two weights files with the same embedding part (same model id, same cached vectors) but another
    # decision unit: the pair-verdict cache must tell them apart
    first, recalibrated = tmp_path / "first.npz", tmp_path / "recalibrated.npz"
    save_weights(first, net, {"du_mean": np.zeros(2)}, {"note": "test"})
    save_weights(recalibrated, net, {"du_mean": np.zeros(2) + 0.5}, {"note": "test"})
    assert model_id(first) == model_id(recalibrated)
    settings = ScanSettings(roots=(tmp_path,), db_path=tmp_path / "c.db", weights=first)
    assert verifier_id(settings) == verifier_id(replace(settings))
    assert verifier_id(settings) != verifier_id(replace(settings, weights=recalibrated))
    aligned = replace(settings, variant="aligned")
    assert verifier_id(replace(aligned, threshold=0.8)) != verifier_id(replace(aligned, threshold=0.9))
    assert verifier_id(aligned) != verifier_id(settings)

    calls = []

    def verify(tier):
        def run(pairs):
            calls.append(len(pairs))
            return [PairVerdict(int(a), int(b), tier, 0.9, 0.95) for a, b in pairs]

        return run

    path, hashes, pairs = tmp_path / "c.db.pairs", ["h1", "h2"], np.array([[0, 1]])
    cache = PairCache(path, verifier_id(settings))
    assert cache.verdicts(hashes, pairs, verify("copy"))[0].tier == "copy" and cache.verified == 1
    cache = PairCache(path, verifier_id(settings))
    assert cache.verdicts(hashes, pairs, verify("copy"))[0].tier == "copy" and cache.reused == 1
    cache = PairCache(path, verifier_id(replace(settings, weights=recalibrated)))
    assert cache.verdicts(hashes, pairs, verify("similar"))[0].tier == "similar"
    assert (cache.reused, cache.verified, calls) == (0, 1, [1, 1])


@pytest.mark.slow
def test_quick_training_run_produces_weights_a_scan_uses(tmp_path):
    from ndup.model.train import TrainConfig, quick_config, train

    photos = tmp_path / "photos"
    for i in range(16):
        save(photo(500 + i, 320, 240), photos / f"p{i:02d}.jpg", quality=92)
    out = tmp_path / "mine.npz"
    meta = train(quick_config(TrainConfig(photos=photos, out=out, holdout=0.2)), say=lambda s: None)
    assert out.exists() and set(meta["stages"]) >= {"canonicalizer", "aligner", "projection", "decision_unit"}
    assert len(meta["trained_on"]) + len(meta["validated_on"]) + len(meta["held_out"]) == 16
    lib = tmp_path / "lib"
    save(photo(900), lib / "a.jpg")
    save(photo(900).resize((320, 240)), lib / "a_small.jpg")
    plan = scan(lib, tmp_path / "c.db", weights=out)
    assert plan.summary["model"] == model_id(out)


def test_pair_features_in_chunks_equal_those_computed_at_once(monkeypatch):
    import ndup.verify as verify

    rng = np.random.default_rng(3)
    n = 60
    v = rng.normal(size=(n, 16))
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    inp = PairInputs(v / np.linalg.norm(v, axis=1, keepdims=True), hashes, hashes[::-1].copy(), hashes,
                     np.full(n, 640.0), np.full(n, 480.0))  # fmt: skip
    pairs = rng.integers(0, n, (500, 2))
    whole = pair_features(inp, pairs)
    monkeypatch.setattr(verify, "FEATURE_CHUNK", 7)
    assert np.array_equal(pair_features(inp, pairs), whole)
