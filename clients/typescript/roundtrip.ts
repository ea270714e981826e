// A round trip through the service with the TypeScript client generated from openapi/openapi.json
// (openapi-typescript types, openapi-fetch calls). The compiler checks every call and field
// against the document; the run checks the service's answers, and a webhook delivery with the
// Standard Webhooks reference verifier.
//
//   npm run generate && npm run build && npm run roundtrip -- BASE_URL WRITE_KEY

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import createClient from "openapi-fetch";
import { Webhook } from "standardwebhooks";
import type { paths } from "./generated/schema.js";

// The books of this run, whatever else the service holds.
const AUTHOR = "TypeScript Round Trip";

function check(condition: boolean, message: string): asserts condition {
  if (!condition) {
    console.error(`round trip failed: ${message}`);
    process.exit(1);
  }
}

async function main(baseUrl: string, key: string): Promise<void> {
  // JSON answers where an operation offers others too (a listing page can also be CSV).
  const reader = createClient<paths, "application/json" | "application/problem+json">({ baseUrl });
  const writer = createClient<paths, "application/json" | "application/problem+json">({ baseUrl, headers: { Authorization: `Bearer ${key}` } });
  const exporter = createClient<paths, "application/x-ndjson" | "application/problem+json">({ baseUrl });

  const created = await writer.POST("/api/v1/books", {
    body: { title: "Dune", author: AUTHOR, genre: "Science fiction", isbn: "978-0-14-143951-8", published_year: 1813 },
  });
  check(created.response.status === 201 && created.data !== undefined, `create answered ${created.response.status}`);
  const book = created.data;
  check(book.version === 1 && book.genre === "Science fiction", "create returned another book");
  const etag = created.response.headers.get("etag") ?? "";
  check(etag !== "", "create sent no ETag");

  const fetched = await reader.GET("/api/v1/books/{id}", { params: { path: { id: book.id } } });
  check(fetched.data?.title === "Dune", "get did not return the book");
  check(fetched.data.isbn === "9780141439518" && fetched.data.published_year === 1813,
    `the isbn and year came back as ${fetched.data.isbn}, ${fetched.data.published_year}`);
  // The same book as XML, which the document offers beside JSON.
  const xmlReader = createClient<paths, "application/xml" | "application/problem+json">({ baseUrl, headers: { Accept: "application/xml" } });
  const asXml = await xmlReader.GET("/api/v1/books/{id}", { params: { path: { id: book.id } }, parseAs: "text" });
  check(asXml.response.headers.get("content-type") === "application/xml" && typeof asXml.data === "string",
    `get as XML answered ${asXml.response.status} ${asXml.response.headers.get("content-type")}`);
  check(asXml.data.startsWith(`<book><id>${book.id}</id><title>Dune</title>`) && asXml.data.includes("<isbn>9780141439518</isbn>"),
    `the book as XML was ${asXml.data}`);
  const taken = await writer.POST("/api/v1/books", { body: { title: "Copy", author: AUTHOR, isbn: "9780141439518" } });
  check(taken.response.status === 409 && taken.error?.existing === `/api/v1/books/${book.id}`,
    `a taken ISBN answered ${taken.response.status}`);

  for (let i = 0; i < 4; i++) {
    await writer.POST("/api/v1/books", { body: { title: `Volume ${i}`, author: AUTHOR } });
  }
  const seen: number[] = [];
  let cursor: string | undefined;
  do {
    const page = await reader.GET("/api/v1/books", { params: { query: { limit: 2, author: AUTHOR, cursor } } });
    check(page.data !== undefined, `list answered ${page.response.status}`);
    seen.push(...page.data.items.map((item) => item.id));
    cursor = page.data.next_cursor ?? undefined;
  } while (cursor);
  check(seen.length === 5 && new Set(seen).size === 5, `paging visited ${seen}`);

  const fresh = await writer.PATCH("/api/v1/books/{id}", {
    params: { path: { id: book.id }, header: { "If-Match": etag } },
    body: { genre: "Epic" },
  });
  check(fresh.response.status === 200 && fresh.data?.version === 2, `a patch with the current ETag answered ${fresh.response.status}`);
  const cleared = await writer.PATCH("/api/v1/books/{id}", {
    params: { path: { id: book.id } },
    body: { published_year: null },
  });
  check(cleared.data?.published_year === null && cleared.data.isbn === "9780141439518",
    `a null year answered ${cleared.response.status}`);
  const stale = await writer.PATCH("/api/v1/books/{id}", {
    params: { path: { id: book.id }, header: { "If-Match": etag } },
    body: { genre: "Stale" },
  });
  check(stale.response.status === 412 && stale.error?.status === 412, `a stale ETag answered ${stale.response.status}`);

  const invalid = await writer.POST("/api/v1/books", { body: { title: "   ", author: "Anon" } });
  check(invalid.response.status === 422, `a blank title answered ${invalid.response.status}`);
  check(invalid.error?.errors?.some((error) => error.field === "title") ?? false, "the 422 does not name the title");

  const batch = await writer.POST("/api/v1/books/batch", {
    params: { header: { "Idempotency-Key": "typescript-batch-1" } },
    body: { books: [{ title: "Emma", author: AUTHOR }, { title: "Persuasion", author: AUTHOR }] },
  });
  check(batch.response.status === 201 && batch.data !== undefined, `a batch answered ${batch.response.status}`);
  check(batch.data.books.map((b) => b.title).join() === "Emma,Persuasion", "the batch is not in input order");

  const exported = await exporter.GET("/api/v1/books/export", { params: { query: { author: AUTHOR } }, parseAs: "text" });
  check(exported.response.status === 200 && typeof exported.data === "string", `the export answered ${exported.response.status}`);
  const lines = exported.data.trim().split("\n").map((line) => JSON.parse(line) as { author: string });
  check(lines.length === 7 && lines.every((line) => line.author === AUTHOR), `the export held ${lines.length} books`);

  const deleted = await writer.DELETE("/api/v1/books/{id}", { params: { path: { id: book.id } } });
  check(deleted.response.status === 204, `delete answered ${deleted.response.status}`);
  const gone = await reader.GET("/api/v1/books/{id}", { params: { path: { id: book.id } } });
  check(gone.response.status === 404, `a deleted book answered ${gone.response.status}`);
  // The feed: follow it to the end; this run's create and delete are in it, in that order.
  const kinds: string[] = [];
  let after = 0;
  for (;;) {
    const page = await reader.GET("/api/v1/books/changes", { params: { query: { after, limit: 1000 } } });
    check(page.data !== undefined, `the feed answered ${page.response.status}`);
    if (page.data.items.length === 0) break;
    kinds.push(...page.data.items.filter((c) => c.book_id === book.id).map((c) => c.kind));
    after = page.data.next_after;
  }
  check(kinds[0] === "created" && kinds[kinds.length - 1] === "deleted", `the feed holds ${kinds.join()} for this run's book`);
  await webhook(writer);
  console.log("typescript client round trip: 1 passed, 0 failed");
}

