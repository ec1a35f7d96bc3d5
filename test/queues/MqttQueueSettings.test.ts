import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigException, ConfigParams } from 'pip-services3-commons-nodex';

import { MqttErrorCode, MqttMessageQueue } from '../../src';
import { readQueueSettings } from '../../src/queues/MqttQueueSettings';

describe('MqttMessageQueue settings', () => {
    it('documents its defaults: an empty configuration gives exactly these', () => {
        assert.deepEqual(readQueueSettings(null, new ConfigParams(), 'orders'), {
            topic: 'orders',
            filter: 'orders',
            group: null,
            serializeEnvelope: false,
            autosubscribe: false,
            qos: 0,
            retain: false,
            maxBuffered: 10000,
            acknowledge: 'after_processing',
            deadLetterTopic: null,
        });
        assert.deepEqual(MqttMessageQueue.defaultConfig.getAsObject(), {
            'options.serialize_envelope': 'false', 'options.autosubscribe': 'false', 'options.qos': '0',
            'options.retain': 'false', 'options.max_buffered': '10000', 'options.acknowledge': 'after_processing',
        });
    });

    it('reads every key', () => {
        const settings = readQueueSettings(null, ConfigParams.fromTuples(
            'topic', 'jobs/+/in', 'options.serialize_envelope', true, 'options.autosubscribe', 'true', 'options.qos', 2,
            'options.retain', true, 'options.group', 'workers', 'options.max_buffered', 7,
            'options.acknowledge', 'on_arrival', 'options.dead_letter_topic', 'jobs/dead',
        ), 'ignored');
        assert.deepEqual(settings, {
            topic: 'jobs/+/in',
            filter: '$share/workers/jobs/+/in',
            group: 'workers',
            serializeEnvelope: true,
            autosubscribe: true,
            qos: 2,
            retain: true,
            maxBuffered: 7,
            acknowledge: 'on_arrival',
            deadLetterTopic: 'jobs/dead',
        });
    });

    it('names the key in each configuration error', () => {
        const cases: [unknown[], string | null, string, string | null][] = [
            [[], null, MqttErrorCode.NoTopic, null],
            [['topic', ''], '', MqttErrorCode.NoTopic, null],
            [['topic', 'a/#/b'], null, MqttErrorCode.BadOption, 'topic'],
            [['topic', '$share/g/t'], null, MqttErrorCode.BadOption, 'topic'],
            [['options.qos', 3], 'q', MqttErrorCode.BadOption, 'options.qos'],
            [['options.qos', 'high'], 'q', MqttErrorCode.BadOption, 'options.qos'],
            [['options.max_buffered', 0], 'q', MqttErrorCode.BadOption, 'options.max_buffered'],
            [['options.max_buffered', -5], 'q', MqttErrorCode.BadOption, 'options.max_buffered'],
            [['options.group', 'a/b'], 'q', MqttErrorCode.BadOption, 'options.group'],
            [['options.group', 'a+'], 'q', MqttErrorCode.BadOption, 'options.group'],
            [['options.retain', 'sometimes'], 'q', MqttErrorCode.BadOption, 'options.retain'],
            [['options.autosubscribe', 'maybe'], 'q', MqttErrorCode.BadOption, 'options.autosubscribe'],
            [['options.serialize_envelope', 'json'], 'q', MqttErrorCode.BadOption, 'options.serialize_envelope'],
            [['options.acknowledge', 'later'], 'q', MqttErrorCode.BadOption, 'options.acknowledge'],
            [['options.dead_letter_topic', 'dead/+'], 'q', MqttErrorCode.BadOption, 'options.dead_letter_topic'],
            [['options.dead_letter_topic', 'dead\u0001'], 'q', MqttErrorCode.BadOption, 'options.dead_letter_topic'],
        ];
        for (const [tuples, name, code, key] of cases) {
            assert.throws(() => readQueueSettings('cid', ConfigParams.fromTuples(...tuples), name), (err: ConfigException) => {
                assert.ok(err instanceof ConfigException, JSON.stringify(tuples));
                assert.equal(err.code, code, JSON.stringify(tuples));
                assert.equal(err.correlation_id, 'cid');
                if (key) assert.equal(err.details.getAsString('key'), key, JSON.stringify(tuples));
                return true;
            });
        }
    });
});
