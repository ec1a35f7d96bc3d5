import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { backoffDelay, RECONNECT_JITTER } from '../../../src/connect/link/MqttReconnector';

describe('reconnect backoff', () => {
    it('starts at reconnect_timeout and doubles up to the maximum, without jitter', () => {
        const waits = [0, 1, 2, 3, 4, 5, 6, 40, 2000].map((attempt) => backoffDelay(attempt, 100, 1000, 0));
        assert.deepEqual(waits, [100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000]);
    });

    it('takes at most a quarter off each wait at random, and never goes below 1 ms', () => {
        assert.equal(RECONNECT_JITTER, 0.25);
        assert.equal(backoffDelay(0, 1000, 30000, 0.999999), 750);
        assert.equal(backoffDelay(3, 1000, 30000, 0.5), 7000);
        assert.equal(backoffDelay(0, 1, 1, 0.99), 1);
        for (let i = 0; i < 1000; i++) {
            const wait = backoffDelay(i % 8, 100, 3000);
            const full = Math.min(3000, 100 * 2 ** (i % 8));
            assert.ok(wait >= full * 0.75 && wait <= full, `${wait} for ${full}`);
        }
    });
});
