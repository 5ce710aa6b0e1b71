"""The versions mistudy relies on: where the code reaches into a dependency's internals, the
range it was tested in is checked when a command starts, and a version outside it stops the
command in one line (not a silent misbehaviour deep inside a study).

* Ray: ``study._tune`` patches ``TuneController.resume`` (new trials of a resumed, moved folder
  must write where the folder is now) and reads Tune's experiment-state JSON;
* MLflow: ``study._ui`` writes the runs view's shared state in the experiment tags the UI of
  this release restores.

``python -m study._versions --exact constraints.txt`` checks that the venv holds exactly the
pinned versions of ray, mlflow, optuna and torch (``make setup`` runs it).
"""

from __future__ import annotations

import sys
from importlib import metadata

__all__ = ["SUPPORTED", "version_problem", "check_supported", "exact_problems"]

# package -> (lowest, first unsupported): the same ranges as pyproject.toml's upper bounds
SUPPORTED = {"ray": ((2, 60), (2, 61)), "mlflow": ((3, 17), (3, 18))}
PINNED = ("ray", "mlflow", "optuna", "torch")


def _parse(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split("+")[0].split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def version_problem(package: str, version: str) -> str | None:
    lo, hi = SUPPORTED[package]
    v = _parse(version)[:2]
    if lo <= v < hi:
        return None
    return (f"{package} {version} is installed; mistudy supports {package} "
            f">={'.'.join(map(str, lo))},<{'.'.join(map(str, hi))} (it relies on its "
            f"internals there): pip install -c constraints.txt -e . (or make setup)")


def check_supported() -> None:
    """:class:`study._folder.StudyError` in one line when ray or mlflow is outside its range."""
    from ._folder import StudyError

    for package in SUPPORTED:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue  # the import that needs it says so
        problem = version_problem(package, version)
        if problem:
            raise StudyError(problem)


def exact_problems(constraints: str) -> list[str]:
    """Each pinned package whose installed version differs from ``constraints``'s."""
    pins = {}
    for line in open(constraints, encoding="utf-8"):
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.lower().split("[")[0]] = version.strip()
    problems = []
    for package in PINNED:
        want = pins.get(package)
        try:
            have = metadata.version(package)
        except metadata.PackageNotFoundError:
            have = "not installed"
        if want is None or have != want:
            problems.append(f"{package}: installed {have}, pinned {want}")
    return problems


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--exact":
        sys.exit("usage: python -m study._versions --exact constraints.txt")
    bad = exact_problems(sys.argv[2])
    for line in bad:
        print(f"version mismatch: {line}", file=sys.stderr)
    if not bad:
        print("pinned versions: " + ", ".join(f"{p} {metadata.version(p)}" for p in PINNED))
    sys.exit(1 if bad else 0)
