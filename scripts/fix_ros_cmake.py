"""Point the ROS 2 wheels' exported CMake targets at this Python, so colcon can build message packages.

The `ros-jazzy-*` wheels on PyPI were built on another machine, and their `share/**/*.cmake` files name that
machine's Python include folder and numpy include folder (e.g. `/opt/python/cp311-cp311/include/python3.11`).
CMake stops on the first one ("Imported target ... includes non-existent path"). This rewrites every such
path that does not exist here to this interpreter's (`sysconfig` include, `numpy.get_include()`).

Idempotent: a second run finds nothing to change. Run with the venv's interpreter (`make setup` does, only when
../shared/ros2_msgs is present):

    .venv/bin/python scripts/fix_ros_cmake.py [PREFIX]   # PREFIX defaults to this interpreter's sys.prefix
"""

from __future__ import annotations

import argparse
import re
import sys
import sysconfig
from pathlib import Path

# A Python include folder (…/include/python3.11) or a numpy one (…/numpy/_core/include; numpy 1: …/core/include).
# Absolute paths only (never a ${_IMPORT_PREFIX}/... one), ending at a list separator or quote.
PYTHON_INCLUDE = re.compile(r"(?<![^;\"\s])/[^;\"\s$]*/include/python3\.\d+(?=[;\"\s])")
NUMPY_INCLUDE = re.compile(r"(?<![^;\"\s])/[^;\"\s$]*/site-packages/numpy/(?:_core|core)/include(?=[;\"\s])")


def replacements() -> list[tuple[re.Pattern[str], str]]:
    """(pattern, this machine's folder) for the Python and numpy include folders."""
    import numpy

    return [(PYTHON_INCLUDE, sysconfig.get_paths()["include"]), (NUMPY_INCLUDE, numpy.get_include())]


def fix_text(text: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    """text with each non-existent path matching a rule replaced by that rule's folder."""
    for pattern, target in rules:
        text = pattern.sub(lambda m, t=target: m.group(0) if Path(m.group(0)).exists() else t, text)
    return text


def fix_prefix(prefix: Path) -> list[Path]:
    """Rewrite the .cmake files under prefix/share; returns the files changed."""
    rules = replacements()
    changed = []
    for path in sorted((prefix / "share").rglob("*.cmake")):
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        new = fix_text(text, rules)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", nargs="?", type=Path, default=Path(sys.prefix), help="install prefix (the venv)")
    args = parser.parse_args(argv)
    if not (args.prefix / "share").is_dir():
        print(f"fix_ros_cmake: no share/ under {args.prefix}: nothing to do", file=sys.stderr)
        return 0
    for _, folder in replacements():
        if not Path(folder).is_dir():
            print(f"fix_ros_cmake: warning: {folder} does not exist here (Python headers missing?): CMake will "
                  "still refuse the ROS wheels' targets", file=sys.stderr)
    changed = fix_prefix(args.prefix)
    print(f"fix_ros_cmake: {len(changed)} CMake file(s) under {args.prefix / 'share'} now name this Python's "
          "include folders", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
