import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { checkTopicName, parseFilter } from '../../src/connect/MqttTopics';

describe('MQTT topic rules', () => {
    it('accepts valid topic names and explains invalid ones', () => {
        assert.equal(checkTopicName('a/b/c'), null);
        assert.equal(checkTopicName('/'), null);
        assert.equal(checkTopicName('$SYS/x'), null);
        assert.match(checkTopicName('') ?? '', /empty/);
        assert.match(checkTopicName('a/+') ?? '', /wildcards/);
        assert.match(checkTopicName('a/#') ?? '', /wildcards/);
        assert.match(checkTopicName('a\u0000b') ?? '', /NUL/);
        assert.match(checkTopicName('x'.repeat(65536)) ?? '', /65535 bytes/);
        assert.match(checkTopicName(42) ?? '', /string/);
    });

    it('parses filters and shared subscriptions', () => {
        assert.deepEqual(parseFilter('a/+/#'), { brokerFilter: 'a/+/#', matchFilter: 'a/+/#', shareGroup: null, hasWildcards: true });
        assert.deepEqual(parseFilter('$share/g1/jobs/+'), { brokerFilter: '$share/g1/jobs/+', matchFilter: 'jobs/+', shareGroup: 'g1', hasWildcards: true });
        assert.deepEqual(parseFilter('a/b'), { brokerFilter: 'a/b', matchFilter: 'a/b', shareGroup: null, hasWildcards: false });
    });

    it('rejects malformed filters with a reason', () => {
        for (const bad of ['', 'a/#/b', 'a/b#', 'a+/b', 'a/+b', '$share/', '$share/g', '$share/g/', '$share//a', '$share/g+/a', 'a\u0000']) {
            assert.equal(typeof parseFilter(bad), 'string', `filter '${bad}' should be rejected`);
        }
        assert.equal(typeof parseFilter(undefined), 'string');
    });
});
