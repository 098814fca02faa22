"""The Redis outage drill at full length: steady signed traffic for cached keys, a
private redis-server killed for 10 s and restarted; counts requests ok and failed,
the readiness states seen, and whether replay protection continued per instance.

    python3 bench/redis_outage.py [--seconds 10]

(The test suite runs the same drill for 2.5 s: tests/test_redis_tier.py.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_redis_tier import redis_outage  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    result = asyncio.run(redis_outage(Path(tempfile.mkdtemp(prefix="gw-outage-")),
                                      args.seconds))
    print(json.dumps(result, indent=2))
