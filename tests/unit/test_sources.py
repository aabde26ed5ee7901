"""`dvc.yaml` lists, for each stage, exactly the source files that stage runs."""

from __future__ import annotations

from pathlib import Path

import yaml

from shipyard.pipeline import STAGES
from shipyard.sources import closure, stage_sources
from tests.conftest import REPO


def test_every_stage_depends_on_exactly_the_code_it_imports() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert sorted(stages) == sorted(STAGES)
    for name, stage in stages.items():
        listed = sorted(d for d in stage["deps"] if d.startswith("src/"))
        wanted = stage_sources(REPO, name)
        missing, extra = sorted(set(wanted) - set(listed)), sorted(set(listed) - set(wanted))
        assert (missing, extra) == ([], []), f"dvc.yaml stage {name}: add {missing}, drop {extra}"


def test_the_closure_follows_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "shipyard"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "entry.py": "from shipyard import a\nfrom .sub import b\n",
        "a.py": "def f():\n    import shipyard.lazy\n",  # inside a function: still runs
        "lazy.py": "from shipyard.sub.c import NAME\n",
        "sub/__init__.py": "",
        "sub/b.py": "",
        "sub/c.py": "NAME = 1\n",
        "unused.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    found = {str(p.relative_to(pkg)) for p in closure(tmp_path, "shipyard.entry")}
    assert found == set(files) - {"unused.py"}


def test_a_bento_carries_the_serving_closure_and_only_its_requirements() -> None:
    from shipyard import bento
    from shipyard.sources import canonical, serving_files

    files = {str(p.relative_to(REPO / "src")) for p in serving_files(REPO / "src")}
    assert {"shipyard/serving/service.py", "shipyard/models/torch.py"} <= files
    assert not [f for f in files if f.startswith(("shipyard/demo/", "shipyard/cli/"))]
    pins = {
        canonical(line.split("==")[0])
        for line in bento.serving_requirements(
            (REPO / "requirements.lock").read_text()
        ).splitlines()
    }
    assert {"bentoml", "torch", "skops", "scikit-learn", "pydantic-core"} <= pins
    assert not pins & {"dvc", "evidently", "mlflow", "pytest", "ruff", "zizmor", "schemathesis"}
