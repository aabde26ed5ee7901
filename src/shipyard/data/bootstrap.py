"""Make exactly the data that data.dvc names available, even with no DVC remote in reach.

Order: already there -> `dvc pull` from a configured remote -> regenerate with the seeded
simulator and prove, through `dvc add`, that the result hashes to what data.dvc records.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from shipyard.artifacts import atomic_dir, progress
from shipyard.data.simulator import Simulator, write_csv
from shipyard.errors import ShipyardError

DATA_DIR = "data"
DVC_FILE = "data.dvc"
DEFAULT_FILE = "transactions.csv"
DEFAULT_DAYS = 120


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, check=False
    )


def data_state(root: Path) -> str:
    """'ok', 'deleted', 'not in cache' or 'modified', as `dvc status` reports data/."""
    result = _dvc(root, "status", DVC_FILE, "--json")
    if result.returncode != 0:
        raise ShipyardError(f"{DVC_FILE}: dvc status failed: {result.stderr.strip()}")
    status = json.loads(result.stdout or "{}")
    for entry in status.get(DVC_FILE, []):
        change = entry.get("changed outs", {}).get(DATA_DIR)
        if change:
            return str(change)
    return "ok"


def generate_default(target: Path) -> None:
    """The default dataset: 120 days of the default simulated world."""
    progress("data", f"simulating {DEFAULT_DAYS} days of card transactions")
    frame = Simulator().period(0, DEFAULT_DAYS)
    with atomic_dir(target) as scratch:
        write_csv(frame, str(scratch / DEFAULT_FILE))
    progress("data", f"wrote {len(frame)} transactions to {target / DEFAULT_FILE}")


def _commit_matching(root: Path) -> None:
    """Cache data/ through `dvc add`, and undo everything if its hash differs from data.dvc."""
    dvc_file = root / DVC_FILE
    recorded = dvc_file.read_text()
    result = _dvc(root, "add", DATA_DIR)
    if result.returncode != 0:
        raise ShipyardError(f"{DATA_DIR}: dvc add failed: {result.stderr.strip()}")
    if dvc_file.read_text() != recorded:
        dvc_file.write_text(recorded)
        raise ShipyardError(
            f"{DATA_DIR}: content does not hash to what {DVC_FILE} records; "
            "restore it with `dvc checkout` or `dvc pull`"
        )


def bootstrap(root: Path = Path()) -> str:
    if not (root / DVC_FILE).exists():
        raise ShipyardError(f"{DVC_FILE}: not found in {root.resolve()}")
    target = root / DATA_DIR
    if target.exists():
        state = data_state(root)
        if state == "ok":
            return "present"
        if state == "not in cache":  # e.g. copied in by hand: accept it if the hash matches
            _commit_matching(root)
            return "cached"
        raise ShipyardError(f"{DATA_DIR}: {state} relative to {DVC_FILE}; refusing to overwrite it")
    remotes = _dvc(root, "remote", "list").stdout.strip()
    if remotes:
        progress("data", "pulling data from the DVC remote")
        if _dvc(root, "pull", DVC_FILE).returncode == 0:
            return "pulled"
        progress("data", "dvc pull failed; regenerating from the simulator instead")
        shutil.rmtree(target, ignore_errors=True)
    generate_default(target)
    try:
        _commit_matching(root)
    except ShipyardError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return "generated"
