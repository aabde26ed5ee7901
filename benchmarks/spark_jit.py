"""Claim: the tests' Spark JVMs spend about a third less CPU with C1 as their only JIT
compiler (`SPARK_SUBMIT_OPTS=-XX:TieredStopAtLevel=1`, set by `tests/conftest.py`).

The scoring tests start two JVMs (their borrowed session and one `shipyard score --engine
spark`), each living for seconds, where C2's compilations cost more CPU than they return.
Same run, alternating, `RUNS` fresh interpreters each: `scoring.spark.session("local[2]")`,
then a pandas UDF over `ROWS` rows written to parquet and read back grouped, as a scoring
run's shape; the figures are the JVM's CPU and the whole job's wall time:
- ours: with the tests' setting;
- baseline: the JVM's default (tiered C1 and C2), what a user's `shipyard score` keeps.
Needs the Spark extra (`make spark`). Run with `.venv/bin/python -m benchmarks.spark_jit`.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks._timing import alternating_medians, env, scratch

RUNS = 3
ROWS = 300_000
C1_ONLY = "-XX:TieredStopAtLevel=1"
JOB = """
import json, sys, time
import pandas as pd
import psutil
from pyspark.sql.functions import pandas_udf
from shipyard.scoring import spark

start = time.monotonic()
session = spark.session("local[2]")

@pandas_udf("double")
def twice(x: pd.Series) -> pd.Series:
    return x * 2.0

out = sys.argv[1]
session.range(0, int(sys.argv[2])).withColumn("y", twice("id")).write.parquet(out)
back = session.read.parquet(out)
back.groupBy((back.id % 7).alias("k")).count().collect()
wall = time.monotonic() - start
jvm = [p for p in psutil.Process().children(recursive=True) if p.name() == "java"]
cpu = sum(sum(p.cpu_times()[:2]) for p in jvm)  # user + system
print(json.dumps([wall, cpu]))
session.stop()
"""


def one(opts: str | None, run: int) -> tuple[float, float]:
    child = env()
    child.pop("SPARK_SUBMIT_OPTS", None)
    if opts:
        child["SPARK_SUBMIT_OPTS"] = opts
    out = scratch(f"spark-jit-{run}-") / "out"
    done = subprocess.run(
        [sys.executable, "-c", JOB, str(out), str(ROWS)],
        env=child,
        capture_output=True,
        text=True,
        check=True,
    )
    wall, cpu = json.loads(done.stdout.strip().splitlines()[-1])
    return float(wall), float(cpu)


def main() -> None:
    ways = {f"ours: {C1_ONLY}": C1_ONLY, "baseline: the JVM's default": None}
    medians = alternating_medians(ways, RUNS, one)
    print(f"\nA local Spark session and a {ROWS:,}-row UDF job, medians of {RUNS} (alternating)")
    print(f"  {'':<40} {'wall s':>7} {'JVM CPU s':>10}")
    for label, (wall, cpu) in medians.items():
        print(f"  {label:<40} {wall:7.2f} {cpu:10.2f}")
    ours, base = medians.values()
    print(f"  saved per JVM: {base[1] - ours[1]:.2f} s of CPU ({1 - ours[1] / base[1]:.0%})")


if __name__ == "__main__":
    main()
