"""A check command for loop tests: exit 0 when every named file exists (relative to the cwd)."""

import sys
from pathlib import Path

missing = [name for name in sys.argv[1:] if not Path(name).exists()]
print("missing: " + ", ".join(missing) if missing else "all there")
sys.exit(1 if missing else 0)
