"""Moving a registered model from one MLflow store to another (the laptop's sqlite file to
the team server), with what Shipyard keeps on it.

MLflow's own mlflow-export-import (1.2) predates aliases and logged models and imports
databricks_cli, so this is built on `MlflowClient`. Per version, ascending: its run and its
pipeline run (params, metric histories, tags, every artifact: frozen test sets, references,
decision records), its logged model (artifacts, params, tags), then the version itself with
its number, tags and description. Aliases move last, once every version they name is there.

Run and model ids change on the way. Tag values that name an old id (`shipyard.run_id`,
`shipyard.pipeline_run_id`, `runs:/<id>/...` URIs) are rewritten to the new one. A grant signs
the run id, so a grant that verifies at the source is signed again for the new run, with its
original time and value; one that does not verify is copied as it is and keeps failing. On any
error everything created on the target is deleted again: the model moves whole or not at all.

Setting the aliases on the target fires its webhooks like any alias change: the receiver then
verifies the re-signed grants and deploys `@champion` as it would after a promotion.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard import grant
from shipyard.errors import ShipyardError

log = logging.getLogger(__name__)

SIGNATURE = ".signature"
_BATCH = 100  # MLflow's limit on params and tags per log_batch call
_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]+)$")


@dataclass
class Moved:
    """What a move created on the target, for the report and for undoing it."""

    model: str
    versions: list[str] = field(default_factory=list)
    fillers: list[str] = field(default_factory=list)  # made and deleted to keep numbers
    runs: dict[str, str] = field(default_factory=dict)  # source run id -> target run id
    models: dict[str, str] = field(default_factory=dict)  # source model id -> target model id
    aliases: dict[str, str] = field(default_factory=dict)
    resigned: int = 0
    unverified: int = 0
    registered: bool = False
    experiments: dict[str, str] = field(default_factory=dict)

    def rewrite(self, value: str) -> str:
        """`value` with every source id it names replaced by its target id."""
        for old, new in (*self.runs.items(), *self.models.items()):
            value = value.replace(old, new)
        return value


def _chunks(items: list[Any], size: int = _BATCH) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Transfer:
    """One move of `model` from `source` to `target` (tracking URIs, registry alike)."""

    def __init__(
        self, model: str, source: str, target: str, say: Callable[[str], None] = print
    ) -> None:
        from shipyard import registry

        if source == target:
            raise ShipyardError(f"move: source and target are the same store ({source})")
        self.model, self.source_uri, self.target_uri, self.say = model, source, target, say
        self.src = registry.client(source)
        self.dst = registry.client(target)
        self.moved = Moved(model)

    def run(self) -> Moved:
        from mlflow.exceptions import MlflowException

        versions = self._source_versions()
        key = grant.key()
        if key is None and any(k.endswith(SIGNATURE) for v in versions for k in v.tags):
            raise ShipyardError(
                f"move: {self.model} carries signed decisions and {grant.KEY_ENV} is not set; "
                "they cannot be verified, so they cannot be signed for the new runs"
            )
        try:
            self.dst.get_registered_model(self.model)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        else:
            raise ShipyardError(
                f"move: {self.model} already exists on {self.target_uri}; nothing was moved"
            )
        try:
            self._copy(versions, key)
        except BaseException:
            self.undo()
            raise
        return self.moved

    def _source_versions(self) -> list[Any]:
        from mlflow.exceptions import MlflowException

        try:
            self.src.get_registered_model(self.model)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise ShipyardError(
                    f"move: no registered model {self.model} in {self.source_uri}"
                ) from None
            raise
        found = self.src.search_model_versions(f"name='{self.model}'")
        return sorted(found, key=lambda v: int(v.version))

    def _copy(self, versions: list[Any], key: str | None) -> None:
        registered = self.src.get_registered_model(self.model)
        self.dst.create_registered_model(
            self.model,
            tags=dict(registered.tags),
            description=registered.description or None,
        )
        self.moved.registered = True
        for mv in versions:
            self._version(mv, key)
        for alias, version in sorted(dict(registered.aliases).items()):
            self.dst.set_registered_model_alias(self.model, alias, version)
            self.moved.aliases[alias] = str(version)
        self.say(
            f"move: {self.model}: {len(versions)} versions, {len(self.moved.runs)} runs, "
            f"aliases {self.moved.aliases or 'none'} -> {self.target_uri}"
        )

    def _version(self, mv: Any, key: str | None) -> None:
        run_id = self._run(mv.run_id) if mv.run_id else None
        source = str(mv.source)
        found = _MODEL_URI.match(source)
        model_id = None
        if found:
            model_id = self._logged_model(found.group(1))
            source = f"models:/{model_id}"
        target_version = self._next_number(int(mv.version), source, run_id, model_id)
        tags = self._tags(mv, run_id, key)
        created = self.dst.create_model_version(
            self.model,
            source,
            run_id=run_id,
            tags=tags,
            description=mv.description or None,
            model_id=model_id,
        )
        if str(created.version) != target_version:
            raise ShipyardError(
                f"move: {self.model} v{mv.version} became v{created.version} on the target "
                "(another writer registered versions meanwhile)"
            )
        self.moved.versions.append(str(created.version))
        self.say(f"move: {self.model} v{mv.version} (run {mv.run_id} -> {run_id})")

    def _next_number(self, wanted: int, source: str, run_id: str | None, model_id: Any) -> str:
        """Fill any gap the source's deleted versions left, so every number stays the same:
        decision records, audit lines and deployments name versions by number. The SQL store
        never reuses a deleted version's number."""
        while True:
            latest = self.dst.search_model_versions(f"name='{self.model}'")
            have = max((int(v.version) for v in latest), default=0)
            # deleted versions are not listed: the next number is what a probe gets
            made = [int(v) for v in (*self.moved.versions, *self.moved.fillers)]
            have = max([have, *made])
            if have + 1 >= wanted:
                return str(wanted)
            filler = self.dst.create_model_version(
                self.model, source, run_id=run_id, model_id=model_id
            )
            self.dst.delete_model_version(self.model, filler.version)
            self.moved.fillers.append(str(filler.version))

    def _tags(self, mv: Any, run_id: str | None, key: str | None) -> dict[str, str]:
        tags = {k: self.moved.rewrite(str(v)) for k, v in dict(mv.tags).items()}
        for name in [k.removesuffix(SIGNATURE) for k in mv.tags if k.endswith(SIGNATURE)]:
            held = grant.verified(mv, name, key) if key is not None else None
            if held is None:  # kept as it was: it did not verify there, it won't here
                tags[name + SIGNATURE] = str(mv.tags[name + SIGNATURE])
                tags[name] = str(mv.tags.get(name, ""))
                self.moved.unverified += 1
                log.warning("move: v%s: %s does not verify; copied unverified", mv.version, name)
                continue
            assert key is not None
            signed = grant.Grant(
                self.model, str(mv.version), str(run_id), name, held.value, held.time
            )
            tags.update(signed.tags(key))
            self.moved.resigned += 1
        return tags

    def _experiment(self, experiment_id: str) -> str:
        if experiment_id in self.moved.experiments:
            return self.moved.experiments[experiment_id]
        name = self.src.get_experiment(experiment_id).name
        found = self.dst.get_experiment_by_name(name)
        if found is None:
            new = self.dst.create_experiment(name)
        else:
            if found.lifecycle_stage == "deleted":
                self.dst.restore_experiment(found.experiment_id)
            new = found.experiment_id
        self.moved.experiments[experiment_id] = new
        return new

    def _run(self, run_id: str) -> str:
        """The target's copy of `run_id` (and of its parent first), made once."""
        from mlflow.entities import Metric, Param, RunTag

        if run_id in self.moved.runs:
            return self.moved.runs[run_id]
        run = self.src.get_run(run_id)
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            self._run(parent)
        experiment = self._experiment(run.info.experiment_id)
        new = self.dst.create_run(
            experiment, start_time=run.info.start_time, run_name=run.info.run_name
        ).info.run_id
        self.moved.runs[run_id] = new
        tags = [
            RunTag(k, self.moved.rewrite(v))
            for k, v in run.data.tags.items()
            if k != "mlflow.runName"
        ]
        params = [Param(k, v) for k, v in run.data.params.items()]
        metrics = [
            Metric(m.key, m.value, m.timestamp, m.step)
            for name in run.data.metrics
            for m in self.src.get_metric_history(run_id, name)
        ]
        for batch in _chunks(params):
            self.dst.log_batch(new, params=batch)
        for batch in _chunks(tags):
            self.dst.log_batch(new, tags=batch)
        for batch in _chunks(metrics, 1000):
            self.dst.log_batch(new, metrics=batch)
        with tempfile.TemporaryDirectory(prefix="shipyard-move-") as tmp:
            if self.src.list_artifacts(run_id):
                local = self.src.download_artifacts(run_id, "", tmp)
                self.dst.log_artifacts(new, local)
        self.dst.set_terminated(new, run.info.status, run.info.end_time)
        return new

    def _logged_model(self, model_id: str) -> str:
        import mlflow.artifacts

        if model_id in self.moved.models:
            return self.moved.models[model_id]
        logged = self.src.get_logged_model(model_id)
        run_id = self._run(logged.source_run_id) if logged.source_run_id else None
        experiment = self._experiment(logged.experiment_id)
        created = self.dst.create_logged_model(
            experiment,
            name=logged.name,
            source_run_id=run_id,
            tags={k: v for k, v in logged.tags.items() if not k.startswith("mlflow.")},
            params=dict(logged.params),
            model_type=logged.model_type,
        )
        self.moved.models[model_id] = created.model_id
        with tempfile.TemporaryDirectory(prefix="shipyard-move-") as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=logged.artifact_location,
                    dst_path=tmp,
                    tracking_uri=self.source_uri,
                )
            )
            mlmodel = local / "MLmodel"
            if mlmodel.exists():  # it names its run and model: point them at the copies
                mlmodel.write_text(self.moved.rewrite(mlmodel.read_text()))
            self.dst.log_model_artifacts(created.model_id, str(local))
        self.dst.finalize_logged_model(created.model_id, "READY")
        return str(created.model_id)

    def undo(self) -> None:
        """Delete what this move created on the target; errors are logged, not raised, so
        the first error stays the one reported."""
        steps: list[tuple[str, Callable[[str], Any]]] = []
        if self.moved.registered:
            steps.append((self.model, self.dst.delete_registered_model))
        steps += [(new, self.dst.delete_logged_model) for new in self.moved.models.values()]
        steps += [(new, self.dst.delete_run) for new in self.moved.runs.values()]
        for what, delete in steps:
            try:
                delete(what)
            except Exception as err:  # best effort: the first error stays the one reported
                log.warning("move: could not delete %s from the target: %s", what, err)
        self.say(f"move: {self.model}: nothing kept on {self.target_uri}")


def move(model: str, source: str, target: str, say: Callable[[str], None] = print) -> Moved:
    return Transfer(model, source, target, say).run()
