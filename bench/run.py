#!/usr/bin/env python3
"""The books-api benchmark: the service against the machine's own ceilings.

One run, one machine, loopback only, every load bounded in time. At each number of connections
(32 and 256 by default) it measures

* the ceilings: pgbench (prepared protocol) running the service's own statements (the SELECT by
  primary key, the listing's page query, the INSERT of a create and the UPDATE of a patch), and
  wrk on /healthz of the release service (HTTP alone, no database);
* the bounds: for a read, 1 / (1/db + 1/http), what the database and HTTP can do together on
  shared cores (a server that makes one query per request cannot pass it); for a write, the
  write ceiling itself;
* the release service, auth on as in production, under wrk: GET by id (random ids), GET list
  (limit 20, plain and gzip-compressed, on one connection and many), POST create, PATCH (a new
  genre every time), on 10,000 books;
* the same scenarios and ceilings again on 1,000,000 books (seeded in the database with one
  INSERT … SELECT, not through the API), at the first number of connections, with deep paging
  (page 1 against page 1,000) and search;

and prints one table (requests/s, p50, p99, ratio to the scenario's bound, errors and non-2xx),
the targets, and the service's peak RSS. Prerequisites: cargo, the PostgreSQL server programs,
psql, pgbench, wrk.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "books-api"
COLUMNS = ('"book"."id", "book"."title", "book"."author", "book"."genre", "book"."version", '
           '"book"."created_at", "book"."updated_at", "book"."isbn", "book"."published_year"')
# The statements diesel sends (see PostgresBookRepository), with pgbench variables for the binds.
STATEMENTS = {
    # A read by primary key: the least a server that makes one query per request must do.
    "select": f'\\set id random(1, IDS)\nSELECT {COLUMNS} FROM "book" WHERE ("book"."id" = :id) LIMIT 1;\n',
    # The first page of the listing, sorted by id.
    "list": f'SELECT {COLUMNS} FROM "book" ORDER BY id ASC LIMIT 21;\n',
    # A create.
    "insert": f'INSERT INTO "book" ("title", "author", "genre") VALUES (\'Benchmark\', \'pgbench\', \'Load\') RETURNING {COLUMNS};\n',
    # A search (the function SEARCH_CEILING defines), over the queries the benchmark sends.
    "search": '\\set i random(1, 60)\nSELECT bench_search(q) FROM bench_query WHERE id = :i;\n',
    # A patch that changes the genre.
    "update": f'\\set id random(1, IDS)\n\\set g random(1, 1000000)\nUPDATE "book" SET "genre" = \'Genre \' || :g, "version" = ("book"."version" + 1), "updated_at" = CURRENT_TIMESTAMP WHERE (("book"."id" = :id) AND ("book"."genre" IS DISTINCT FROM \'Genre \' || :g)) RETURNING {COLUMNS};\n',
}


def need(*programs):
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (Debian: apt-get install wrk postgresql postgresql-contrib)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base, process):
    for _ in range(240):
        if process.poll() is not None:
            sys.exit("the service exited before it was ready")
        try:
            urllib.request.urlopen(f"{base}/readyz", timeout=1)
            return
        except Exception:
            time.sleep(0.25)
    sys.exit("the service did not become ready")


def psql(conninfo, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


# The words seeded titles are made of, and the names of seeded authors: a catalogue whose words
# repeat as real ones do, for search to work on.
WORDS = """the of and a in to love war night house city dark light last lost secret garden river sea
sun moon king queen road time death life world man woman girl boy children dream fire winter
summer shadow heart blood stone island mountain game story history book letter day year old new
great little white black red silent golden wind hall tale song pride prejudice emma persuasion
expectations wuthering heights frankenstein dracula gatsby mockingbird hobbit silmarillion
wonderland treasure jekyll machine darkness ulysses lighthouse beloved solomon slaughterhouse
lolita handmaid dune foundation robot earthsea neuromancer androids castle hyperion galaxy
meridian remains midnight atonement soledad quijote bovary etranger miserables mousquetaires
swann prince germinal tristesse verwandlung zauberberg siddhartha steppenwolf karamazov karenina
margarita zhivago souls solaris lightness norwegian chronicle alchemist blindness hunger
thrones potter philosopher chamber orient baskervilles journey harbour empire kingdom forest
desert valley ocean empress wolf raven tiger dragon serpent falcon orchard meadow lantern mirror
crown sword tower bridge window garden engine voyage kitchen library""".split()
FIRST_NAMES = "John Mary James Anna Robert Maria David Laura Peter Sarah Thomas Emily Michael Clara George Alice".split()
LAST_NAMES = """Smith Miller Brown Wilson Taylor Moore Clark Lewis Walker Young King Wright Hill Green
Baker Hall Austen Dickens Tolstoy Herbert Orwell Woolf Murakami Borges Camus Kafka""".split()


def sql_array(words):
    return "ARRAY[" + ",".join(f"'{w}'" for w in words) + "]"


def seed(conninfo, first_id, count):
    words, firsts, lasts = sql_array(WORDS), sql_array(FIRST_NAMES), sql_array(LAST_NAMES)
    n = len(WORDS)
    # Two to five words a title, picked by multiplicative hashes of the row number.
    psql(conninfo, f"""
        INSERT INTO book (title, author, genre)
        SELECT array_to_string((ARRAY[
                   w[1 + (g * 2654435761 % {n})], w[1 + (g * 40503 % {n})],
                   w[1 + (g * 2246822519 % {n})], w[1 + (g * 3266489917 % {n})],
                   w[1 + (g * 668265263 % {n})]])[1:2 + g % 4], ' '),
               f[1 + (g * 374761393 % {len(FIRST_NAMES)})] || ' ' || l[1 + (g * 1274126177 % {len(LAST_NAMES)})],
               CASE WHEN g % 3 = 0 THEN NULL ELSE 'Genre ' || (g % 40) END
        FROM generate_series({first_id}::bigint, {first_id + count - 1}) g,
             (SELECT {words} AS w, {firsts} AS f, {lasts} AS l) AS lists;""")
    # Every table the rows went into (the books, the feed's changes, search's words) vacuumed
    # and analyzed now, and the checkpoint their WAL calls for taken now: otherwise autovacuum
    # and the checkpointer do this work during the next loads, on the same two cores (after the
    # million-row copy even /healthz, which reads no database, lost 40 %). A catalogue is
    # measured in its steady state, not in the minute after a bulk load.
    # The service numbers the new changes of the feed in the background, which rewrites each of
    # their rows: vacuumed before that, the feed's table had a million dead rows again, and the
    # numbering and then autovacuum's pass over them took the first 35 s of the loads (GET by id
    # at a million books 21,000-25,000 requests/s during them, 40,000-42,000 after).
    wait_until_numbered(conninfo)
    psql(conninfo, "VACUUM (ANALYZE)")
    psql(conninfo, "CHECKPOINT")


def wait_until_numbered(conninfo, seconds=600):
    """Waits until the service has numbered every change of the feed (see `seed`)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pending = subprocess.run(
            ["psql", "-At", "-d", conninfo, "-c", "SELECT EXISTS (SELECT 1 FROM book_change WHERE seq IS NULL)"],
            check=True, capture_output=True, text=True).stdout.strip()
        if pending == "f":
            return
        time.sleep(1)
    sys.exit(f"the service did not number the feed's changes within {seconds} s")


