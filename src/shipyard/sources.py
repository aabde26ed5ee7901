"""What a piece of Shipyard runs: the import closure of a module, and the libraries it needs.

Two users: `dvc.yaml`, whose deps for each stage must be that stage's closure (`dvc repro`
reruns a stage only when a dep changed, so an unlisted module is a code change that silently
reuses stale outputs), and the Bento, which carries the serving closure and the locked
distributions it imports, not the whole project. Imports are read from the source (module
level and inside functions alike, since both run), never by importing it.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

PACKAGE = "shipyard"


def _file(root: Path, module: str) -> Path | None:
    """The file behind a dotted module name under `root` (the folder holding the package)."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, module: str) -> set[str]:
    """Dotted names of our package that one file imports, including `from a import module`."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package, up `level - 1` steps
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            names.add(origin)
            names.update(f"{origin}.{a.name}" for a in node.names)  # maybe submodules
    return {n for n in names if n == PACKAGE or n.startswith(f"{PACKAGE}.")}


def closure(root: Path, module: str) -> list[Path]:
    """Every file of our package that running `module` executes, parents' `__init__` too."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            path = _file(root, prefix)
            if path is None:  # a name imported from a module, not a module
                continue
            seen[prefix] = path
            todo.extend(_imported(path, prefix))
    return sorted(seen.values())


def stage_sources(root: Path, stage: str) -> list[str]:
    """`dvc.yaml` deps for the code of one stage, relative to the repository."""
    files = closure(root / "src", f"{PACKAGE}.pipeline.{stage}")
    return sorted(str(p.relative_to(root)) for p in files)


# What the service runs; skops loads our model classes by dotted name, so the models
# package counts whole, whatever the service's own imports say.
SERVING = ("shipyard.serving.service", "shipyard.models")


def serving_files(root: Path) -> list[Path]:
    """The package files a Bento needs (`root`: the folder holding the package)."""
    models = [f"{PACKAGE}.models.{p.stem}" for p in (root / PACKAGE / "models").glob("*.py")]
    files: set[Path] = set()
    for module in (*SERVING, *models):
        files.update(closure(root, module.removesuffix(".__init__")))
    return sorted(files)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions(files: list[Path]) -> set[str]:
    """Installed distributions (canonical names) whose top-level modules these files import."""
    tops: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops.add(node.module.split(".")[0])
    owners = metadata.packages_distributions()
    third = tops - set(sys.stdlib_module_names) - {PACKAGE}
    return {canonical(d) for top in third for d in owners.get(top, [top])}


def required_closure(roots: set[str]) -> set[str]:
    """`roots` and everything they require (no extras), as installed here."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = sorted(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return seen
