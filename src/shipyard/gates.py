"""Gates: pure checks that every gate-keeping step (register, promote, canary) reuses."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    op: str = ""  # ">=" or "<=" for numeric gates, "test" for a statistical test
    detail: str = ""

    def describe(self) -> str:
        word = "passed" if self.passed else "failed"
        if self.op == "test":  # a statistical test: its detail says what was compared
            return f"{self.gate} {self.detail}: {word}"
        if self.value is None or self.threshold is None:
            return f"{self.gate} {self.detail}: {word}"
        return f"{self.gate} {self.value:.4f} {self.op} {self.threshold:.4f}: {word}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_thresholds(
    values: dict[str, float], minimum: dict[str, float], maximum: dict[str, float]
) -> list[GateResult]:
    """One result per configured bound; a metric missing from `values` fails its gate."""
    results = []
    for name, bound in sorted(minimum.items()):
        value = values.get(name, float("nan"))
        results.append(GateResult(f"min_{name}", bool(value >= bound), value, bound, ">="))
    for name, bound in sorted(maximum.items()):
        value = values.get(name, float("nan"))
        results.append(GateResult(f"max_{name}", bool(value <= bound), value, bound, "<="))
    return results


def first_failure(results: list[GateResult]) -> GateResult | None:
    return next((r for r in results if not r.passed), None)
