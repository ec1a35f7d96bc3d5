// npm run test:brokers: runs the broker matrix (dist/test/matrix/*.matrix.js) against every installed
// broker, prints the matrix (feature x broker) and writes it to docs/brokers.md.
//
//   node scripts/test-brokers.mjs [--out <file>] [--only <broker,...>]
//
// A cell is "pass" when its tests pass, "not supported by broker" when its tests pass by showing
// how the module reports what the broker lacks (their evidence is listed), "fail" when a test
// fails, and "not installed" when the broker is missing (REQUIRE_BROKERS=all turns that into a
// failure, see the helpers). The exit code is 1 when a cell fails or has no test.
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const args = process.argv.slice(2);
const option = (name) => {
    const at = args.indexOf(name);
    return at >= 0 ? args[at + 1] : undefined;
};
const only = option('--only')?.split(',');
// docs/brokers.md holds the full matrix: a run of some brokers writes it only when told where.
const out = option('--out') ?? (only ? null : 'docs/brokers.md');
const IDS = ['aedes', 'mosquitto', 'nats', 'rabbitmq'];
const unknown = only?.filter((id) => !IDS.includes(id)) ?? [];
if (unknown.length > 0 || only?.length === 0) {
    console.error(`--only takes broker ids from ${IDS.join(', ')}, not '${unknown.join(',')}'`);
    process.exit(2);
}
/** REQUIRE_BROKERS: `all`, or broker ids; a required broker that is missing fails the run. */
const requiredList = (process.env.REQUIRE_BROKERS ?? '').toLowerCase().split(/[\s,]+/).filter(Boolean);
const required = (id) => requiredList.includes('all') || requiredList.includes(id);

const matrixDir = 'dist/test/matrix';
if (!existsSync(matrixDir)) {
    console.error(`No ${matrixDir}: run the build first (npm run test:brokers does).`);
    process.exit(1);
}
// Only --only chooses the brokers: a MATRIX_ONLY left in the environment must not drop any.
if (only) process.env.MATRIX_ONLY = only.join(',');
else delete process.env.MATRIX_ONLY;
const { FEATURES, MATRIX_BROKERS: brokers } = require(join(process.cwd(), matrixDir, 'matrixBrokers.js'));
const files = readdirSync(matrixDir).filter((f) => f.endsWith('.matrix.js')).sort().map((f) => join(matrixDir, f));

const work = mkdtempSync(join(tmpdir(), 'pip-mqtt-matrix-'));
const eventsFile = join(work, 'events.jsonl');
const evidenceFile = join(work, 'evidence.jsonl');
writeFileSync(evidenceFile, '');
const started = Date.now();
const run = spawnSync(process.execPath, [
    '--test', '--test-concurrency=1', '--test-force-exit',
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    `--test-reporter=${join(dirname(fileURLToPath(import.meta.url)), 'matrix-reporter.mjs')}`, `--test-reporter-destination=${eventsFile}`,
    ...files,
], { stdio: 'inherit', env: { ...process.env, MATRIX_EVIDENCE: evidenceFile } });
const seconds = Math.round((Date.now() - started) / 1000);

const lines = (file) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
const results = lines(eventsFile);
const evidence = lines(evidenceFile);
rmSync(work, { recursive: true, force: true });

/** The broker and feature of a test: the nearest `[broker/feature]` in its titles, the broker of any `[broker]`. */
function cellOf(path) {
    let broker;
    let feature;
    for (const title of path) {
        const m = /\[(aedes|mosquitto|nats|rabbitmq)(?:\/([\w-]+))?\]/.exec(title);
        if (!m) continue;
        broker = m[1];
        if (m[2]) feature = m[2];
    }
    return { broker, feature };
}

const cells = new Map();
const cell = (broker, feature) => {
    const key = `${broker}/${feature}`;
    if (!cells.has(key)) cells.set(key, { tests: 0, failed: [], skipped: null, evidence: [], deviations: [] });
    return cells.get(key);
};
for (const result of results) {
    const { broker, feature } = cellOf(result.path);
    if (!broker) continue;
    const features = feature ? [feature] : Object.keys(FEATURES);
    for (const f of features) {
        const c = cell(broker, f);
        if (result.skip) c.skipped = typeof result.skip === 'string' ? result.skip : 'skipped';
        // A suite fails when a test in it fails: that test is counted in its own cell already.
        else if (result.outcome === 'fail' && result.failureType === 'subtestsFailed') continue;
        else if (result.outcome === 'fail') c.failed.push(`${result.path.slice(-1)[0]}: ${result.error ?? 'failed'}`);
        else if (result.kind === 'test' && feature) c.tests++;
    }
}
// Ports and the tests' random topics change at every run; the evidence reads the same without them.
const steady = (text) => text.replace(/127\.0\.0\.1:\d+/g, '127.0.0.1:<port>').replace(/\b[\w-]+\/[0-9a-f]{8}-\d+\b/g, '<topic>');
for (const e of evidence) {
    const c = cell(e.broker, e.feature);
    (e.kind === 'deviation' ? c.deviations : c.evidence).push(steady(e.evidence));
}

