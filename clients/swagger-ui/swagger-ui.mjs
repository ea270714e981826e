// Swagger UI as a person uses it, in headless Chromium: authorize with an API key, "Try it out"
// on create and on get, and see 201 and 200. Saves a screenshot.
//
//   node swagger-ui.mjs BASE_URL WRITE_KEY SCREENSHOT.png

import { chromium } from "playwright-core";

const [baseUrl, key, screenshot] = process.argv.slice(2);
if (!baseUrl || !key || !screenshot) {
  console.error("usage: node swagger-ui.mjs BASE_URL WRITE_KEY SCREENSHOT.png");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});

async function liveStatus(operation) {
  const status = operation.locator(".live-responses-table tr.response .response-col_status").first();
  await status.waitFor({ timeout: 15000 });
  return (await status.innerText()).trim();
}

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
  await page.goto(`${baseUrl}/`, { waitUntil: "networkidle" });
  await page.locator("#operations-books-createBook").waitFor({ timeout: 15000 });

  // Authorize with the bearer key. With an OpenID Connect issuer configured, the dialog offers
  // its scheme too (found through the issuer's discovery document).
  await page.locator("button.authorize").first().click();
  if (process.env.OIDC_ISSUER) {
    await page.locator(".auth-container", { hasText: "openIdConnect" }).first().waitFor({ timeout: 15000 });
  }
  await page.locator(".auth-container input").first().fill(key);
  await page.locator(".auth-btn-wrapper button.authorize").first().click();
  await page.locator(".auth-btn-wrapper button.btn-done").first().click();

  // Create a book through "Try it out".
  const create = page.locator("#operations-books-createBook");
  await create.locator(".opblock-summary").click();
  await create.locator("button.try-out__btn").click();
  await create.locator("textarea.body-param__text").fill(
    JSON.stringify({ title: "Dune", author: "Frank Herbert", genre: "Science fiction" }),
  );
  await create.locator("button.execute").click();
  const created = await liveStatus(create);
  if (created !== "201") throw new Error(`create answered ${created} in Swagger UI`);
  const body = JSON.parse(await create.locator(".live-responses-table tr.response .microlight").first().innerText());

  // Read it back.
  const get = page.locator("#operations-books-getBook");
  await get.locator(".opblock-summary").click();
  await get.locator("button.try-out__btn").click();
  await get.locator("tr[data-param-name='id'] input").fill(String(body.id));
  await get.locator("button.execute").click();
  const fetched = await liveStatus(get);
  if (fetched !== "200") throw new Error(`get answered ${fetched} in Swagger UI`);

  // The picture a person sees: the create operation with its live 201 answer.
  await create.locator(".live-responses-table").first().scrollIntoViewIfNeeded();
  await page.evaluate(() => window.scrollBy(0, -500));
  await page.screenshot({ path: screenshot });
  console.log("swagger ui in chromium: 1 passed, 0 failed");
} finally {
  await browser.close();
}
