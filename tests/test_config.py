from __future__ import annotations

import pytest

from p2p_cli.errors import P2PError
from p2p_cli.io.config import TrainConfig, build_config, read_config_file


def test_defaults_follow_the_paper():
    cfg = build_config()
    assert (cfg.lambda_clst, cfg.lambda_sep, cfg.lambda_l1) == (0.8, -0.08, 1e-4)
    assert (cfg.warm_epochs, cfg.push_start, cfg.push_every, cfg.last_layer_epochs) == (6, 12, 10, 10)
    assert (cfg.lambda_global, cfg.lambda_ppc, cfg.tau_train) == (10.0, 10.0, 100.0)


def test_flag_beats_file_beats_default():
    cfg = build_config({"epochs": 5, "batch_size": 16}, {"epochs": "7", "batch_size": None})
    assert cfg.epochs == 7 and cfg.batch_size == 16


def test_strings_are_coerced_and_null_allowed_where_optional():
    cfg = build_config({}, {"lr_backbone": "1e-3", "push_start": "null", "augment": "false"})
    assert cfg.lr_backbone == 1e-3 and cfg.push_start is None and cfg.augment is False


@pytest.mark.parametrize("values, message", [
    ({"epoch": 3}, "unknown key 'epoch' (did you mean 'epochs'?)"),
    ({"lr_backbon": 0.1}, "did you mean 'lr_backbone'"),
    ({"epochs": -1}, "'epochs' must be ≥ 1"),
    ({"epochs": 2.5}, "'epochs' expects a int"),
    ({"precision": "bf61"}, "must be one of auto, bf16, fp16, fp32"),
    ({"augment": "maybe"}, "'augment' expects a bool"),
    ({"epochs": None}, "'epochs' must not be null"),
    ({"warm_epochs": 9, "epochs": 3}, "warm_epochs (9) exceeds epochs (3)"),
    ({"dataset": "cub"}, "needs a data root"),
])
def test_bad_values_are_one_line_errors(values, message):
    with pytest.raises(P2PError) as err:
        build_config(values)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(P2PError, match="config file not found"):
        read_config_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(P2PError, match="not valid YAML"):
        read_config_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(P2PError, match="expected a mapping"):
        read_config_file(listy)


def test_example_configs_are_valid():
    from pathlib import Path

    for path in sorted(Path(__file__).parent.parent.glob("examples/*.yaml")):
        cfg = build_config(read_config_file(path), {"data_root": "/data"}, source=str(path))
        assert isinstance(cfg, TrainConfig)


def test_fast_preset_equals_the_example_config():
    from pathlib import Path

    from p2p_cli.workflows.presets import SYNTHETIC_FAST

    example = read_config_file(Path(__file__).parent.parent / "examples" / "synthetic-fast.yaml")
    assert build_config(example) == build_config(SYNTHETIC_FAST)