def search_queries(count=60):
    """What people type: two or three catalogue words, one of five letters or more mistyped (two
    letters swapped), and one query in three cut short as the user types."""
    rng = random.Random(7)
    queries = []
    while len(queries) < count:
        words = [rng.choice(WORDS) for _ in range(rng.choice((2, 3)))]
        long = [i for i, w in enumerate(words) if len(w) >= 5]
        if long:
            i = rng.choice(long)
            w = words[i]
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        if rng.random() < 1 / 3 and len(words[-1]) > 4:
            words[-1] = words[-1][:3]
        queries.append(" ".join(words))
    return queries


# The search's statements in one round trip, for pgbench: the query's words folded, each word's
# expansions (typos by trigram and Levenshtein; the last word's prefixes), and each word's
# candidates (at most 500), as crates/adapters/src/books/search.rs sends them. What the service
# adds (confirming distances, ranking, HTTP) is its own cost.
SEARCH_CEILING = """
CREATE OR REPLACE FUNCTION bench_search(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    words text[] := book_search_words(q);
    n int := coalesce(array_length(words, 1), 0);
    expanded text[];
    found bigint := 0;
    counted bigint;
BEGIN
    PERFORM set_config('pg_trgm.similarity_threshold', '0.1', true);
    FOR i IN 1..n LOOP
        SELECT array_agg(word) INTO expanded FROM (
            SELECT words[i] AS word
            UNION ALL
            SELECT word FROM search_word
            WHERE char_length(words[i]) >= 5 AND word % words[i] AND word <> words[i]
              AND levenshtein_less_equal(word, words[i], CASE WHEN char_length(words[i]) >= 9 THEN 3 ELSE 2 END)
                  <= CASE WHEN char_length(words[i]) >= 9 THEN 3 ELSE 2 END
            UNION ALL
            (SELECT word FROM search_word WHERE i = n AND word LIKE words[i] || '%' AND word <> words[i]
             ORDER BY word LIMIT 200)) AS e;
        SELECT count(*) INTO counted FROM (
            SELECT id, title, author, genre, isbn, published_year, version, created_at, updated_at,
                   title_words, author_words
            FROM book WHERE (title_words || author_words) && expanded LIMIT 500) AS c;
        found := found + counted;
    END LOOP;
    RETURN found;
END
$$;
CREATE TABLE IF NOT EXISTS bench_query (id int PRIMARY KEY, q text NOT NULL);
"""


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# The embedded cluster accepts 100 connections; the service's pool needs some of them.
PGBENCH_MAX_CLIENTS = 80


