"""Make `efm_sim` resolve to the package under src/, not to this test folder.

tests/conftest.py puts tests/ on sys.path, so `import efm_sim` would find tests/efm_sim
as a namespace package (the editable-install finder runs after the path finder).
Putting the source folder first makes the regular package win.
"""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[2] / "src" / "efm_sim")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
for _name in [m for m in sys.modules if m == "efm_sim" or m.startswith("efm_sim.")]:
    if getattr(sys.modules[_name], "__file__", None) is None:
        del sys.modules[_name]
