// Turns the collection openapi-to-postmanv2 generated from openapi/openapi.json into one that runs
// as a test: requests in a meaningful order, bodies and parameters that make sense, and a test
// script on each request. Only what the generator cannot know is added here; every request, URL,
// header and description still comes from the document.
//
//   node build.mjs generated.json books-api.postman_collection.json

import { readFileSync, writeFileSync } from "node:fs";

const [input, output] = process.argv.slice(2);
const collection = JSON.parse(readFileSync(input, "utf8"));

// Per request, by its summary in the document: what to send and what to check, in run order.
const plan = {
  books: [
    ["Create a book", {
      body: { title: "Dune", author: "Frank Herbert", genre: "Science fiction", isbn: "0-441-01359-7", published_year: 1965 },
      headers: { "Idempotency-Key": "postman-{{$timestamp}}" },
      test: `
        pm.test("201 with Location and ETag", () => {
          pm.response.to.have.status(201);
          pm.expect(pm.response.headers.get("Location")).to.match(/^\\/api\\/v1\\/books\\/\\d+$/);
          pm.expect(pm.response.headers.get("ETag")).to.match(/^"\\d+-1"$/);
        });
        const book = pm.response.json();
        pm.test("the book as sent, at version 1", () => {
          pm.expect(book.title).to.eql("Dune");
          pm.expect(book.version).to.eql(1);
          pm.expect(book.isbn).to.eql("9780441013593");
          pm.expect(book.published_year).to.eql(1965);
        });
        pm.collectionVariables.set("bookId", book.id);
        pm.collectionVariables.set("etag", pm.response.headers.get("ETag"));`,
    }],
    ["Get a book", {
      test: `
        pm.test("200 with the same ETag", () => {
          pm.response.to.have.status(200);
          pm.expect(pm.response.headers.get("ETag")).to.eql(pm.collectionVariables.get("etag"));
        });`,
    }],
    ["Patch a book", {
      body: { genre: null },
      headers: { "If-Match": "{{etag}}" },
      test: `
        pm.test("200, genre cleared, version 2", () => {
          pm.response.to.have.status(200);
          pm.expect(pm.response.json().genre).to.eql(null);
          pm.expect(pm.response.json().version).to.eql(2);
        });`,
    }],
    ["Replace a book", {
      body: { title: "Dune Messiah", author: "Frank Herbert" },
      headers: { "If-Match": "{{etag}}" },
      test: `
        pm.test("a stale If-Match is 412 problem+json", () => {
          pm.response.to.have.status(412);
          pm.expect(pm.response.headers.get("Content-Type")).to.include("application/problem+json");
        });`,
    }],
    ["List books", {
      query: { limit: "100" },
      test: `
        pm.test("200 with the book in the items", () => {
          pm.response.to.have.status(200);
          const ids = pm.response.json().items.map((b) => b.id);
          pm.expect(ids).to.include(Number(pm.collectionVariables.get("bookId")));
        });`,
    }],
    ["Create many books", {
      body: { books: [
        { title: "Emma", author: "Jane Austen" },
        { title: "Persuasion", author: "Jane Austen", genre: "Romance" },
      ] },
      headers: { "Idempotency-Key": "postman-batch-{{$timestamp}}" },
      test: `
        pm.test("201 with the books in input order", () => {
          pm.response.to.have.status(201);
          pm.expect(pm.response.json().books.map((b) => b.title)).to.eql(["Emma", "Persuasion"]);
        });`,
    }],
    ["Search books", {
      query: { q: "persuasoin", facets: "genre" },
      test: `
        pm.test("200 with the book despite the typo, highlighted", () => {
          pm.response.to.have.status(200);
          const page = pm.response.json();
          pm.expect(page.items[0].book.title).to.eql("Persuasion");
          pm.expect(page.items[0].highlight.title).to.eql("<em>Persuasion</em>");
          pm.expect(page.total).to.be.at.least(1);
          pm.expect(page.facets.genre).to.be.an("array");
        });`,
    }],
    ["Export books", {
      query: { author: "Jane Austen" },
      test: `
        pm.test("200, one book per line", () => {
          pm.response.to.have.status(200);
          pm.expect(pm.response.headers.get("Content-Type")).to.include("application/x-ndjson");
          const books = pm.response.text().trim().split("\\n").map((line) => JSON.parse(line));
          pm.expect(books.length).to.be.at.least(2);
          books.forEach((b) => pm.expect(b.author).to.eql("Jane Austen"));
        });`,
    }],
    ["Delete a book", {
      test: `pm.test("204", () => pm.response.to.have.status(204));`,
    }],
    ["Follow the changes", {
      query: { after: "0", limit: "1000" },
      test: `
        pm.test("200 with this run's delete in the feed", () => {
          pm.response.to.have.status(200);
          const page = pm.response.json();
          pm.expect(page.next_after).to.be.at.least(1);
          const deleted = page.items.filter((c) => c.kind === "deleted").map((c) => c.book_id);
          pm.expect(deleted).to.include(Number(pm.collectionVariables.get("bookId")));
        });`,
    }],
  ],
  webhooks: [
    ["Subscribe to the changes", {
      // The service in CI runs with --webhooks-allow-private; the subscription is paused at once,
      // so nothing is delivered to this URL.
      body: { url: "{{baseUrl}}/healthz", events: ["created", "deleted"], description: "postman" },
      test: `
        pm.test("201 with the secret, shown once", () => {
          pm.response.to.have.status(201);
          pm.expect(pm.response.json().secret).to.match(/^whsec_[A-Za-z0-9+/]{43}=$/);
          pm.expect(pm.response.json().status).to.eql("active");
        });
        pm.collectionVariables.set("webhookId", pm.response.json().id);`,
    }],
    ["Change or resume a subscription", {
      id: "{{webhookId}}",
      body: { status: "paused" },
      test: `pm.test("200, paused", () => { pm.response.to.have.status(200); pm.expect(pm.response.json().status).to.eql("paused"); });`,
    }],
    ["Get a subscription", {
      id: "{{webhookId}}",
      test: `pm.test("200 without the secret", () => { pm.response.to.have.status(200); pm.expect(pm.response.json()).to.not.have.property("secret"); });`,
    }],
    ["List your subscriptions", {
      test: `pm.test("200 with it", () => { pm.response.to.have.status(200); pm.expect(pm.response.json().items.map((s) => s.id)).to.include(Number(pm.collectionVariables.get("webhookId"))); });`,
    }],
    ["A subscription's latest attempts", {
      id: "{{webhookId}}",
      query: { limit: "10" },
      test: `pm.test("200 with none (paused)", () => { pm.response.to.have.status(200); pm.expect(pm.response.json().items).to.eql([]); });`,
    }],
    ["Deliver again from a point of the feed", {
      id: "{{webhookId}}",
      body: { after: 0 },
      test: `
        pm.test("202 rewound, or 410 when the start of the feed is purged", () => {
          pm.expect(pm.response.code).to.be.oneOf([202, 410]);
        });`,
    }],
    ["Delete a subscription", {
      id: "{{webhookId}}",
      test: `pm.test("204", () => pm.response.to.have.status(204));`,
    }],
  ],
  booksApi: [
    ["Create a book (tutorial route)", {
      form: { title: "Emma", author: "Jane Austen", genre: "Romance" },
      test: `
        pm.test("201 in the tutorial's shape", () => {
          pm.response.to.have.status(201);
          pm.expect(pm.response.json().Book.title).to.eql("Emma");
        });
        pm.collectionVariables.set("legacyId", pm.response.json().Book.id);`,
    }],
    ["List every book (tutorial route)", {
      test: `pm.test("200 with books", () => { pm.response.to.have.status(200); pm.expect(pm.response.json().books).to.be.an("array"); });`,
    }],
    ["Get a book (tutorial route)", {
      id: "{{legacyId}}",
      test: `pm.test("200 with the book", () => { pm.response.to.have.status(200); pm.expect(pm.response.json().books.author).to.eql("Jane Austen"); });`,
    }],
    ["Update a book (tutorial route)", {
      id: "{{legacyId}}",
      form: { genre: "Classic" },
      test: `pm.test("200 in text", () => { pm.response.to.have.status(200); pm.expect(pm.response.text()).to.match(/^Updated a Book with id \\d+$/); });`,
    }],
    ["Delete a book (tutorial route)", {
      id: "{{legacyId}}",
      test: `pm.test("200 in text", () => { pm.response.to.have.status(200); pm.expect(pm.response.text()).to.match(/^Removed Book with id \\d+$/); });`,
    }],
  ],
  service: [
    ["Liveness", { test: `pm.test("200", () => pm.response.to.have.status(200));` }],
    ["Readiness", { test: `pm.test("200", () => pm.response.to.have.status(200));` }],
  ],
};

