'use strict';
// Measures the CPU time per call of the public Node.js SDK
// wechatpay-axios-plugin against a running sandbox, with the same calls,
// rounds and floor as bench/client_cpu.lua.  The floor is the RSA-2048
// operations each call needs, timed in this process with Node's crypto.
//
//   node bench/sdk_cpu.js SANDBOX_JSON [ROUNDS] [CALLS_PER_ROUND]
//
// The SDK is configured through its public API only: mchid, serial,
// privateKey, certs ({ serial or public key ID: PEM }) and the axios
// options baseURL (the sandbox), proxy: false (the SDK's axios otherwise
// follows http_proxy and the like), maxRedirects: 0 and a keep-alive
// agent.  Its default baseURL is the real platform, so this script
// refuses a base URL that is not on a loopback address.
// Prints one RESULT line with seconds of CPU (process.cpuUsage) per call.

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const path = require('path');

const sdkPath = path.join(__dirname, 'node', 'node_modules', 'wechatpay-axios-plugin');
const {
  Wechatpay, Rsa, Formatter, Aes: { AesGcm },
} = require(sdkPath);
const sdkVersion = require(path.join(sdkPath, 'package.json')).version;

const [configPath, roundsArg, callsArg] = process.argv.slice(2);
if (!configPath) {
  process.stderr.write('usage: node sdk_cpu.js SANDBOX_JSON [ROUNDS] [CALLS_PER_ROUND]\n');
  process.exit(2);
}
const rounds = Number(roundsArg || 10);
const callsPerRound = Number(callsArg || 100);
const PRIMITIVES_PER_ROUND = 100;
const STORE_ID = 1234;
const runId = `n${(Math.floor(Date.now() / 1000) % 0xFFFFFF).toString(16)}${process.pid}`;

// Unique per run, like runId, so that a query by it finds one guide.
const QUERY_MOBILE = `137${String(crypto.randomInt(0, 1e8)).padStart(8, '0')}`;

const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const baseURL = new URL(config.base_url);
if (!['127.0.0.1', 'localhost', '[::1]'].includes(baseURL.hostname)
    && !/^127\.\d+\.\d+\.\d+$/.test(baseURL.hostname)) {
  throw new Error(`base_url ${config.base_url} is not a loopback address; this script `
    + 'sends requests only to a sandbox on loopback');
}

// Returns the process CPU time (user plus system, all threads) in seconds.
function cpu() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

const privateKeyPem = fs.readFileSync(config.private_key_file);
const agentOptions = { keepAlive: true, maxSockets: 1 };
const caOptions = config.ca_file ? { ca: fs.readFileSync(config.ca_file) } : {};

// Axios options shared by every SDK instance made here.
const axiosOptions = {
  baseURL: `${config.base_url}/`,
  proxy: false,
  maxRedirects: 0,
  httpAgent: new http.Agent(agentOptions),
  httpsAgent: new https.Agent({ ...agentOptions, ...caOptions }),
};

// Downloads the platform certificates as the SDK's own `crt` command
// does (bin/cli/cert.js: decrypt each with AesGcm in a transformResponse
// hook), and checks the list's signature with a certificate it carries,
// as lua-wechatpay does on a first download.  Returns { serial: PEM }.
async function downloadCertificates() {
  const certs = {};
  let checked = false;
  const bootstrap = new Wechatpay({
    mchid: config.mchid,
    serial: config.serial_no,
    privateKey: privateKeyPem,
    // The SDK requires one entry; the key is never used here because
    // this request replaces the response verifier below.
    certs: { bootstrap: fs.readFileSync(config.certificate_file) },
    ...axiosOptions,
  });
  function injector(body, headers) {
    for (const item of JSON.parse(body).data || []) {
      const { nonce, associated_data: aad, ciphertext } = item.encrypt_certificate;
      certs[item.serial_no] = AesGcm.decrypt(ciphertext, config.apiv3_key, nonce, aad);
    }
    const signer = certs[headers['wechatpay-serial']];
    const message = Formatter.response(headers['wechatpay-timestamp'],
      headers['wechatpay-nonce'], body);
    checked = Boolean(signer)
      && Rsa.verify(message, headers['wechatpay-signature'], Rsa.from(signer, Rsa.KEY_TYPE_PUBLIC));
    return JSON.parse(body);
  }
  await bootstrap.v3.certificates.get({ transformResponse: [injector] });
  if (!checked) {
    throw new Error('the certificate list is not signed by a certificate it carries');
  }
  return certs;
}

