// npm run test:clusters: runs the cluster suites (dist/test/clusters/*.cluster.js), one file at a
// time (each starts a cluster of its own, on free loopback ports).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const dir = 'dist/test/clusters';
const files = readdirSync(dir).filter((f) => f.endsWith('.cluster.js')).sort().map((f) => join(dir, f));
if (files.length === 0) {
    console.error(`No cluster suites under ${dir}: run the build first.`);
    process.exit(1);
}
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-force-exit', ...process.argv.slice(2), ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