function prepare(item, settings) {
  const request = item.request;
  // Documented optional parameters are off unless the plan sets them.
  for (const param of request.url.query ?? []) {
    const value = settings.query?.[param.key];
    param.disabled = value === undefined;
    // The generator fills a parameter with a random sample of its pattern: keep the file stable.
    param.value = value ?? "";
  }
  for (const variable of request.url.variable ?? []) {
    if (variable.key === "id") variable.value = settings.id ?? "{{bookId}}";
  }
  request.header = (request.header ?? []).filter((h) => !h.description || settings.headers?.[h.key] !== undefined);
  for (const [key, value] of Object.entries(settings.headers ?? {})) {
    const existing = request.header.find((h) => h.key === key);
    if (existing) existing.value = value;
    else request.header.push({ key, value });
  }
  if (request.body?.mode === "raw") {
    if (settings.body) request.body.raw = JSON.stringify(settings.body, null, 2);
    // The generator sends merge patches as application/json, which the service also accepts.
  }
  if (request.body?.mode === "urlencoded") {
    const fields = Object.entries(settings.form ?? {}).map(([key, value]) => ({ key, value }));
    request.body = fields.length > 0 ? { mode: "urlencoded", urlencoded: fields } : {};
  }
  // Saved example responses repeat the document's examples with random sample values; the
  // document is where to read them.
  delete item.response;
  item.event = [{ listen: "test", script: { type: "text/javascript", exec: settings.test.trim().split("\n").map((l) => l.trim()) } }];
  return item;
}

