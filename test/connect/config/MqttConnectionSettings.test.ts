import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';

import { readSettings } from '../../../src/connect/config/MqttConnectionSettings';

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