// Subscribes a receiver on loopback, creates a book, and verifies its delivery with the Standard
// Webhooks reference library.
async function webhook(writer: ReturnType<typeof createClient<paths, "application/json" | "application/problem+json">>): Promise<void> {
  let deliver: (delivery: { headers: Record<string, string>; body: string }) => void = () => {};
  const delivered = new Promise<{ headers: Record<string, string>; body: string }>((resolve) => { deliver = resolve; });
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(request.headers)) {
        if (typeof value === "string") headers[name] = value;
      }
      deliver({ headers, body: Buffer.concat(chunks).toString("utf8") });
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const port = (server.address() as AddressInfo).port;
    const subscribed = await writer.POST("/api/v1/webhooks", {
      body: { url: `http://127.0.0.1:${port}/books-hook`, events: ["created"] },
    });
    check(subscribed.response.status === 201 && subscribed.data?.secret !== undefined, `subscribing answered ${subscribed.response.status}`);
    const subscription = subscribed.data;
    const created = await writer.POST("/api/v1/books", { body: { title: "Hooked", author: AUTHOR } });
    check(created.data !== undefined, `create answered ${created.response.status}`);
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no webhook delivery within 15 s")), 15000));
    const delivery = await Promise.race([delivered, timeout]);
    const payload = new Webhook(subscription.secret ?? "").verify(delivery.body, delivery.headers) as { seq: number; kind: string; book: { id: number } };
    check(payload.kind === "created" && payload.book.id === created.data.id, `the delivery held ${delivery.body}`);
    check(delivery.headers["webhook-id"] === String(payload.seq), "webhook-id is not the change's seq");
    const removed = await writer.DELETE("/api/v1/webhooks/{id}", { params: { path: { id: subscription.id } } });
    check(removed.response.status === 204, `deleting the subscription answered ${removed.response.status}`);
  } finally {
    server.close();
  }
}

const [baseUrl, key] = process.argv.slice(2);
check(baseUrl !== undefined && key !== undefined, "usage: roundtrip.js BASE_URL WRITE_KEY");
await main(baseUrl, key);
