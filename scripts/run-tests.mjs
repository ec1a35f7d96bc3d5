// Runs every compiled test file with Node's test runner. Node 20 takes no glob patterns on the
// command line (and Node 22 reads directories differently), so the files are listed here.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

function find(dir) {
    return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) return find(path);
        return entry.name.endsWith('.test.js') ? [path] : [];
    });
}

const files = find('dist/test').sort();
if (files.length === 0) {
    console.error('No test files under dist/test: run the build first.');
    process.exit(1);
}
// --test-force-exit: a test that fails and leaves a client behind must not hang the run (and CI).
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-force-exit', ...process.argv.slice(2), ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
