"""Packaging: a registry version becomes a BentoML model and a Bento that serves it.

The Bento's tag names the model version plus a content hash of everything inside (spec,
service code, locked dependencies), so packaging the same version twice yields the same Bento.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shipyard import sources
from shipyard.artifacts import progress
from shipyard.policy import Policy
from shipyard.runtime import runtime_dir
from shipyard.serving.buckets import check_bounds, dump_bounds
from shipyard.serving.spec import SPEC_FILE, ServingSpec
from shipyard.tags import TAG, VersionTags

PACKAGE_ROOT = Path(__file__).resolve().parent
LOCK_FILE = PACKAGE_ROOT.parents[1] / "requirements.lock"
ENTRY = "service.py"
ENTRY_SOURCE = '''"""Bento entry point: point the service at its spec, then import it."""

import os
from pathlib import Path

os.environ["SHIPYARD_SERVING_SPEC"] = str(Path(__file__).with_name("serving_spec.json"))

from shipyard.serving.service import PredictionService  # noqa: E402,F401
'''


def use_local_store() -> None:
    """Keep BentoML's store in the runtime folder unless the user chose one."""
    os.environ.setdefault("BENTOML_HOME", str((runtime_dir() / "bentoml").resolve()))


def serving_requirements(lock: str) -> str:
    """The lock's pins for what the serving code imports, and what those require: no DVC,
    Evidently, MLflow or test tools in a serving image. Torch's local '+cpu' tag is dropped
    so an image build on PyPI resolves the same release."""
    needed = sources.required_closure(sources.imported_distributions(_serving_files()))
    keep = []
    for line in lock.splitlines():
        name = sources.canonical(line.split("==")[0].strip())
        if line and not line.startswith("#") and name in needed:
            keep.append(line.replace("+cpu", ""))
    return "\n".join(keep) + "\n"


def _serving_files() -> list[Path]:
    return sources.serving_files(PACKAGE_ROOT.parent)


def decision_threshold(policy: Policy, tags: VersionTags) -> float:
    """The score at and above which the served version alerts."""
    from shipyard.errors import ShipyardError

    chosen = policy.serving.decision_threshold
    if chosen != "at_budget":
        return float(chosen)
    if tags.threshold_at_budget is None:
        raise ShipyardError(
            "serving.decision_threshold is at_budget, but the version has no tag "
            f"{TAG['threshold_at_budget']}"
        )
    return tags.threshold_at_budget


def own_buckets(name: str, version: Any) -> tuple[float, ...]:
    """The version's reference score quantiles, recorded at registration."""
    from shipyard.errors import ShipyardError

    bounds = VersionTags.of(version).score_buckets
    if bounds is None:
        raise ShipyardError(
            f"package: {name} version {version.version} has no tag {TAG['score_buckets']} "
            "(registered before score buckets existed; register it again)"
        )
    try:
        return check_bounds(bounds)
    except ValueError as err:
        raise ShipyardError(
            f"package: {name} version {version.version}: tag {TAG['score_buckets']}: {err}"
        ) from None


def comparison_buckets(name: str, version: Any) -> tuple[float, ...]:
    """Buckets a package of `version` is built with: those @champion is served with.

    A canary and the stable it is judged against must count scores in the same buckets.
    The champion itself, or a first model, gets its own reference quantiles.
    """
    from shipyard import registry

    champion = registry.version_by_alias(name, registry.CHAMPION)
    if champion is None or str(champion.version) == str(version.version):
        return own_buckets(name, version)
    served = VersionTags.of(champion).served_buckets
    return check_bounds(served) if served else own_buckets(name, champion)


def _field_ranges(name: str, version: str, tags: VersionTags) -> dict[str, tuple[float, float]]:
    from shipyard.errors import ShipyardError

    if tags.field_ranges is None:
        raise ShipyardError(
            f"{name} version {version} has no tag {TAG['field_ranges']} (field ranges); "
            "register it again with `dvc repro`"
        )
    return tags.field_ranges


