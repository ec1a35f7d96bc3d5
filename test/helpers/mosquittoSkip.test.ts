import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

/** Runs a one-test file that needs Mosquitto, with the given environment. */
function runNeedingMosquitto(env: Record<string, string>): { status: number | null; output: string } {
    const dir = mkdtempSync(join(tmpdir(), 'pip-mqtt-skip-'));
    try {
        const file = join(dir, 'needs-mosquitto.test.js');
        writeFileSync(file, `
            const { describe, it } = require('node:test');
            const { mosquittoSkip, startMosquitto } = require(${JSON.stringify(join(__dirname, 'brokers.js'))});
            describe('needs mosquitto', { skip: mosquittoSkip() }, () => {
                it('starts it', async () => { const b = await startMosquitto(); await b.stop(); });
            });`);
        const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
        if (env.REQUIRE_MOSQUITTO === undefined) delete childEnv.REQUIRE_MOSQUITTO;
        // Inherited, this would make the child think it runs inside this test runner.
        delete childEnv.NODE_TEST_CONTEXT;
        const result = spawnSync(process.execPath, ['--test', '--test-reporter=tap', file], { env: childEnv, encoding: 'utf8', timeout: 30000 });
        return { status: result.status, output: `${result.stdout}${result.stderr}` };
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

describe('Mosquitto test gating', { timeout: 60000 }, () => {
    it('skips with the reason when mosquitto is missing', () => {
        const { status, output } = runNeedingMosquitto({ MOSQUITTO_BIN: '/nonexistent/mosquitto' });
        assert.equal(status, 0, output);
        assert.match(output, /# SKIP mosquitto binary not found/);
        assert.match(output, /^# fail 0$/m);
    });

    it('fails instead when REQUIRE_MOSQUITTO=1', () => {
        const { status, output } = runNeedingMosquitto({ MOSQUITTO_BIN: '/nonexistent/mosquitto', REQUIRE_MOSQUITTO: '1' });
        assert.notEqual(status, 0, output);
        assert.match(output, /install the Debian package mosquitto/);
        assert.match(output, /# fail 1/);
    });
});
