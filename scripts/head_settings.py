"""Does a running Ray head serve the settings this shell asks for?

    python scripts/head_settings.py record FILE   # after starting a head: remember its settings
    python scripts/head_settings.py check FILE    # before reusing a running head

Serve replicas take RNNSERVE_* from the head's environment, not from the shell that runs
`serve run`: reusing a head started with other settings would serve another storage or
database, or leave writes open that this shell meant to protect with RNNSERVE_API_KEY. The file
holds a hash per setting, never a value. `check` exits 1 naming the settings that differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from registry import Settings


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    command, path = argv[0], Path(argv[1])
    mine = Settings.from_env().fingerprints()
    if command == "record":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(mine))
        return 0
    try:
        head = json.loads(path.read_text())
    except (OSError, ValueError):
        head = {}
    differ = sorted(name for name in mine if head.get(name) != mine[name])
    if differ:
        print(f"A Ray head is already running with other settings ({', '.join(differ)} differ"
              " or are unknown). Run `make stop` first, then `make run` again.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
