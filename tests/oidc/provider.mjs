// A real OpenID provider for catalytic's sign-in tests: `oidc-provider` (the certified Node
// implementation) on a loopback address, with one registered client and test accounts. Its
// login and consent pages are oidc-provider's own development pages: any password is accepted,
// the login name picks the account.
//
//   node tests/oidc/provider.mjs --host 127.0.0.2 --port P --redirect-uri URI
//        [--client-id ID] [--client-secret S] [--alg RS256|ES256] [--kid KEY_ID]
//
// Prints `provider listening on http://HOST:PORT` once it serves. Each start makes a fresh
// signing key (`--kid` names it), so starting it again with another `--kid` on the same port is
// a key rotation as the relying party sees it.
//
// Test-only control, for cases a well-behaved provider never produces: `POST /__test/mode` with
// the body `tamper`, `expired`, `wrong-aud`, `rogue-key` or `none` changes the ID token of the
// following token responses: signed again with the provider's own key (`expired`, `wrong-aud`),
// the payload edited under the old signature (`tamper`), or signed with a key the provider
// never publishes (`rogue-key`).

import Provider from 'oidc-provider';
import * as jose from 'jose';

const opts = {
  host: '127.0.0.2',
  port: '0',
  'redirect-uri': '',
  'client-id': 'catalytic-test',
  'client-secret': 'test-client-secret-0123456789',
  alg: 'RS256',
  kid: 'key-1',
};
for (let i = 2; i < process.argv.length; i += 2) {
  const name = process.argv[i].replace(/^--/, '');
  if (!(name in opts) || process.argv[i + 1] === undefined) {
    console.error(`unknown or incomplete option ${process.argv[i]}`);
    process.exit(2);
  }
  opts[name] = process.argv[i + 1];
}
if (!opts['redirect-uri']) {
  console.error('--redirect-uri is required');
  process.exit(2);
}

export const ACCOUNTS = {
  // verified, on the allowed domain
  ada: { email: 'ada@allowed.test', email_verified: true, name: 'Ada Lovelace' },
  // verified, on another domain
  bob: { email: 'bob@other.test', email_verified: true, name: 'Bob' },
  // not verified, on the allowed domain
  eve: { email: 'eve@allowed.test', email_verified: false, name: 'Eve' },
  // verified, another domain, but an admin account exists for it
  root: { email: 'admin@example.com', email_verified: true, name: 'Root' },
};

const { privateKey } = await jose.generateKeyPair(opts.alg, { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid: opts.kid, alg: opts.alg, use: 'sig' };

const issuer = `http://${opts.host}:${opts.port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: opts['client-id'],
      client_secret: opts['client-secret'],
      redirect_uris: [opts['redirect-uri']],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: opts.alg,
    },
  ],
  jwks: { keys: [jwk] },
  cookies: { keys: ['catalytic-test-cookie-key'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  // Put the scope's claims (email) in the ID token, as Google, Keycloak and Entra do.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
});

const rogue = (await jose.generateKeyPair(opts.alg)).privateKey;
let mode = 'none';
const now = () => Math.floor(Date.now() / 1000);

async function resign(payload, key = privateKey, kid = opts.kid) {
  return new jose.SignJWT(payload)
    .setProtectedHeader({ alg: opts.alg, kid, typ: 'JWT' })
    .sign(key);
}

async function mangle(idToken) {
  const [head, , sig] = idToken.split('.');
  const payload = jose.decodeJwt(idToken);
  switch (mode) {
    case 'tamper': {
      const forged = { ...payload, email: 'mallory@allowed.test' };
      return `${head}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${sig}`;
    }
    case 'expired':
      return resign({ ...payload, iat: now() - 1200, exp: now() - 600 });
    case 'wrong-aud':
      return resign({ ...payload, aud: 'another-application' });
    case 'rogue-key':
      return resign(payload, rogue, 'rogue');
    default:
      return idToken;
  }
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/mode' && ctx.method === 'POST') {
    let body = '';
    for await (const chunk of ctx.req) body += chunk;
    mode = body.trim();
    ctx.body = `mode ${mode}\n`;
    return;
  }
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && mode !== 'none' && ctx.body?.id_token) {
    ctx.body = { ...ctx.body, id_token: await mangle(ctx.body.id_token) };
  }
});

const server = provider.listen(Number(opts.port), opts.host, () => {
  const { port } = server.address();
  console.log(`provider listening on http://${opts.host}:${port} (issuer ${issuer})`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