def spec_for(
    name: str, version: Any, policy: Policy, score_buckets: tuple[float, ...] | None = None
) -> ServingSpec:
    from shipyard import registry

    tags = VersionTags.of(version)
    number = str(version.version)
    return ServingSpec(
        model_name=name,
        model_version=number,
        bento_model=f"{name}:v{number}",
        fields=registry.signature(name, number),
        field_ranges=_field_ranges(name, number, tags),
        threshold=decision_threshold(policy, tags),
        labels={
            "model_name": name,
            "model_version": number,
            "run_id": str(version.run_id),
            "git_sha": tags.git_sha,
            "data_hash": tags.data_hash,
        },
        max_batch=policy.serving.max_batch,
        max_body_bytes=policy.serving.max_body_bytes,
        max_latency_ms=policy.serving.max_latency_ms,
        score_buckets=score_buckets or comparison_buckets(name, version),
    )


def _import_model(spec: ServingSpec) -> None:
    import bentoml

    try:
        bentoml.models.get(spec.bento_model)
        return
    except bentoml.exceptions.NotFound:
        pass
    progress("package", f"importing models:/{spec.model_name}/{spec.model_version} into BentoML")
    bentoml.mlflow.import_model(
        spec.bento_model,
        f"models:/{spec.model_name}/{spec.model_version}",
        labels=spec.labels,
    )


def _context(spec: ServingSpec, ctx: Path) -> str:
    """Write the build context; returns the content hash that versions the Bento."""
    for path in _serving_files():  # the service's import closure, not the whole project
        target = ctx / path.relative_to(PACKAGE_ROOT.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (ctx / ENTRY).write_text(ENTRY_SOURCE)
    spec.write(ctx / SPEC_FILE)
    (ctx / "requirements.txt").write_text(serving_requirements(LOCK_FILE.read_text()))
    digest = hashlib.sha256()
    for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
        digest.update(path.relative_to(ctx).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def package(
    name: str, ref: str, policy: Policy, score_buckets: tuple[float, ...] | None = None
) -> str:
    """Import the version and build its Bento (or find the identical one); returns the tag.

    `score_buckets` defaults to `comparison_buckets`; a deployment passes the buckets its
    running stable already counts in.
    """
    import bentoml

    from shipyard import registry

    use_local_store()
    version = registry.resolve(name, ref)
    spec = spec_for(name, version, policy, score_buckets)
    _import_model(spec)
    with tempfile.TemporaryDirectory(prefix="shipyard-bento-") as tmp:
        ctx = Path(tmp)
        tag = f"{name}-service:v{spec.model_version}-{_context(spec, ctx)}"
        try:
            bentoml.get(tag)
            progress("package", f"{tag} already built")
            return tag
        except bentoml.exceptions.NotFound:
            pass
        progress("package", f"building {tag}")
        bento_name, bento_version = tag.split(":")
        bentoml.bentos.build(
            service=f"{ENTRY.removesuffix('.py')}:PredictionService",
            name=bento_name,
            version=bento_version,
            labels=spec.labels,
            description=f"{name} version {spec.model_version}, packaged by shipyard",
            include=[ENTRY, SPEC_FILE, "shipyard/**/*.py", "requirements.txt"],
            python={"requirements_txt": "requirements.txt", "lock_packages": False},
            models=[spec.bento_model],
            build_ctx=str(ctx),
        )
    # Drift reports name the Bento that served the version they describe.
    registry.set_version_tags(
        name,
        spec.model_version,
        {TAG["bento_tag"]: tag, TAG["served_buckets"]: dump_bounds(spec.score_buckets)},
    )
    return tag


def served_buckets(tag: str) -> tuple[float, ...]:
    """The score buckets a built Bento counts in, from the spec inside it."""
    import bentoml

    use_local_store()
    path = Path(bentoml.get(tag).path) / "src" / SPEC_FILE
    spec = ServingSpec.model_validate_json(path.read_text())
    return spec.score_buckets