async function main() {
  let certs;
  let encryptSerial;
  if (config.mode === 'certificate') {
    certs = await downloadCertificates();
    [encryptSerial] = Object.keys(certs);
  } else {
    certs = { [config.public_key_id]: fs.readFileSync(config.public_key_file) };
    encryptSerial = config.public_key_id;
  }
  const wxpay = new Wechatpay({
    mchid: config.mchid,
    serial: config.serial_no,
    privateKey: privateKeyPem,
    certs,
    ...axiosOptions,
  });
  const privateKey = Rsa.from(privateKeyPem, Rsa.KEY_TYPE_PRIVATE);
  const encryptKey = Rsa.from(certs[encryptSerial], Rsa.KEY_TYPE_PUBLIC);
  // lua-wechatpay announces the public key ID on every request in public
  // key mode; so does this script, so that both get the same responses.
  const defaultHeaders = config.mode === 'certificate' ? {} : { 'Wechatpay-Serial': encryptSerial };

  // Primitives, on the merchant certificate's key as in client_cpu.lua.
  const certKey = crypto.createPublicKey(fs.readFileSync(config.certificate_file));
  const MESSAGE = 'POST\n/v3/smartguide/guides/LLA0123456789abcdefghijklmnopqrstu/assign\n'
    + '1700000000\n0123456789ABCDEF0123456789ABCDEF\n'
    + '{"out_trade_no":"BENCH-0000000000"}\n';
  const SIGNATURE = Rsa.sign(MESSAGE, privateKey);
  const CIPHERTEXT = Rsa.encrypt(QUERY_MOBILE, certKey);
  const primitives = {
    sign: () => Rsa.sign(MESSAGE, privateKey),
    verify: () => Rsa.verify(MESSAGE, SIGNATURE, certKey),
    encrypt: () => Rsa.encrypt(QUERY_MOBILE, certKey),
    decrypt: () => Rsa.decrypt(CIPHERTEXT, privateKey),
  };
  const PRIMITIVE_ORDER = ['sign', 'verify', 'encrypt', 'decrypt'];

  const guides = wxpay.v3.smartguide.guides;
  const registerBody = (id, mobile) => ({
    store_id: STORE_ID,
    corpid: 'wwbench',
    userid: `bench-${id}`,
    name: Rsa.encrypt('李四', encryptKey),
    mobile: Rsa.encrypt(mobile, encryptKey),
    qr_code: `https://example.com/qr/${id}`,
    avatar: 'https://example.com/a.png',
  });
  const registered = await guides.post(
    { ...registerBody(`query-${runId}`, QUERY_MOBILE), name: Rsa.encrypt('张三', encryptKey) },
    { headers: { 'Wechatpay-Serial': encryptSerial } },
  );
  const guideId = registered.data.guide_id;

  let counter = 0;
  const nextId = () => { counter += 1; return `${runId}-${counter}`; };
  const calls = {
    async assign() {
      const res = await guides._guide_id_.assign.post(
        { out_trade_no: `B${nextId()}` },
        { guide_id: guideId, headers: defaultHeaders },
      );
      if (res.status !== 204) throw new Error(`assign returned ${res.status}`);
    },
    async query() {
      const res = await guides.get({
        params: { store_id: STORE_ID, mobile: Rsa.encrypt(QUERY_MOBILE, encryptKey) },
        headers: { 'Wechatpay-Serial': encryptSerial },
      });
      const items = res.data.data || [];
      if (items.length !== 1) throw new Error(`query by mobile returned ${items.length} guides`);
      for (const item of items) {
        item.name = Rsa.decrypt(item.name, privateKey);
        item.mobile = Rsa.decrypt(item.mobile, privateKey);
      }
    },
    async register() {
      const id = nextId();
      const mobile = `139${String(counter).padStart(8, '0')}`;
      const res = await guides.post(registerBody(id, mobile),
        { headers: { 'Wechatpay-Serial': encryptSerial } });
      if (!res.data.guide_id) throw new Error('registration returned no guide_id');
    },
  };
  const CALL_ORDER = ['assign', 'query', 'register'];

  const timeSync = (fn, n) => {
    const started = cpu();
    for (let i = 0; i < n; i += 1) fn();
    return cpu() - started;
  };
  const timeAsync = async (fn, n) => {
    const started = cpu();
    for (let i = 0; i < n; i += 1) await fn();
    return cpu() - started;
  };

  for (const name of CALL_ORDER) {
    for (let i = 0; i < 5; i += 1) await calls[name]();
  }
  for (const name of PRIMITIVE_ORDER) timeSync(primitives[name], 5);

  // Per-round costs in seconds and ratios to the floor of the same round.
  const floors = (cost) => ({
    assign: cost.sign + cost.verify,
    query: cost.sign + cost.verify + cost.encrypt + 2 * cost.decrypt,
    register: cost.sign + cost.verify + 2 * cost.encrypt,
  });
  const costs = {};
  const ratios = {};
  for (const name of [...PRIMITIVE_ORDER, ...CALL_ORDER]) { costs[name] = []; ratios[name] = []; }
  for (let round = 0; round < rounds; round += 1) {
    const cost = {};
    for (const name of PRIMITIVE_ORDER) {
      cost[name] = timeSync(primitives[name], PRIMITIVES_PER_ROUND) / PRIMITIVES_PER_ROUND;
      costs[name].push(cost[name]);
    }
    const floor = floors(cost);
    for (const name of CALL_ORDER) {
      const perCall = (await timeAsync(calls[name], callsPerRound)) / callsPerRound;
      costs[name].push(perCall);
      ratios[name].push(perCall / floor[name]);
    }
  }

  // Medians over rounds, as in client_cpu.lua.
  const median = (list) => {
    const sorted = [...list].sort((a, b) => a - b);
    const middle = Math.floor((sorted.length - 1) / 2);
    return sorted.length % 2 ? sorted[middle] : (sorted[middle] + sorted[middle + 1]) / 2;
  };
  const primitive = {};
  for (const name of PRIMITIVE_ORDER) primitive[name] = median(costs[name]);
  const call = {};
  const ratio = {};
  for (const name of CALL_ORDER) {
    call[name] = median(costs[name]);
    ratio[name] = median(ratios[name]);
  }
  const floor = floors(primitive);
  process.stdout.write(`RESULT ${JSON.stringify({
    kind: 'sdk_cpu',
    sdk: `wechatpay-axios-plugin ${sdkVersion}`,
    node: process.version,
    openssl: process.versions.openssl,
    mode: config.mode,
    rounds,
    calls_per_round: callsPerRound,
    primitive,
    floor,
    call,
    ratio,
  })}\n`);
  wxpay.client.v3.defaults.httpAgent.destroy();
  wxpay.client.v3.defaults.httpsAgent.destroy();
}

main().catch((err) => {
  const { response } = err;
  const detail = response ? ` (HTTP ${response.status}: ${JSON.stringify(response.data)})` : '';
  process.stderr.write(`sdk_cpu: ${err.message}${detail}\n`);
  process.exit(1);
});
