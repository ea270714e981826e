#!/usr/bin/env python3
"""What search costs writes: the same release binary on two databases, one as the migrations make
it and one with search's parts removed, creates and patches measured on both, alternated.

Search keeps its words in the writing transaction (two generated columns of words, a GIN index on
them, and a trigger that adds new words to the dictionary). Measuring a release without search
against one with it also measures everything else that changed between them; here the only
difference is the schema, so the ratio is what search costs, and nothing else.

    python3 bench/search_cost.py                  # builds the release, then about five minutes
    python3 bench/search_cost.py --rounds 5 --seconds 10
    python3 bench/search_cost.py --substring-indexes   # also drop the trigram indexes of `q`

Each round measures, on each database in turn (the order alternating from round to round), the
INSERT and the UPDATE of the service under pgbench, then POST and PATCH through the service with
wrk, at 32 connections. It prints every round, then the median of each scenario with and without
search and their ratio (the target: writes keep at least 0.85 of their throughput).
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
from pathlib import Path

import run

# What the search migrations added to `book`; the dictionary table stays, unused.
WITHOUT_SEARCH = """
DROP TRIGGER book_words_inserted ON book;
DROP TRIGGER book_words_updated ON book;
DROP INDEX book_words_idx;
ALTER TABLE book DROP COLUMN title_words, DROP COLUMN author_words;
"""
WITHOUT_SUBSTRING_INDEXES = "DROP INDEX book_title_trgm_idx; DROP INDEX book_author_trgm_idx;"
BOOKS = 100_000


class Instance:
    """The release service on a throwaway embedded cluster of its own."""

    def __init__(self, name, work):
        self.name = name
        self.work = work / name.replace(" ", "-")  # a path in a connection string: no spaces
        self.work.mkdir()
        os.chmod(self.work, 0o755)
        port = run.free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, DATA_DIR=str(self.work / "postgres"), BIND=f"127.0.0.1:{port}",
                   RATE_LIMIT="1000000")
        env.pop("DATABASE_URL", None)
        stdout = open(self.work / "stdout", "w+")
        self.process = subprocess.Popen([str(run.BINARY)], env=env, stdout=stdout,
                                        stderr=open(self.work / "stderr", "w"))
        run.wait_ready(self.base, self.process)
        stdout.seek(0)
        self.key = stdout.read().strip().splitlines()[-1]
        self.conninfo = f"host={self.work / 'postgres' / 'run'} port=5432 user=postgres dbname=books"

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def measure(self, n, seconds):
        insert = run.pgbench(self.conninfo, n, seconds, self.work, "insert")
        update = run.pgbench(self.conninfo, n, seconds, self.work, "update", BOOKS)
        post = run.wrk(self.base, n, seconds, self.work, run.lua(
            self.key, "POST", '"/api/v1/books"', {"title": "Benchmark", "author": "wrk", "genre": "Load"}))
        patch = run.wrk(self.base, n, seconds, self.work, run.lua(
            self.key, "PATCH", f'"/api/v1/books/" .. math.random(1, {BOOKS})',
            body_expr='\'{"genre": "Genre \' .. math.random(1, 1000000) .. \'"}\''))
        for row in (post, patch):
            if row["non2xx"]:
                raise SystemExit(f"{self.name}: {row['non2xx']} answers were not 2xx")
        return {"database, INSERT": insert["rps"], "database, UPDATE": update["rps"],
                "POST /api/v1/books": post["rps"], "PATCH /api/v1/books/{id}": patch["rps"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="length of each load")
    parser.add_argument("--connections", "-n", type=int, default=32)
    parser.add_argument("--skip-build", action="store_true", help="use the release binary as it is")
    parser.add_argument("--substring-indexes", action="store_true",
                        help="also drop the trigram indexes that answer the listing's q")
    args = parser.parse_args()
    run.need("cargo", "psql", "pgbench", "wrk")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=run.ROOT, check=True)

    work = Path(tempfile.mkdtemp(prefix="books-search-cost-"))
    os.chmod(work, 0o755)
    instances = []
    try:
        for name in ("with search", "without search"):
            instances.append(Instance(name, work))
            run.seed(instances[-1].conninfo, 1, BOOKS)
        without = instances[1]
        run.psql(without.conninfo, WITHOUT_SEARCH + (WITHOUT_SUBSTRING_INDEXES if args.substring_indexes else ""))
        run.psql(without.conninfo, "VACUUM (ANALYZE) book")

        results = {instance.name: {} for instance in instances}
        for r in range(args.rounds):
            for instance in instances if r % 2 == 0 else reversed(instances):
                for scenario, rps in instance.measure(args.connections, args.seconds).items():
                    results[instance.name].setdefault(scenario, []).append(rps)
                print(f"round {r + 1}, {instance.name}: " + ", ".join(
                    f"{s} {v[-1]:.0f}" for s, v in results[instance.name].items()), flush=True)
    finally:
        for instance in instances:
            instance.stop()
        shutil.rmtree(work, ignore_errors=True)

    dropped = "search's columns, index and trigger" + (" and the substring indexes" if args.substring_indexes else "")
    print(f"\nwithout search: {dropped} dropped; {args.connections} connections, {args.seconds} s a load, "
          f"{args.rounds} rounds alternated, {BOOKS:,} books seeded, medians\n")
    print(f"| {'scenario':<26} | {'with search':>11} | {'without':>9} | {'ratio':>5} |")
    print(f"|{'-' * 28}|{'-' * 13}|{'-' * 11}|{'-' * 7}|")
    for scenario in results["with search"]:
        with_ = statistics.median(results["with search"][scenario])
        without_ = statistics.median(results["without search"][scenario])
        print(f"| {scenario:<26} | {with_:>11.0f} | {without_:>9.0f} | {with_ / without_:>5.2f} |")
    print("\ntarget: POST and PATCH keep at least 0.85 of their throughput without search")


if __name__ == "__main__":
    main()
