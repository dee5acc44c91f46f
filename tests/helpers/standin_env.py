"""A bare virtualenv in a test's tmp_path, optionally with a stand-in module: an environment the preflight
probes for real (a subprocess running its interpreter), built in a second.

The stand-in ``flash_attn`` is for detection only: it makes ``import flash_attn`` succeed in that environment
and nothing else (no kernels); real flash-attn is a CUDA source build that cannot be installed here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def bare_venv(root: Path, *modules: str) -> Path:
    """``python -m venv --without-pip root``: no packages at all, plus an empty module for each of ``modules``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for name in modules:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text('"""A stand-in for detection only."""\n__version__ = "0+standin"\n')
    return root