def pgbench(conninfo, clients, seconds, work, statement="select", ids=10_000):
    """`statement` under pgbench; the books it reads or writes are drawn from ids 1 to `ids`."""
    script = work / f"{statement}.sql"
    script.write_text(STATEMENTS[statement].replace("IDS", str(ids)))
    logs = work / "pgbench"
    logs.mkdir(exist_ok=True)
    out = subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-c", str(min(clients, PGBENCH_MAX_CLIENTS)), "-j", "2", "-T", str(seconds),
         "-f", str(script), "-l", "--log-prefix", str(logs / "log"), conninfo],
        check=True, capture_output=True, text=True).stdout
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    latencies = []
    for log in logs.glob("log*"):
        for line in log.read_text().splitlines():
            fields = line.split()
            latencies.append(int(fields[2]) / 1000.0)
        log.unlink()
    latencies.sort()
    return {"rps": tps, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "non2xx": 0}


# Counts every answer that is not 2xx (wrk itself counts only 4xx and 5xx), per thread, and
# reports the total: a benchmark that measures redirects or refusals measures nothing.
# Each thread also draws its own random numbers: seeded alike (`os.time()` in every thread's
# state, as until the thirteenth round), wrk's two threads sent the same ids in the same order,
# so every patch was sent twice and the second copy changed nothing (docs/performance.md).
COUNT_NON_2XX = """
local threads = {}
function setup(thread)
    table.insert(threads, thread)
    thread:set("stream", #threads)
end
function init(args)
    non2xx = 0
    math.randomseed(os.time() * 64 + stream)
end
function response(status, headers, body)
    if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
    local total = 0
    for _, thread in ipairs(threads) do total = total + thread:get("non2xx") end
    io.write("NON2XX " .. total .. "\\n")
end
"""


