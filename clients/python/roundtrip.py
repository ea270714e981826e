"""A round trip through the service with the Python client generated from openapi/openapi.json.

    python3 roundtrip.py BASE_URL WRITE_KEY     (with the generated `books_client` importable)

Create with a key (and an ISBN and a year), get, a 409 on a taken ISBN, page through a list, a 412 on a stale If-Match, a 422 on bad input,
a batch create, an export, delete, the change feed, and a webhook subscription whose delivery to a
receiver of this script's own is verified with the Standard Webhooks reference library: what a team
using the SDK does first. Exits non-zero, saying what broke, on any surprise.
"""

import http.server
import json
import queue
import sys
import threading
import time

from standardwebhooks.webhooks import Webhook

from books_client import AuthenticatedClient, Client
from books_client.api.books import (
    create_book, create_books, delete_book, export_books, get_book, list_books, list_changes, patch_book)
from books_client.api.webhooks import create_webhook, delete_webhook, list_webhook_deliveries
from books_client.models import (
    BookBatch, BookBatchInput, BookInput, BookPatchInput, BookResponse, EventName, NewSubscriptionInput, Problem)


# The books of this run, whatever else the service holds.
AUTHOR = "Python Round Trip"


def check(condition, message):
    if not condition:
        sys.exit(f"round trip failed: {message}")


