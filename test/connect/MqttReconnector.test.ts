import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';

import { backoffDelay, RECONNECT_JITTER } from '../../src/connect/link/MqttReconnector';
import { readSettings } from '../../src/connect/config/MqttConnectionSettings';

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

describe('reconnect settings', () => {
    const read = (...tuples: unknown[]) => readSettings(null, ConfigParams.fromTuples(...tuples), new ConfigParams(), 'generated');

    it('defaults the maximum wait to 30 s, or to reconnect_timeout when that is longer', () => {
        assert.equal(read().maxReconnectTimeout, 30000);
        assert.equal(read('options.reconnect_timeout', 60000).maxReconnectTimeout, 60000);
        assert.equal(read('options.reconnect_timeout', 10, 'options.max_reconnect_timeout', 10).maxReconnectTimeout, 10);
    });

    it('reads clean_session and max_offline_messages from config or the uri query', () => {
        const defaults = read();
        assert.equal(defaults.cleanSession, true);
        assert.equal(defaults.maxOfflineMessages, 10000);
        const set = read('options.clean_session', false, 'options.max_offline_messages', 0);
        assert.equal(set.cleanSession, false);
        assert.equal(set.maxOfflineMessages, 0);
        const fromUri = readSettings(null, new ConfigParams(),
            ConfigParams.fromTuples('options.clean_session', 'false', 'options.max_reconnect_timeout', '5000'), 'generated');
        assert.equal(fromUri.cleanSession, false);
        assert.equal(fromUri.maxReconnectTimeout, 5000);
    });
});