def wrk(url, connections, seconds, work, script=""):
    path = work / "wrk.lua"
    path.write_text(script + COUNT_NON_2XX)
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s", "--latency", "--timeout", "5s",
               "-s", str(path)]
    out = subprocess.run(command + [url], check=True, capture_output=True, text=True).stdout

    def duration_ms(text):
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = duration_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    # wrk's percentiles are corrected for coordinated omission (bench/README.md): its p99 weighs
    # each long stall as the requests a connection would have sent during it.
    p99 = duration_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = int(re.search(r"NON2XX (\d+)", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": non2xx + errors}


def lua(key, method, path_expr, body=None, body_expr=None, gzip=False):
    headers = f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    if body or body_expr:
        headers += 'wrk.headers["Content-Type"] = "application/json"\n'
    if gzip:
        headers += 'wrk.headers["Accept-Encoding"] = "gzip"\n'
    # A JSON string literal is a valid Lua string literal for this ASCII content.
    body_arg = f", nil, {json.dumps(json.dumps(body))}" if body else ""
    if body_expr:
        body_arg = f", nil, {body_expr}"
    return (f"{headers}"
            f"request = function() return wrk.format(\"{method}\", {path_expr}{body_arg}) end\n")


def sequential(port, paths, seconds, key):
    """One client on one kept-alive connection, one request at a time, for `seconds`: requests/s
    and exact percentiles (p95 included)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, non2xx, i = [], 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        conn.request("GET", paths[i % len(paths)], headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        response.read()
        latencies.append((time.perf_counter() - start) * 1000)
        non2xx += not 200 <= response.status < 300
        i += 1
    conn.close()
    latencies.sort()
    return {"rps": len(latencies) / seconds, "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95), "p99": percentile(latencies, 99), "non2xx": non2xx}


def combined(runs):
    """Runs of one load as one: mean rate and p50, the worst p99, every error."""
    return {"rps": statistics.mean(r["rps"] for r in runs),
            "p50": statistics.mean(r["p50"] for r in runs),
            "p99": max(r["p99"] for r in runs),
            "non2xx": sum(r["non2xx"] for r in runs)}


def interleaved(loads, seconds, rounds=2):
    """Each of `loads` (name -> a function of the seconds to run) in turn, `rounds` times, for
    `seconds` in all: whatever the machine does during one stretch falls on every load alike."""
    runs = {name: [] for name in loads}
    for _ in range(rounds):
        for name, load in loads.items():
            PHASE[0] = name
            runs[name].append(load(max(1, seconds // rounds)))
    return {name: combined(r) for name, r in runs.items()}


# What the benchmark is doing now, for the report to say where the service's memory peaked.
PHASE = ["start"]


class PeakWatch:
    """Reads the service's peak RSS five times a second, and notes what was running each time it
    rose: a peak over the target names its cause."""

    def __init__(self, pid):
        self.pid, self.peak, self.where = pid, 0.0, PHASE[0]
        self.stopped = threading.Event()
        threading.Thread(target=self.watch, daemon=True).start()

    def watch(self):
        while not self.stopped.wait(0.2):
            try:
                peak = peak_rss_mib(self.pid)
            except OSError:
                return
            if peak > self.peak + 0.5:
                self.peak, self.where = peak, PHASE[0]


def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", "-n", type=int, nargs="+", default=[32, 256],
                        help="numbers of connections to measure at (default: 32 256)")
    parser.add_argument("--seconds", type=int, default=10, help="length of each load")
    parser.add_argument("--skip-build", action="store_true", help="use the release binary as it is")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--quick", action="store_true", help="only the read ceilings and GET by id")
    parser.add_argument("--no-search", action="store_true",
                        help="leave search out (to measure a release that has none, for a before/after)")
    args = parser.parse_args()
    need("cargo", "psql", "pgbench", "wrk")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)

    work = Path(tempfile.mkdtemp(prefix="books-bench-"))
    os.chmod(work, 0o755)  # as root the cluster runs as an unprivileged user who must enter it
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DATA_DIR=str(work / "postgres"), BIND=f"127.0.0.1:{port}",
               # As in production (logs at their default level, to a file), except that limiting,
               # while still paid for by every request, refuses nothing.
               RATE_LIMIT="1000000")
    env.pop("DATABASE_URL", None)
    stdout = open(work / "stdout", "w+")
    service = subprocess.Popen([str(BINARY)], env=env, stdout=stdout, stderr=open(work / "stderr", "w"))
    try:
        wait_ready(base, service)
        watch = PeakWatch(service.pid)
        stdout.seek(0)
        key = stdout.read().strip().splitlines()[-1]
        conninfo = f"host={work / 'postgres' / 'run'} port=5432 user=postgres dbname=books"
        seed(conninfo, 1, 10_000)
        t = args.seconds
        rows = {}
        def scenarios(n, ids, suffix="", gzip=True):
            """The database's ceilings and the service's scenarios at `n` connections, reading and
            writing books among ids 1 to `ids`; each row named with `suffix`.

            A ratio divides a scenario's rate by ceilings measured at other moments, and this
            machine's speed wanders by half within minutes (neighbours on the same host): measured
            one after the other, a slow minute fell on one side of a ratio only. So each group
            (the reads with their ceilings, then the writes with theirs) is measured in turn, in
            rounds of half the time each, and every ratio compares rates taken side by side.
            Reads come first: the writes' aftermath (WAL, autovacuum) must not fall on them."""
            def get(path, **options):
                return lambda s: wrk(base, n, s, work, lua(key, "GET", path, **options))

            reads = {
                f"{n}: database, SELECT by id{suffix}": lambda s: pgbench(conninfo, n, s, work, "select", ids),
                f"{n}: HTTP alone, /healthz{suffix}": lambda s: wrk(f"{base}/healthz", n, s, work),
                f"{n}: GET /api/v1/books/{{id}}{suffix}": get(f'"/api/v1/books/" .. math.random(1, {ids})'),
            }
            if not args.quick:
                reads[f"{n}: database, list page{suffix}"] = lambda s: pgbench(conninfo, n, s, work, "list")
                reads[f"{n}: GET /api/v1/books?limit=20{suffix}"] = get('"/api/v1/books?limit=20"')
                if gzip:
                    reads[f"{n}: GET /api/v1/books?limit=20, gzip{suffix}"] = get(
                        '"/api/v1/books?limit=20"', gzip=True)
            measured = interleaved(reads, t)
            if not args.quick:
                measured.update(interleaved({
                    f"{n}: database, INSERT (write ceiling){suffix}":
                        lambda s: pgbench(conninfo, n, s, work, "insert"),
                    f"{n}: POST /api/v1/books{suffix}": lambda s: wrk(base, n, s, work, lua(
                        key, "POST", '"/api/v1/books"', {"title": "Benchmark", "author": "wrk", "genre": "Load"})),
                    f"{n}: database, UPDATE (write ceiling){suffix}":
                        lambda s: pgbench(conninfo, n, s, work, "update", ids),
                    f"{n}: PATCH /api/v1/books/{{id}}{suffix}": lambda s: wrk(base, n, s, work, lua(
                        key, "PATCH", f'"/api/v1/books/" .. math.random(1, {ids})',
                        body_expr='\'{"genre": "Genre \' .. math.random(1, 1000000) .. \'"}\'')),
                }, t))
            http = measured[f"{n}: HTTP alone, /healthz{suffix}"]["rps"]

            def ceiling(name):
                row = measured.get(f"{n}: database, {name}{suffix}")
                return row and row["rps"]

            def with_http(name):
                return ceiling(name) and 1 / (1 / ceiling(name) + 1 / http)

            # A read's bound is its statement and HTTP together; a write's, its statement alone.
            bounds = {
                "GET /api/v1/books/{id}": with_http("SELECT by id"),
                "GET /api/v1/books?limit=20": with_http("list page"),
                "GET /api/v1/books?limit=20, gzip": with_http("list page"),
                "POST /api/v1/books": ceiling("INSERT (write ceiling)"),
                "PATCH /api/v1/books/{id}": ceiling("UPDATE (write ceiling)"),
            }
            for name, row in measured.items():
                scenario = name.removeprefix(f"{n}: ").removesuffix(suffix)
                rows[name] = dict(row, bound=bounds.get(scenario))

        for n in args.connections:
            scenarios(n, 10_000)
        if args.quick:
            rss = rss_under_load = peak_rss_mib(service.pid)
            return report(rows, args, rss_under_load, rss, None, watch.where)
        # One connection, one request at a time: where a stall between two writes of one answer
        # shows at once (Nagle's algorithm against the client's delayed ACK: 40 ms an answer).
        for name, row in interleaved({
            f"1: GET /api/v1/books?limit=20{label}":
                lambda s, zipped=zipped: wrk(base, 1, s, work, lua(key, "GET", '"/api/v1/books?limit=20"', gzip=zipped))
            for label, zipped in (("", False), (", gzip", True))
        }, t).items():
            rows[name] = dict(row, bound=None)
        rss_under_load = peak_rss_mib(service.pid)

        # Deep paging: a million rows, page 1 against page 1,000 under the same sort.
        count = get_json(f"{base}/api/v1/books?limit=1&sort=-id")["items"][0]["id"]
        PHASE[0] = "seeding a million books"
        seed(conninfo, count + 1, 1_000_000 - count)
        first = "/api/v1/books?sort=title&limit=20"
        path = first
        PHASE[0] = "walking to page 1,000"
        for _ in range(999):
            path = f"/api/v1/books?limit=20&cursor={get_json(base + path)['next_cursor']}"
        n = args.connections[0]
        # Alternated, in halves (see `interleaved`): measured one after the other, whatever the
        # machine was doing during one of them (the seeding's aftermath, a neighbour's job) fell
        # on one page only, and moved the ratio by ±0.3 from run to run.
        paging = interleaved({url: lambda s, url=url: wrk(base + url, n, s, work) for url in (first, path)}, t)
        rows["deep paging: page 1 (sort=title)"] = dict(paging[first], bound=None)
        rows["deep paging: page 1000 (sort=title)"] = dict(paging[path], bound=None)

        # Every scenario again at a catalogue's size, on the same million books (seeded in the
        # database, not through the API), against ceilings measured on the same data.
        scenarios(n, 1_000_000, SCALE, gzip=False)
        rss = peak_rss_mib(service.pid)
        if args.no_search:
            return report(rows, args, rss_under_load, rss, rows, watch.where)
        # Search at a catalogue's size: the same million books. One client, one search at a
        # time (p95 measured exactly), then the search at the first number of connections
        # against its ceiling: the search's statements under pgbench, combined with HTTP alone.
        psql(conninfo, SEARCH_CEILING)
        queries = search_queries()
        values = ",".join(f"({i + 1}, '{q}')" for i, q in enumerate(queries))
        psql(conninfo, f"DELETE FROM bench_query; INSERT INTO bench_query VALUES {values}")
        psql(conninfo, "VACUUM (ANALYZE) search_word")
        paths = ["/api/v1/books/search?q=" + urllib.parse.quote(q) for q in queries]
        PHASE[0] = "search, 1 client, 1M books"
        rows["search, 1 client, 1M books"] = dict(sequential(port, paths, t, key), bound=None)
        PHASE[0] = f"{n}: database, search statements (1M books)"
        search_db = pgbench(conninfo, n, t, work, "search")
        rows[f"{n}: database, search statements (1M books)"] = dict(search_db, bound=None)
        http_alone = rows[f"{n}: HTTP alone, /healthz"]["rps"]
        table = "paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n"
        PHASE[0] = f"{n}: GET /api/v1/books/search (1M books)"
        rows[f"{n}: GET /api/v1/books/search (1M books)"] = dict(
            wrk(base, n, t, work, table + lua(key, "GET", "paths[math.random(1, #paths)]")),
            bound=1 / (1 / search_db["rps"] + 1 / http_alone))
        rss = peak_rss_mib(service.pid)
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
        shutil.rmtree(work, ignore_errors=True)

    return report(rows, args, rss_under_load, rss, rows, watch.where)


# The suffix of the scenarios measured again on a million books.
SCALE = " (1M books)"


def report(rows, args, rss_under_load, rss, full, peak_where):
    def fmt(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}"

    print(f"\nbooks-api benchmark: {args.seconds} s per load, {os.cpu_count()} cores shared by "
          "database, service and load; the number before each scenario is its connections\n")
    print(f"| {'scenario':<44} | {'requests/s':>10} | {'p50 ms':>7} | {'p99 ms':>7} | {'÷ bound':>7} | {'errors, non-2xx':>15} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 17}|")
    for name, row in rows.items():
        ratio = "-" if not row.get("bound") else f"{row['rps'] / row['bound']:.2f}"
        print(f"| {name:<44} | {row['rps']:>10.0f} | {fmt(row['p50'], 2):>7} | {fmt(row['p99'], 2):>7} | "
              f"{ratio:>7} | {row['non2xx']:>15} |")
    print("\ntargets:")
    lo, hi = args.connections[0], args.connections[-1]

    def check(label, ok):
        print(f"  {'met    ' if ok else 'MISSED '} {label}")

    def ratio(name):
        row = rows.get(name)
        return row["rps"] / row["bound"] if row and row.get("bound") else float("nan")

    get_lo = rows[f"{lo}: GET /api/v1/books/{{id}}"]
    check(f"GET by id at {lo}: {ratio(f'{lo}: GET /api/v1/books/{{id}}'):.2f} × bound (≥ 1.3), "
          f"p99 {get_lo['p99']:.1f} ms (≤ 10)",
          ratio(f"{lo}: GET /api/v1/books/{{id}}") >= 1.3 and get_lo["p99"] <= 10)
    if hi != lo:
        get_hi = rows[f"{hi}: GET /api/v1/books/{{id}}"]
        check(f"GET by id at {hi}: {get_hi['non2xx']} errors (0), p99 {get_hi['p99']:.1f} ms (≤ 50)",
              get_hi["non2xx"] == 0 and get_hi["p99"] <= 50)
    deep = None
    if full:
        check(f"listing at {lo}: {ratio(f'{lo}: GET /api/v1/books?limit=20'):.2f} × its bound (≥ 0.9)",
              ratio(f"{lo}: GET /api/v1/books?limit=20") >= 0.9)
        for write, least in (("POST /api/v1/books", 0.5), ("PATCH /api/v1/books/{id}", 0.75)):
            check(f"{write} at {lo}: {ratio(f'{lo}: {write}'):.2f} × the write ceiling (≥ {least})",
                  ratio(f"{lo}: {write}") >= least)
        for n in (1, lo):
            plain = rows[f"{n}: GET /api/v1/books?limit=20"]
            gzip = rows[f"{n}: GET /api/v1/books?limit=20, gzip"]
            share = gzip["rps"] / plain["rps"]
            check(f"gzip list page at {n}: {share:.2f} × the plain one (≥ 0.8)", share >= 0.8)
        for scenario in ("GET /api/v1/books/{id}", "GET /api/v1/books?limit=20", "POST /api/v1/books",
                         "PATCH /api/v1/books/{id}"):
            small, large = ratio(f"{lo}: {scenario}"), ratio(f"{lo}: {scenario}{SCALE}")
            check(f"{scenario} at 1M books: {large:.2f} × its bound, against {small:.2f} at 10,000 "
                  f"(within 20 %)", abs(large / small - 1) <= 0.2)
        deep = rows["deep paging: page 1000 (sort=title)"]["p50"] / rows["deep paging: page 1 (sort=title)"]["p50"]
        check(f"page 1000 ÷ page 1 (p50): {deep:.2f} (≤ 1.2)", deep <= 1.2)
        one = rows.get("search, 1 client, 1M books")
        if one:
            check(f"search at 1M books, one client: p95 {one['p95']:.1f} ms (≤ 50)", one["p95"] <= 50)
            print(f"  (search at {lo} at 1M books: "
                  f"{ratio(f'{lo}: GET /api/v1/books/search (1M books)'):.2f} × its bound)")
    check(f"peak RSS: {rss_under_load:.1f} MiB under load at 10,000 books, {rss:.1f} MiB at the end, "
          f"after 1M books (≤ 64); it rose last during {peak_where}", rss <= 64)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "rss_mib": rss, "rss_peak_during": peak_where, "deep_ratio": deep}, indent=2))


if __name__ == "__main__":
    main()
