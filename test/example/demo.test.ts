import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { runScript } from '../helpers/process';

describe('npm start (the demo)', { timeout: 60000 }, () => {
    it('runs the container on the embedded broker, the worker group splits the jobs, and a worker killed mid-job loses none', async () => {
        const { code, output } = await runScript("require('./dist/example/demo.js')", 45000);
        assert.equal(code, 0, output);
        assert.match(output, /Started the embedded broker/);
        assert.match(output, /worker1 handled [1-9]\d*, worker2 handled [1-9]\d*: 10 of 10 jobs, 0 twice; audit saw 10\./, output);
        assert.match(output, /killed the worker \(SIGKILL\) in the middle of job 3/, output);
        assert.match(output, /The worker finished 6 of 6 jobs after it was killed in the middle of job 3: nothing lost\./, output);
        assert.match(output, /Container mqtt-demo stopped/);
    });
});
