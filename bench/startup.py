"""How long the ``bridge`` command takes before it does anything (issue 19: "well under half a
second" for ``--version``, ``--help`` and ``check``).

Runs each command as a whole process, ``--runs`` times after one warm-up, with a minimal
environment (a pseudonym key and a fresh SQLite database), and prints the median wall time and
its ratio to the 0.5 s bound, all from one run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOUND = 0.5
COMMANDS = (["--version"], ["--help"], ["check"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as folder:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "BRIDGE_PSEUDONYM_KEY": secrets.token_hex(32),
            "BRIDGE_DATABASE_URL": f"sqlite:///{Path(folder) / 'bridge.db'}",
        }
        bridge = [sys.executable, "-m", "bridge"]
        subprocess.run([*bridge, "db", "upgrade"], env=env, capture_output=True, check=True)
        for command in COMMANDS:
            times = []
            for run in range(runs + 1):
                start = time.perf_counter()
                subprocess.run([*bridge, *command], env=env, capture_output=True, check=False)
                if run:  # the first run warms the file cache
                    times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(
                f"bridge {' '.join(command):10} median {median:.3f} s of {runs} runs, "
                f"{median / BOUND:.2f} x the {BOUND} s bound"
            )


if __name__ == "__main__":
    main()
