// A real OpenID Provider on loopback for the tests (panva's oidc-provider, OpenID Certified):
// client credentials, JWT access tokens for the resource `urn:books-api` (audience `books-api`).
//
// node provider.mjs PORT KEYS_FILE
// KEYS_FILE holds the signing keys (private JWKs); a missing file is created with new keys, so
// that a restart with another file is a key rotation. Prints "ready" once it listens.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, keysFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

function newKey(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg, use: 'sig' };
}

if (!existsSync(keysFile)) {
  const keys = [
    newKey('rsa', { modulusLength: 2048 }, 'RS256'),
    newKey('ec', { namedCurve: 'P-256' }, 'ES256'),
    newKey('ed25519', {}, 'EdDSA'),
  ];
  writeFileSync(keysFile, JSON.stringify({ keys }));
}
const jwks = JSON.parse(readFileSync(keysFile, 'utf8'));

// Clients, each a caller: its scopes, and how its tokens are signed and how long they last.
const clients = [
  { client_id: 'writer', scope: 'books:read books:write' },
  { client_id: 'other-writer', scope: 'books:read books:write' },
  { client_id: 'reader', scope: 'books:read' },
  { client_id: 'nobody', scope: '' },
  { client_id: 'short-lived', scope: 'books:read books:write' },
  { client_id: 'es256-writer', scope: 'books:read books:write' },
  { client_id: 'eddsa-writer', scope: 'books:read books:write' },
].map(({ client_id, scope }) => ({
  client_id,
  client_secret: `${client_id}-secret`,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  ...(scope ? { scope } : {}),
}));

const signing = { 'es256-writer': 'ES256', 'eddsa-writer': 'EdDSA' };

const provider = new Provider(issuer, {
  clients,
  scopes: ['openid', 'books:read', 'books:write'],
  jwks,
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:books-api',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => {
        if (resource === 'urn:books-api') {
          return {
            scope: 'books:read books:write',
            audience: 'books-api',
            accessTokenFormat: 'jwt',
            accessTokenTTL: client.clientId === 'short-lived' ? 2 : 3600,
            jwt: { sign: { alg: signing[client.clientId] ?? 'RS256' } },
          };
        }
        if (resource === 'urn:other-api') {
          return {
            scope: 'books:read books:write',
            audience: 'other-api',
            accessTokenFormat: 'jwt',
            accessTokenTTL: 300,
            jwt: { sign: { alg: 'RS256' } },
          };
        }
        throw new Error(`unknown resource ${resource}`);
      },
    },
  },
});

provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
