// Runs every compiled test file with Node's test runner. Node 20 takes no glob patterns on the
// command line (and Node 22 reads directories differently), so the files are listed here.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

function find(dir) {
    return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) return find(path);
        return entry.name.endsWith('.test.js') ? [path] : [];
    });
}

// The longest files start first, so that none of them is left running alone at the end: the
// RabbitMQ helper test (its node takes 10 to 30 s to start), and the crash and fault runs.
const FIRST = ['helpers/rabbitmq.test.js', 'connect/MqttConnection.deliveryUnderFaults.test.js'];
const rank = (file) => {
    const at = FIRST.findIndex((name) => file.endsWith(join(...name.split('/'))));
    return at < 0 ? FIRST.length : at;
};
const files = find('dist/test').sort().sort((a, b) => rank(a) - rank(b));
if (files.length === 0) {
    console.error('No test files under dist/test: run the build first.');
    process.exit(1);
}
// Files run in parallel, each in a process of its own: every broker a test uses is private, on
// free ports, with its own temp folder. Most of a test's time is spent waiting (for reconnects,
// keepalives, brokers starting), so three files per CPU run at once (on 2 CPUs: 2 files took
// 2 min, 4 took 70 s, 6 took 51 s, and more no less, the longest file taking about 45 s);
// TEST_CONCURRENCY=1 runs them one after another.
const concurrency = Number(process.env.TEST_CONCURRENCY ?? 3 * availableParallelism());
if (!Number.isInteger(concurrency) || concurrency < 1) {
    console.error(`TEST_CONCURRENCY must be a whole number above 0, not '${process.env.TEST_CONCURRENCY}'`);
    process.exit(2);
}
// --test-force-exit: a test that fails and leaves a client behind must not hang the run (and CI).
const result = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, '--test-force-exit', ...process.argv.slice(2), ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
