"""p2p prune: merge bookkeeping, optimizer binding, the greedy plan, k-NN test, and the real CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from p2p_cli.data.loaders import build_datasets
from p2p_cli.io.config import TrainConfig, config_from_dict
from p2p_cli.models.factory import load_model
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig, log_similarity
from p2p_cli.pruning.knn import knn_keep
from p2p_cli.pruning.loop import last_layer_optimizer
from p2p_cli.pruning.protopshare import merge_threshold, plan_merges, profile_dissimilarity, vector_dissimilarity
from p2p_cli.runtime.device import Runtime
from p2p_cli.training.last_layer import fit_last_layer
from p2p_cli.training.push import push_prototypes
from tests.conftest import run_cli, teacher_workdir

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


def _hand_model(seed: int = 0) -> ProtoPNet:
    """3 classes × 2 prototypes (m = 6), D = 4, with a distinct value in every last-layer cell."""
    torch.manual_seed(seed)
    model = ProtoPNet(ProtoPNetConfig(backbone="resnet18", num_classes=3, prototypes_per_class=2,
                                      prototype_depth=4, feature_stride=16))
    with torch.no_grad():
        model.last_layer.weight.copy_(torch.arange(18, dtype=torch.float32).view(3, 6) / 10)
    return model.eval()


# -- merge bookkeeping on a hand-built model ---------------------------------------------------
def test_merge_sums_columns_unions_classes_and_keeps_survivor_vector():
    model = _hand_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = [[0, 3], [1], [4, 2, 5]]  # prototype 0 (class 0) absorbs 3 (class 1); 4 absorbs 2 and 5
    new = model.merge_prototypes(groups)
    w = model.last_layer.weight
    assert new.num_prototypes == 3 and new.last_layer.in_features == 3
    assert torch.equal(new.prototype_vectors[:, :, 0, 0], model.prototype_vectors[[0, 1, 4], :, 0, 0])
    assert torch.allclose(new.last_layer.weight[:, 0], w[:, 0] + w[:, 3])
    assert torch.allclose(new.last_layer.weight[:, 1], w[:, 1])
    assert torch.allclose(new.last_layer.weight[:, 2], w[:, 4] + w[:, 2] + w[:, 5])
    expected_identity = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=torch.float32)
    assert torch.equal(new.class_identity, expected_identity)
    # the source is untouched and shares no storage with the result
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    name, param = next(iter(new.named_parameters()))
    with torch.no_grad():
        param.add_(1.0)
    assert torch.equal(model.state_dict()[name], before[name])


def test_merging_identical_prototypes_keeps_the_logits():
    model = _hand_model()
    with torch.no_grad():
        model.prototype_vectors[3].copy_(model.prototype_vectors[0])
    new = model.merge_prototypes([[0, 3], [1], [2], [4], [5]])
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(images).logits, new(images).logits, atol=1e-5)


def test_merge_rejects_overlapping_or_out_of_range_groups():
    model = _hand_model()
    for bad in ([[0, 1], [1]], [[0, 6]], [[]]):
        with pytest.raises(ValueError):
            model.merge_prototypes(bad)


def test_pruned_model_round_trips_through_save_and_load(tmp_path):
    from p2p_cli.models.factory import save_model

    new = _hand_model().merge_prototypes([[0, 3], [5]])
    save_model(tmp_path / "m.safetensors", new, stage="final", class_names=["a", "b", "c"])
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert loaded.num_prototypes == 2 and meta["num_prototypes"] == 2
    assert torch.equal(loaded.class_identity, new.class_identity)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images).logits, new(images).logits)


# -- the optimizer really trains the merged model ----------------------------------------------
def test_fine_tuning_updates_the_merged_model_not_a_detached_copy():
    cfg = TrainConfig(lr_last_layer=0.05, batch_size=8)
    model = _hand_model()
    old_weight = model.last_layer.weight.detach().clone()
    new = model.merge_prototypes([[0, 3], [1], [2], [4, 5]])
    merged_weight = new.last_layer.weight.detach().clone()
    opt = last_layer_optimizer(new, cfg)
    bound = [p for g in opt.param_groups for p in g["params"]]
    assert len(bound) == 1 and bound[0] is new.last_layer.weight
    sims = log_similarity(torch.rand(16, 4) * 3)
    labels = torch.arange(16) % 3
    rows = fit_last_layer(new, opt, sims, labels, cfg, 3, generator=torch.Generator().manual_seed(0))
    assert len(rows) == 3 and rows[-1]["ce"] < rows[0]["ce"] + 1e-6
    assert not torch.allclose(new.last_layer.weight, merged_weight)  # it trained
    assert torch.equal(model.last_layer.weight, old_weight)  # the source did not move
    # the failure mode of the public code: an optimizer bound to the pre-merge model trains nothing
    stale = torch.optim.Adam(model.last_layer.parameters(), lr=0.05)
    snapshot = new.last_layer.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(new.last_layer(sims), labels)
    loss.backward()
    stale.step()
    assert torch.equal(new.last_layer.weight, snapshot)


# -- the greedy plan and the k-NN test ----------------------------------------------------------
def test_profile_dissimilarity_is_squared_l2_between_columns():
    profiles = torch.rand(7, 5)
    d = profile_dissimilarity(profiles)
    brute = ((profiles[:, :, None] - profiles[:, None, :]) ** 2).sum(0).double()
    assert torch.allclose(d, brute, atol=1e-9) and torch.equal(d.diagonal(), torch.zeros(5, dtype=torch.float64))


def test_vector_dissimilarity_is_squared_l2_between_prototypes():
    protos = torch.rand(5, 3, 1, 1)
    brute = ((protos[:, None, :, 0, 0] - protos[None, :, :, 0, 0]) ** 2).sum(2).double()
    assert torch.allclose(vector_dissimilarity(protos), brute, atol=1e-9)


# six prototypes whose activation vectors are points on a line; δ = squared distance
#   x = 0, 10, 0.1, 10.3, 0.25, 5
#   nearest neighbours: 0→2 0.01, 1→3 0.09, 2→0 0.01, 3→1 0.09, 4→2 0.0225, 5→4 4.75² = 22.5625
#   sorted: 0.01, 0.01, 0.0225, 0.09, 0.09, 22.5625
LINE = torch.tensor([0.0, 10.0, 0.1, 10.3, 0.25, 5.0], dtype=torch.float64)
LINE_D = (LINE[:, None] - LINE[None, :]) ** 2


@pytest.mark.parametrize(("k", "kappa", "groups"), [
    # κ = 0.01: visiting 0 takes 2; nothing else is that close
    (2, 0.01, [[0, 2], [1], [3], [4], [5]]),
    # κ = 0.0225: 0 takes 2 (0.01) but not 4 (0.0625); 4 is within κ of 2, but 2 was merged into 0
    # and is not visited: no chains (single linkage would have made {0, 2, 4})
    (3, 0.0225, [[0, 2], [1], [3], [4], [5]]),
    # κ = 0.09: 0 takes 2 and 4 at once; 1 takes 3
    (4, 0.09, [[0, 2, 4], [1, 3], [5]]),
    # κ = 22.5625: 5's nearest neighbour (4) is gone into 0, and δ(0, 5) = δ(1, 5) = 25 > κ: 5 stays
    (6, 22.5625, [[0, 2, 4], [1, 3], [5]]),
])
def test_plan_merges_is_the_papers_threshold_and_star_merge(k, kappa, groups):
    assert merge_threshold(LINE_D, k) == pytest.approx(kappa)
    planned, threshold = plan_merges(LINE_D, k)
    assert planned == groups and threshold == pytest.approx(kappa)


def test_plan_merges_removes_between_one_and_k_prototypes_and_partitions_them():
    gen = torch.Generator().manual_seed(0)
    for k in (1, 5, 20):
        d = profile_dissimilarity(torch.rand(30, 40, generator=gen))
        groups, kappa = plan_merges(d, k)
        assert sorted(j for g in groups for j in g) == list(range(40))
        assert 1 <= 40 - len(groups) <= k
        assert all(d[g[0], j] <= kappa for g in groups for j in g[1:])


def test_plan_merges_stops_at_the_limit_taking_the_nearest_first():
    assert plan_merges(LINE_D, 4, limit=2)[0] == [[0, 2, 4], [1], [3], [5]]  # 0 takes two; 1 may take none
    assert plan_merges(LINE_D, 4, limit=1)[0] == [[0, 2], [1], [3], [4], [5]]  # 2 (0.01) before 4 (0.0625)
    with pytest.raises(ValueError):
        merge_threshold(LINE_D, 0)


def test_knn_keep_counts_own_class_neighbours():
    # 6 images (labels 0,0,0,1,1,1); prototype 0 (class 0) is nearest to the class-0 images,
    # prototype 1 (class 1) is nearest to class-0 images too -> dropped with k=3, k'=2
    profiles = torch.tensor([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [2.0, 2.0], [2.1, 2.1], [2.2, 0.25]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    identity = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keep, counts = knn_keep(profiles, labels, identity, k=3, k_min=2)
    assert keep.tolist() == [True, False] and counts.tolist() == [3, 1]


# -- the real command on a tiny trained run -----------------------------------------------------
def _digest(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def trained(shared_teacher, tmp_path_factory) -> Path:
    """Workdir with the tiny teacher `t` (a copy of the session's)."""
    return teacher_workdir(shared_teacher, tmp_path_factory.mktemp("prune"), "t")


def _test_predictions(run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions of the saved model from a fresh forward pass over the test set, and labels."""
    cfg = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()), source="test")
    data = build_datasets(cfg)
    model, _ = load_model(run / "model.safetensors")
    images = torch.stack([data.test[i][0] for i in range(len(data.test))])
    labels = torch.tensor([data.test[i][1] for i in range(len(data.test))])
    with torch.no_grad():
        return model(images).logits.argmax(1), labels


def test_prune_writes_a_new_run_and_twice_in_a_row(trained, capsys):
    source_before = _digest(trained / "t")
    code, out, err = run_cli(["prune", "--model", "t", "--target", "3", "--step", "2", "--workdir", str(trained),
                              "--device", "cpu", "--json", str(trained / "p.json")], capsys)
    assert code == 0, err
    assert "6 → 3 prototypes" in out
    assert _digest(trained / "t") == source_before  # the source is never modified
    run = trained / "t-pruned"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    rec = cfg["pruning"]
    assert rec["source"]["name"] == "t" and rec["method"] == "protopshare" and rec["target"] == 3
    assert rec["step"] == 2 and rec["distance"] == "data" and len(rec["source"]["weights_hash"]) == 16
    model, meta = load_model(run / "model.safetensors")
    assert model.num_prototypes == 3 and meta["pruning"]["prototypes_before"] == 6
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    counts = [r["prototypes"] for r in metrics]
    assert counts[0] == 6 and counts[-1] == 3 and rec["rounds"] == len(counts) - 1
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False))
    protos = json.loads((run / "prototypes.json").read_text())["prototypes"]
    members = sorted(i for p in protos for i in [p["source_prototype"], *p["merged_from"]])
    assert members == list(range(6)) and sum(len(p["merged_from"]) for p in protos) == 3
    # the groups are the paper's steps on the source's activation vectors (k = --step = 2); fine-tuning
    # the last layer leaves the survivors' vectors as they were
    src_cfg = config_from_dict(yaml.safe_load((trained / "t" / "config.yaml").read_text()), source="test")
    push = build_datasets(src_cfg).push
    src, _ = load_model(trained / "t" / "model.safetensors")
    with torch.no_grad():
        profiles = src(torch.stack([push[i][0] for i in range(len(push))])).min_distances
    origins = [[j] for j in range(6)]
    while len(origins) > 3:
        groups, _ = plan_merges(profile_dissimilarity(profiles), 2, limit=len(origins) - 3)
        origins = [[o for j in g for o in origins[j]] for g in groups]
        profiles = profiles[:, [g[0] for g in groups]]
    assert [[p["source_prototype"], *sorted(p["merged_from"])] for p in protos] == [
        [g[0], *sorted(g[1:])] for g in origins]
    source_protos = json.loads((trained / "t" / "prototypes.json").read_text())["prototypes"]
    src_model, _ = load_model(trained / "t" / "model.safetensors")
    for j, p in enumerate(protos):
        s = p["source_prototype"]
        assert p["source"] == source_protos[s]["source"]  # the survivor's provenance
        assert torch.equal(model.prototype_vectors[j], src_model.prototype_vectors[s])  # and its vector
        union = torch.stack([src_model.class_identity[i] for i in [s, *p["merged_from"]]]).amax(0)
        assert torch.equal(model.class_identity[j], union)
        assert p["class_ids"] == torch.nonzero(union).flatten().tolist()
    # the fine-tuning trained the merged model: its head is not the plain column sum
    summed = src_model.merge_prototypes([[p["source_prototype"], *p["merged_from"]] for p in protos])
    assert not torch.allclose(model.last_layer.weight, summed.last_layer.weight)
    # the recorded accuracy is that of the saved weights, recomputed from scratch
    pred, labels = _test_predictions(run)
    assert float((pred == labels).float().mean()) == pytest.approx(meta["test_acc"])
    summary = json.loads((trained / "p.json").read_text())
    assert summary["test_acc_after"] == pytest.approx(meta["test_acc"]) and summary["prediction_agreement"] == 1.0
    assert sum(c["merged_away"] for c in summary["classes"]) == 3

    # prune the pruned run again
    code, out, err = run_cli(["prune", "--model", "t-pruned", "--target", "2", "--workdir", str(trained),
                              "--device", "cpu", "--fine-tune-epochs", "0", "-q"], capsys)
    assert code == 0, err
    again = trained / "t-pruned-pruned"
    model2, _ = load_model(again / "model.safetensors")
    cfg2 = yaml.safe_load((again / "config.yaml").read_text())
    assert model2.num_prototypes == 2 and cfg2["pruning"]["source"]["name"] == "t-pruned"
    assert cfg2["pruning"]["previous"]["source"]["name"] == "t"
    protos2 = json.loads((again / "prototypes.json").read_text())["prototypes"]
    assert sorted(i for p in protos2 for i in p["original_prototypes"]) == list(range(6))
    # with no fine-tuning the head is exactly the summed columns of the recorded groups
    summed2 = model.merge_prototypes([[p["source_prototype"], *p["merged_from"]] for p in protos2])
    assert torch.equal(model2.last_layer.weight, summed2.last_layer.weight)

    # other commands' building blocks accept the pruned model: push onto multi-class prototypes
    data = build_datasets(config_from_dict(cfg2, source="test"))
    loader = torch.utils.data.DataLoader(data.push, batch_size=9)
    result = push_prototypes(model2, loader, CPU)
    assert result.image_index.shape == (2,) and bool((result.image_index >= 0).all())
    # ... and push-prototypes rewrites the provenance but keeps the merge record
    code, _, err = run_cli(["push-prototypes", "--model", "t-pruned-pruned", "--workdir", str(trained),
                            "--device", "cpu", "--no-save-images", "--overwrite", "-q"], capsys)
    assert code == 0, err
    pushed = json.loads((again / "prototypes.json").read_text())["prototypes"]
    assert [p["original_prototypes"] for p in pushed] == [p["original_prototypes"] for p in protos2]
    assert [p["merged_from"] for p in pushed] == [p["merged_from"] for p in protos2]


def test_prune_errors_are_one_line(trained, capsys):
    base = ["prune", "--model", "t", "--workdir", str(trained), "--device", "cpu", "-q"]
    for extra, message in ((["--target", "7"], "--target 7 must be between 1 and 5: the model has 6"),
                           (["--target", "6"], "the model has 6 prototypes"),
                           ([], "ProtoPShare needs --target"),
                           (["--method", "knn", "--target", "3"], "--target/--step apply to --method protopshare"),
                           (["--method", "magic", "--target", "3"], "unknown pruning method 'magic'"),
                           (["--target", "3", "--distance", "cosine"], "unknown --distance 'cosine'"),
                           (["--method", "knn", "--distance", "vectors"], "--distance apply to --method protopshare")):
        code, _, err = run_cli(base + extra, capsys)
        assert code == 2 and message in err and "Traceback" not in err, (extra, err)
    code, _, err = run_cli(base + ["--target", "5", "--name", "dup", "--fine-tune-epochs", "0"], capsys)
    assert code == 0, err
    code, _, err = run_cli(base + ["--target", "5", "--name", "dup"], capsys)
    assert code == 2 and "already exists; pass --overwrite" in err
    code, _, err = run_cli(base + ["--target", "4", "--name", "dup", "--overwrite", "--fine-tune-epochs", "0"],
                           capsys)
    assert code == 0, err
    assert load_model(trained / "dup" / "model.safetensors")[0].num_prototypes == 4


def test_data_independent_merging_uses_the_prototype_vectors(trained, capsys):
    code, _, err = run_cli(["prune", "--model", "t", "--target", "4", "--step", "3", "--distance", "vectors",
                            "--fine-tune-epochs", "0", "--name", "v", "--workdir", str(trained), "--device", "cpu",
                            "-q"], capsys)
    assert code == 0, err
    src, _ = load_model(trained / "t" / "model.safetensors")
    groups, _ = plan_merges(vector_dissimilarity(src.prototype_vectors.detach()), 3, limit=2)
    if len(groups) > 4:  # a second step on the survivors' vectors (unchanged without feature epochs)
        survivors = [g[0] for g in groups]
        second, _ = plan_merges(vector_dissimilarity(src.prototype_vectors.detach()[survivors]), 3,
                                limit=len(groups) - 4)
        groups = [[o for j in g for o in groups[j]] for g in second]
    protos = json.loads((trained / "v" / "prototypes.json").read_text())["prototypes"]
    assert [[p["source_prototype"], *sorted(p["merged_from"])] for p in protos] == [
        [g[0], *sorted(g[1:])] for g in groups]
    assert yaml.safe_load((trained / "v" / "config.yaml").read_text())["pruning"]["distance"] == "vectors"


def test_knn_pruning_drops_prototypes_failing_the_neighbour_test(trained, capsys):
    src, _ = load_model(trained / "t" / "model.safetensors")
    cfg = config_from_dict(yaml.safe_load((trained / "t" / "config.yaml").read_text()), source="test")
    data = build_datasets(cfg)
    images = torch.stack([data.push[i][0] for i in range(len(data.push))])
    labels = torch.tensor([data.push[i][1] for i in range(len(data.push))])
    with torch.no_grad():
        profiles = src(images).min_distances
    _, counts = knn_keep(profiles, labels, src.class_identity, k=6, k_min=1)
    # the strictest --knn-min that keeps a prototype: those with the most own-class neighbours survive
    knn_min = max(1, int(counts.max()))
    keep, _ = knn_keep(profiles, labels, src.class_identity, k=6, k_min=knn_min)
    expected_removed = [j for j in range(6) if not keep[j]]
    code, out, err = run_cli(["prune", "--model", "t", "--method", "knn", "--knn-min", str(knn_min), "--name", "k",
                              "--workdir", str(trained), "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    run = trained / "k"
    rec = yaml.safe_load((run / "config.yaml").read_text())["pruning"]
    model, _ = load_model(run / "model.safetensors")
    assert rec["method"] == "knn" and rec["removed"] == expected_removed
    assert model.num_prototypes == 6 - len(expected_removed)
    protos = json.loads((run / "prototypes.json").read_text())["prototypes"]
    assert all(p["merged_from"] == [] for p in protos)
    assert [p["source_prototype"] for p in protos] == [j for j in range(6) if j not in expected_removed]


def test_knn_pruning_that_would_remove_every_prototype_is_a_clear_error(trained, capsys):
    # k = all 18 training images (6 per class): each single-class prototype has exactly 6 own-class
    # neighbours, so --knn-min 7 fails every one of them
    code, _, err = run_cli(["prune", "--model", "t", "--method", "knn", "--knn-k", "18", "--knn-min", "7",
                            "--name", "none-left", "--workdir", str(trained), "--device", "cpu", "-q"], capsys)
    assert code == 2 and "would remove all 6 prototypes" in err and "Traceback" not in err
    assert not (trained / "none-left").exists()


def test_feature_epochs_retrain_and_push_the_merged_prototypes(trained, capsys):
    code, _, err = run_cli(["prune", "--model", "t", "--target", "4", "--feature-epochs", "1", "--name", "f",
                            "--workdir", str(trained), "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    model, _ = load_model(trained / "f" / "model.safetensors")
    src, _ = load_model(trained / "t" / "model.safetensors")
    protos = json.loads((trained / "f" / "prototypes.json").read_text())["prototypes"]
    assert model.num_prototypes == 4 and all(p["distance_after"] < 1e-5 for p in protos)
    # add-on trained: the features moved; the backbone stayed frozen (BN statistics aside)
    assert not torch.equal(model.add_on[0].weight, src.add_on[0].weight)
    src_params = dict(src.backbone.named_parameters())
    assert all(torch.equal(p, src_params[n]) for n, p in model.backbone.named_parameters())



def test_a_pruned_teacher_distills_only_when_the_counts_match():
    from p2p_cli.errors import P2PError
    from p2p_cli.workflows.distill import check_compatible

    cfg = TrainConfig(image_size=32)
    classes = ["a", "b", "c"]
    teacher = _hand_model().merge_prototypes([[0, 1], [2, 3], [4], [5]])  # m = 4, K = 3
    with pytest.raises(P2PError, match="teacher m = 4 \\(not a multiple of its 3 classes"):
        check_compatible(teacher, _hand_model(), cfg, "proto2proto", "copy", CPU, classes)
    teacher = _hand_model().merge_prototypes([[0, 1], [2, 3], [4, 5]])  # m = 3 = K × 1
    student = ProtoPNet(ProtoPNetConfig(backbone="resnet18", num_classes=3, prototypes_per_class=1,
                                        prototype_depth=4, feature_stride=16))
    check_compatible(teacher, student, cfg, "proto2proto", "copy", CPU, classes)