def main(base_url, key):
    writer = AuthenticatedClient(base_url=base_url, token=key, raise_on_unexpected_status=True)
    reader = Client(base_url=base_url, raise_on_unexpected_status=True)

    created = create_book.sync_detailed(client=writer, body=BookInput(
        title="Dune", author=AUTHOR, genre="Science fiction", isbn="0-441-01359-7", published_year=1965))
    check(created.status_code == 201, f"create answered {created.status_code}")
    book = created.parsed
    check(isinstance(book, BookResponse) and book.version == 1, f"create returned {book!r}")
    etag = created.headers["etag"]

    fetched = get_book.sync_detailed(client=reader, id=book.id)
    check(fetched.status_code == 200 and fetched.parsed.title == "Dune", "get did not return the book")
    check(fetched.parsed.genre == "Science fiction", "the genre did not round-trip")
    check(fetched.parsed.isbn == "9780441013593" and fetched.parsed.published_year == 1965,
          f"the isbn and year came back as {fetched.parsed.isbn!r}, {fetched.parsed.published_year!r}")
    taken = create_book.sync_detailed(client=writer, body=BookInput(title="Copy", author=AUTHOR, isbn="9780441013593"))
    check(taken.status_code == 409 and isinstance(taken.parsed, Problem)
          and taken.parsed.existing == f"/api/v1/books/{book.id}", f"a taken ISBN answered {taken.status_code}")

    for i in range(4):
        create_book.sync(client=writer, body=BookInput(title=f"Volume {i}", author=AUTHOR))
    seen, cursor = [], None
    while True:
        page = (list_books.sync(client=reader, limit=2, cursor=cursor) if cursor
                else list_books.sync(client=reader, limit=2, author=AUTHOR))
        seen += [item.id for item in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    check(len(seen) == 5 and len(set(seen)) == 5, f"paging visited {seen}")

    fresh = patch_book.sync_detailed(client=writer, id=book.id, body=BookPatchInput(genre="Epic"), if_match=etag)
    check(fresh.status_code == 200 and fresh.parsed.version == 2, f"a patch with the current ETag answered {fresh.status_code}")
    cleared = patch_book.sync_detailed(client=writer, id=book.id, body=BookPatchInput(published_year=None))
    check(cleared.status_code == 200 and cleared.parsed.published_year is None
          and cleared.parsed.isbn == "9780441013593", f"a null year answered {cleared.status_code}")
    stale = patch_book.sync_detailed(client=writer, id=book.id, body=BookPatchInput(genre="Stale"), if_match=etag)
    check(stale.status_code == 412 and isinstance(stale.parsed, Problem), f"a stale ETag answered {stale.status_code}")

    invalid = create_book.sync_detailed(client=writer, body=BookInput(title="   ", author="Anon"))
    check(invalid.status_code == 422 and isinstance(invalid.parsed, Problem), f"a blank title answered {invalid.status_code}")
    check(any(error.field == "title" for error in invalid.parsed.errors), "the 422 does not name the title")

    batch = create_books.sync_detailed(client=writer, idempotency_key="python-batch-1", body=BookBatchInput(
        books=[BookInput(title="Emma", author=AUTHOR), BookInput(title="Persuasion", author=AUTHOR)]))
    check(batch.status_code == 201 and isinstance(batch.parsed, BookBatch), f"a batch answered {batch.status_code}")
    check([b.title for b in batch.parsed.books] == ["Emma", "Persuasion"], "the batch is not in input order")
    refused = create_books.sync_detailed(client=writer, body=BookBatchInput(
        books=[BookInput(title="Fine", author=AUTHOR), BookInput(title="", author=AUTHOR)]))
    check(refused.status_code == 422 and any(e.field == "books[1].title" for e in refused.parsed.errors),
          f"an invalid batch answered {refused.status_code}")

    exported = export_books.sync_detailed(client=reader, author=AUTHOR)
    check(exported.status_code == 200, f"the export answered {exported.status_code}")
    lines = [json.loads(line) for line in exported.content.decode().splitlines()]
    check(len(lines) == 7 and all(line["author"] == AUTHOR for line in lines), f"the export held {len(lines)} books")

    deleted = delete_book.sync_detailed(client=writer, id=book.id)
    check(deleted.status_code == 204, f"delete answered {deleted.status_code}")
    gone = get_book.sync_detailed(client=Client(base_url=base_url), id=book.id)
    check(gone.status_code == 404, f"a deleted book answered {gone.status_code}")
    # The feed: follow it from the export's position to the end; this run's delete is in it.
    after, kinds = 0, []
    while True:
        page = list_changes.sync(client=reader, after=after, limit=1000)
        check(page is not None, "the feed did not answer")
        kinds += [(change.kind, change.book_id) for change in page.items]
        if not page.items:
            break
        after = page.next_after
    check(("deleted", book.id) in [(str(kind), book_id) for kind, book_id in kinds],
          "the feed does not hold this run's delete")
    check(("created", book.id) in [(str(kind), book_id) for kind, book_id in kinds],
          "the feed does not hold this run's create")
    webhook(base_url, writer)
    print("python client round trip: 1 passed, 0 failed")


def webhook(base_url, writer):
    """Subscribes a receiver on loopback, creates a book, and verifies its delivery."""
    deliveries = queue.Queue()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            deliveries.put((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/books-hook"
        subscribed = create_webhook.sync_detailed(client=writer, body=NewSubscriptionInput(url=url, events=[EventName.CREATED]))
        check(subscribed.status_code == 201, f"subscribing answered {subscribed.status_code}: {subscribed.content!r}")
        subscription = subscribed.parsed
        book = create_book.sync(client=writer, body=BookInput(title="Hooked", author=AUTHOR))
        try:
            headers, body = deliveries.get(timeout=15)
        except queue.Empty:
            sys.exit("round trip failed: no webhook delivery within 15 s")
        # The reference verifier checks the signature and the timestamp's freshness.
        payload = Webhook(subscription.secret).verify(body, {k.lower(): v for k, v in headers.items()})
        check(payload["kind"] == "created" and payload["book"]["id"] == book.id,
              f"the delivery held {payload!r}")
        check(headers.get("webhook-id") == str(payload["seq"]) or headers.get("Webhook-Id") == str(payload["seq"]),
              "webhook-id is not the change's seq")
        # The attempt is logged once the service has its answer: a moment after the delivery.
        for _ in range(100):
            log = list_webhook_deliveries.sync(client=writer, id=subscription.id, limit=5)
            if log is not None and log.items:
                break
            time.sleep(0.1)
        check(log is not None and log.items and log.items[0].status == 204, f"the deliveries log held {log!r}")
        check(delete_webhook.sync_detailed(client=writer, id=subscription.id).status_code == 204,
              "the subscription could not be deleted")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
