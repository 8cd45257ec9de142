"""The public Python API (``p2p_cli.api``): the README's example runs as written, importing the API
loads no torch, every function documents an example, and the run object's class check."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from p2p_cli import api
from p2p_cli.data.index import DatasetIndex
from p2p_cli.errors import P2PError

ROOT = Path(__file__).parent.parent


def readme_api_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's Python API section has no python code block"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_api_example(), "README.md (Python API)", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    for run in ("teacher", "student"):
        assert (tmp_path / "runs" / run / "model.safetensors").is_file(), run
    config = yaml.safe_load((tmp_path / "runs" / "student" / "config.yaml").read_text())
    assert config["command"] == "distill" and config["teacher_run"]["name"] == "teacher"
    assert re.search(r"test accuracy: teacher \d\.\d\d, student \d\.\d\d", out)
    assert re.search(r"AJS\(inf\) \d\.\d{3}, PMS \d\.\d{3}", out)
    figure = Path(re.search(r"explanation: (\S+)", out).group(1))
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "6 prototypes, 3 classes, trained from teacher" in out


def test_importing_the_api_loads_no_torch():
    code = "import sys, p2p_cli.api; bad = [m for m in ('torch', 'timm', 'matplotlib') if m in sys.modules]; print(bad)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_api_function_documents_an_example():
    functions = [getattr(api, name) for name in api.__all__ if inspect.isfunction(getattr(api, name))]
    assert len(functions) >= 17
    for fn in functions:
        doc = inspect.getdoc(fn) or ""
        assert "Example::" in doc and "from p2p_cli.api import" in doc, fn.__name__
        example = doc.split("Example::", 1)[1]
        compile(inspect.cleandoc(example), fn.__name__, "exec")  # the example is valid Python


def test_load_run_and_the_class_check(shared_teacher):
    run = api.load_run(shared_teacher)
    assert run.model.num_prototypes == 6 and len(run.classes) == 3 and run.config.image_size == 32
    index = DatasetIndex("synthetic", Path("/data"), list(run.classes), [], [])
    run.check_classes(index)  # the run's own classes: fine
    for classes in (run.classes[::-1], [*run.classes, "extra"]):
        with pytest.raises(P2PError) as exc:
            run.check_classes(DatasetIndex("other", Path("/data/other"), classes, [], []), hint="use its dataset")
        msg = str(exc.value)
        assert "\n" not in msg and msg.startswith(f"'{run.name}' was trained on 3 classes (")
        assert f"other at /data/other has {len(classes)} (" in msg and msg.endswith("; use its dataset")
    with pytest.raises(P2PError, match="not found|no run"):
        api.load_run("no-such-run", workdir=shared_teacher.parent)


CLI_TO_API = {  # each command's function and the API function it calls
    "train-teacher": "train_teacher", "distill": "distill", "quickstart": "quickstart", "push-prototypes": "push",
    "prune": "prune", "evaluate": "evaluate", "visualize": "explain", "robustness": "attack", "predict": "predict",
    "export": "export", "models": "list_models",
}


def test_api_defaults_are_the_cli_defaults():
    """Where a command's flag and its API function's keyword share a name, they share the default
    (except ``quiet``: a script's calls print nothing unless asked; a flag whose default is None
    leaves the value to the run or the API)."""
    from p2p_cli.cli.app import app

    commands = {c.name: c.callback for c in app.registered_commands}
    assert set(CLI_TO_API) <= set(commands)
    compared = 0
    for command, fn_name in CLI_TO_API.items():
        flags = inspect.signature(commands[command]).parameters
        for name, param in inspect.signature(getattr(api, fn_name)).parameters.items():
            flag = flags.get(name)
            if flag is None or name == "quiet" or param.default is inspect.Parameter.empty or not isinstance(
                    flag.default, str | int | float | bool | Path):  # None: "not given", the run's value
                continue
            assert str(flag.default) == str(param.default), (command, name, flag.default, param.default)
            compared += 1
    assert compared >= 40
