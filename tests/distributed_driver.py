"""Run several ``p2p`` commands in one process of a ``torchrun`` job (one interpreter start-up
for the whole sequence): ``python -m torch.distributed.run --nproc_per_node 2
tests/distributed_driver.py COMMANDS.json``, the file holding a list of argument lists. Each
command goes through the real entry point, as ``p2p ARGS`` would; a failing command ends the job."""

from __future__ import annotations

import json
import sys


def main() -> int:
    from p2p_cli.cli.app import main as p2p

    for args in json.loads(open(sys.argv[1], encoding="utf-8").read()):
        sys.argv = ["p2p", *args]
        try:
            p2p()
        except SystemExit as exc:
            if exc.code not in (0, None):
                print(f"command failed ({exc.code}): p2p {' '.join(args)}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