const STATUS = {
    pass: 'pass', deviates: 'pass, broker deviates', unsupported: 'not supported by broker', fail: 'FAIL', skipped: 'not installed', missing: 'FAIL (no test)',
};
function statusOf(broker, feature) {
    const c = cells.get(`${broker.id}/${feature}`);
    if (c?.failed.length) return 'fail';
    if (c?.skipped && c.tests === 0) return 'skipped';
    if (!c || c.tests === 0) return 'missing';
    return c.evidence.length ? 'unsupported' : c.deviations.length ? 'deviates' : 'pass';
}

function version(pkg) {
    try {
        return execFileSync('dpkg-query', ['-W', '-f=${Version}', pkg], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    } catch {
        return null;
    }
}
const npmVersion = (name) => JSON.parse(readFileSync(join('node_modules', name, 'package.json'), 'utf8')).version;
const versions = {
    aedes: npmVersion('aedes'),
    mosquitto: version('mosquitto'),
    nats: version('nats-server'),
    rabbitmq: version('rabbitmq-server'),
};
const column = (b) => `${b.name}${versions[b.id] ? ` ${versions[b.id]}` : ''}`;

// ---------------------------------------------------------------- the text matrix on stdout
const rows = Object.entries(FEATURES).map(([feature, label]) => [label, ...brokers.map((b) => STATUS[statusOf(b, feature)])]);
const header = ['Feature', ...brokers.map(column)];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cols) => cols.map((c, i) => c.padEnd(widths[i])).join(' | ');
console.log(`\nBroker matrix (${seconds} s):\n`);
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('-+-'));
for (const row of rows) console.log(line(row));

const problems = [];
for (const b of brokers) {
    for (const feature of Object.keys(FEATURES)) {
        const status = statusOf(b, feature);
        const c = cells.get(`${b.id}/${feature}`);
        if (status === 'fail') problems.push(`${b.name} / ${FEATURES[feature]}: ${c.failed.join('; ')}`);
        if (status === 'missing') problems.push(`${b.name} / ${FEATURES[feature]}: no test ran for this cell`);
        if (status === 'skipped' && required(b.id)) problems.push(`${b.name} / ${FEATURES[feature]}: not installed, and REQUIRE_BROKERS requires it`);
    }
}
if (problems.length) {
    console.log('\nFailed cells:');
    for (const p of problems) console.log(`- ${p}`);
}

// ---------------------------------------------------------------- docs/brokers.md
const md = [];
md.push('# Broker compatibility matrix', '');
md.push('Generated by `npm run test:brokers` (scripts/test-brokers.mjs) from the tests in `test/matrix/`; do not edit by hand.');
md.push(`Last run: ${new Date().toISOString().slice(0, 10)}, ${seconds} s, Node.js ${process.version}, MQTT.js ${npmVersion('mqtt')}, ${cpus().length} CPUs.`, '');
md.push('Every cell is backed by tests: **pass** means they passed; **not supported by broker** means the broker lacks the feature');
md.push('and the tests passed by checking that the module reports it with a typed error (the evidence below is what they saw);');
md.push('**broker deviates** means the tests passed by checking a known departure of the broker from MQTT, described below;');
md.push('**FAIL** means a test failed; **not installed** means the broker was not found on the machine that ran the matrix.', '');
md.push(`| Feature | ${brokers.map(column).join(' | ')} |`);
md.push(`|---|${brokers.map(() => '---').join('|')}|`);
for (const [feature, label] of Object.entries(FEATURES)) {
    const cellsText = brokers.map((b) => {
        const status = statusOf(b, feature);
        const c = cells.get(`${b.id}/${feature}`);
        const text = status === 'pass' ? `pass (${c.tests})`
            : status === 'deviates' ? `pass (${c.tests}), broker deviates ([evidence](#${b.id}-${feature}))`
                : status === 'unsupported' ? `not supported by broker ([evidence](#${b.id}-${feature}))` : STATUS[status];
        return status === 'fail' || status === 'missing' ? `**${text}**` : text;
    });
    md.push(`| ${label} | ${cellsText.join(' | ')} |`);
}
md.push('', 'The number in a pass cell counts its tests.', '');
const withEvidence = [];
for (const b of brokers) {
    for (const feature of Object.keys(FEATURES)) {
        const status = statusOf(b, feature);
        if (status === 'unsupported') withEvidence.push([b, feature, cells.get(`${b.id}/${feature}`).evidence]);
        if (status === 'deviates') withEvidence.push([b, feature, cells.get(`${b.id}/${feature}`).deviations]);
    }
}
if (withEvidence.length) {
    md.push('## Evidence', '');
    for (const [b, feature, texts] of withEvidence) {
        md.push(`### ${b.id}-${feature}`, '', `**${b.name}, ${FEATURES[feature]}**: what the tests saw in this run.`, '');
        for (const t of texts) md.push(`> ${t.replace(/\n/g, ' ')}`, '');
    }
}
const skipped = brokers.filter((b) => Object.keys(FEATURES).every((f) => statusOf(b, f) === 'skipped'));
if (skipped.length) {
    md.push('## Not installed', '');
    for (const b of skipped) md.push(`- ${b.name}: ${cells.get(`${b.id}/qos0`)?.skipped ?? 'skipped'}`);
    md.push('');
}
if (problems.length) {
    md.push('## Failed cells', '');
    for (const p of problems) md.push(`- ${p.replace(/\n/g, ' ')}`);
    md.push('');
}
if (out) {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, md.join('\n'));
    console.log(`\nWritten to ${out}`);
}

process.exit(problems.length > 0 || run.status !== 0 ? 1 : 0);
