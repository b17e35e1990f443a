"""Section (a): seconds for one exact SeqLip factor (``time_exact_factor``) at a given width.

``python -m bench.exact N SEED OUT.json`` — run in its own process so the parent can stop it."""
from __future__ import annotations

import json
import sys


def main(argv=None) -> int:
    n, seed, out = (sys.argv[1:] if argv is None else argv)
    from lipgraph.certify.seqlip_chain import time_exact_factor
    seconds, value = time_exact_factor(int(n), int(seed))
    with open(out, "w") as fh:
        json.dump({"n": int(n), "seed": int(seed), "seconds": seconds, "value": value}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
