// A consumer's replica of one tenant, built from the proto files only (no generated code, no
// Python): ListSnapshot for the state and its position, then WatchChanges from that token.
// The cross-language test (tests/integration/test_js_replica.py) drives it:
//
//   node replica.js HOST:PORT TENANT PROTO_ROOT
//
// stdout, one JSON object per line: {"event":"ready"} once the watch confirmed its start,
// then on every "dump" line read from stdin the replica: {"event":"dump", "items": [[kind,
// key, version, value...]], "applied": n, "resyncs": n, "loads": n}.
// Rules (as the Python NearCache): a change applies only if its version is newer than the
// one held (a deletion leaves its version behind); RESYNC_REQUIRED, or a change with
// `resync`, means reload the snapshot and watch from its token.
'use strict';

const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [target, tenant, protoRoot] = process.argv.slice(2);
if (!target || !tenant || !protoRoot) {
  console.error('usage: node replica.js HOST:PORT TENANT PROTO_ROOT');
  process.exit(2);
}

const definition = protoLoader.loadSync(path.join(protoRoot, 'hybridcache/v1/hybridcache.proto'), {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [protoRoot],
});
const v1 = grpc.loadPackageDefinition(definition).hybridcache.v1;
const client = new v1.HybridCache(target, grpc.credentials.createInsecure());

const KINDS = ['KIND_CREDIT_COSTS', 'KIND_ROLE_PERMISSIONS', 'KIND_USER_STATUS', 'KIND_FEATURE_FLAGS'];
const state = { tables: new Map(), versions: new Map(), applied: 0, resyncs: 0, loads: 0 };
let watch = null;
let announced = false;

function out(object) {
  process.stdout.write(JSON.stringify(object) + '\n');
}

function table(kind) {
  if (!state.tables.has(kind)) state.tables.set(kind, new Map());
  return state.tables.get(kind);
}

function valueOf(message, field) {
  return message[field] === undefined || message[field] === null ? null : message[field];
}

function keyOfChange(event) {
  return event.keys.length > 0 ? event.keys[0] : null;
}

function loadSnapshot() {
  return new Promise((resolve, reject) => {
    const tables = new Map();
    const versions = new Map();
    let token = null;
    const call = client.ListSnapshot({ tenant_id: tenant });
    call.on('data', (page) => {
      for (const item of page.items) {
        if (!tables.has(item.kind)) tables.set(item.kind, new Map());
        tables.get(item.kind).set(item.key, valueOf(item, item.value));
        versions.set(`${item.kind}/${item.key}`, Number(item.version));
      }
      if (page.last) token = page.resume_token;
    });
    call.on('error', reject);
    call.on('end', () => {
      if (!token) return reject(new Error('the snapshot ended without its last page'));
      state.tables = tables;
      state.versions = versions;
      state.loads += 1;
      resolve(token);
    });
  });
}

function apply(event) {
  if (event.tenant_id !== tenant) return;
  if (event.resync) return restart('resync event');
  const key = keyOfChange(event);
  if (key === null) return;
  const slot = `${event.kind}/${key}`;
  const version = Number(event.version);
  const held = state.versions.get(slot);
  if (held !== undefined && version <= held) return; // older or the same: ignore
  state.versions.set(slot, version);
  if (event.deleted) table(event.kind).delete(key);
  else table(event.kind).set(key, valueOf(event, event.new_value));
  state.applied += 1;
}

function onMessage(message) {
  if (!announced) {
    announced = true;
    out({ event: 'ready' });
  }
  switch (message.message) {
    case 'change':
      apply(message.change);
      break;
    case 'changes':
      for (const event of message.changes.events) apply(event);
      break;
    case 'resync_required':
      restart(message.resync_required.reason);
      break;
    default: // progress: a heartbeat, nothing to apply
  }
}

function restart(reason) {
  state.resyncs += 1;
  out({ event: 'resync', reason });
  if (watch) {
    const old = watch;
    watch = null;
    old.cancel();
  }
  start();
}

async function start() {
  const token = await loadSnapshot();
  const call = client.WatchChanges({ tenant_ids: [tenant], kinds: KINDS, resume_token: token });
  watch = call;
  call.on('data', (message) => {
    if (watch === call) onMessage(message);
  });
  call.on('error', (error) => {
    if (watch === call && error.code !== grpc.status.CANCELLED) {
      out({ event: 'error', message: error.message });
      process.exit(1);
    }
  });
}

// The replica as [kind number, key, version, value...] rows, the shape the test compares
// with the Wrapper's truth (kinds numbered as in the proto's Kind enum).
const KIND_NUMBER = { KIND_CREDIT_COSTS: 1, KIND_ROLE_PERMISSIONS: 2, KIND_USER_STATUS: 3, KIND_FEATURE_FLAGS: 4 };

function plain(kind, value) {
  switch (kind) {
    case 'KIND_CREDIT_COSTS':
      return [value.cost.value];
    case 'KIND_ROLE_PERMISSIONS':
      return [[...value.permissions].sort()];
    case 'KIND_USER_STATUS':
      return [value.active, [...value.role_ids]];
    default:
      return [value.enabled, value.value];
  }
}

function dump() {
  const items = [];
  for (const [kind, rows] of state.tables) {
    for (const [key, value] of rows) {
      items.push([KIND_NUMBER[kind], key, state.versions.get(`${kind}/${key}`), ...plain(kind, value)]);
    }
  }
  out({ event: 'dump', items, applied: state.applied, resyncs: state.resyncs, loads: state.loads });
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'dump') dump();
  if (line.trim() === 'quit') process.exit(0);
});
process.stdin.on('end', () => process.exit(0));

start().catch((error) => {
  out({ event: 'error', message: String(error && error.message ? error.message : error) });
  process.exit(1);
});
