"""Benchmark: how long the conformance checker takes to run a profile against the embedded store.

Starts the store in-process (SQLite in a temporary folder, token required), seeds one example of
each model of the profile, then runs the API levels of `territoire-complet` (L1 to L6; Q is an
observation window, its duration is configured, not measured). Prints checks, duration, HTTP
exchanges and checks per second.

    .venv/bin/python bench/bench_conformance.py [--profile territoire-complet] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conformance.profile import load_profile
from conformance.runner import run
from conformance.targets import EndpointTarget
from tests.conformance.support import TOKEN, model_example, running_store, seed


async def main(profile_name: str, repeat: int) -> None:
    """Run the benchmark and print its figures."""
    profile = load_profile(profile_name)
    only = {cid for cid in profile.selection() if not cid.startswith("Q-")}
    with tempfile.TemporaryDirectory() as tmp:
        async with running_store(Path(tmp) / "store") as url:
            await seed(url, [model_example(m) for m in profile.model_names])
            for i in range(repeat):
                t0 = time.perf_counter()
                report = await run(profile, EndpointTarget(url=url, token=TOKEN, token_source="bench",
                                                           allow_write=True), only=only)
                elapsed = time.perf_counter() - t0
                exchanges = sum(len(r["evidence"]["exchanges"]) for r in report["results"])
                s = report["summary"]
                print(f"run {i + 1}: {s['selected']} checks ({s['pass']} pass, {s['fail']} fail, {s['skip']} skip, "
                      f"{s['error']} error) in {elapsed:.2f} s — {exchanges} HTTP exchanges kept as evidence, "
                      f"{s['selected'] / elapsed:.0f} checks/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="territoire-complet")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.profile, args.repeat))