for (const folder of collection.item) {
  const steps = plan[folder.name];
  if (!steps) throw new Error(`no plan for the folder ${folder.name}`);
  const byName = new Map(folder.item.map((item) => [item.name, item]));
  const missing = [...byName.keys()].filter((name) => !steps.some(([step]) => step === name));
  if (missing.length) throw new Error(`no plan for ${missing.join(", ")}: add them to build.mjs`);
  folder.item = steps.map(([name, settings]) => {
    const item = byName.get(name);
    if (!item) throw new Error(`the document has no operation "${name}" any more`);
    return prepare(item, settings);
  });
}
// The generator names every item with a random UUID; without them the file is the same from one
// generation to the next, so CI can tell whether the committed collection is current.
(function dropIds(node) {
  if (Array.isArray(node)) node.forEach(dropIds);
  else if (node && typeof node === "object") {
    delete node.id;
    delete node._postman_id;
    Object.values(node).forEach(dropIds);
  }
})(collection);
collection.variable = [
  { key: "baseUrl", value: "http://127.0.0.1:8080" },
  { key: "bearerToken", value: "" },
];
collection.auth = { type: "bearer", bearer: [{ key: "token", value: "{{bearerToken}}", type: "string" }] };
writeFileSync(output, JSON.stringify(collection, null, 2) + "\n");
