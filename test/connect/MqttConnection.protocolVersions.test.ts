// options.protocol_version: 3 (MQTT 3.1), 4 (3.1.1) and 5; MQTT 5 options need 5, and a broker without MQTT 5 refuses it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigException, ConnectionException } from 'pip-services3-commons-nodex';

import { MqttErrorCode } from '../../src';
import { mosquittoSkip, uniqueTopic, waitFor } from '../helpers/brokers';
import { RecordingListener } from '../helpers/components';
import { fixture } from '../helpers/fixture';

describe('MqttConnection MQTT 5 settings', { timeout: 30000 }, () => {
    it('rejects protocol versions other than 3, 4 and 5, and MQTT 5 options without MQTT 5', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        for (const [tuples, key] of [
            [['options.protocol_version', 2], 'options.protocol_version'],
            [['options.protocol_version', 'five'], 'options.protocol_version'],
            [['options.session_expiry', 60], 'options.session_expiry'],
            [['options.protocol_version', 3, 'options.session_expiry', 60], 'options.session_expiry'],
            [['options.topic_alias_maximum', 10], 'options.topic_alias_maximum'],
            [['options.broker_assigns_client_id', true], 'options.broker_assigns_client_id'],
            [['options.protocol_version', 5, 'options.topic_alias_maximum', 65536], 'options.topic_alias_maximum'],
            [['options.protocol_version', 5, 'options.broker_assigns_client_id', 'maybe'], 'options.broker_assigns_client_id'],
            [['options.protocol_version', 5, 'options.session_expiry', -1], 'options.session_expiry'],
            [['options.protocol_version', 5, 'options.session_expiry', 2 ** 32], 'options.session_expiry'],
        ] as [unknown[], string][]) {
            const connection = f.connection(broker.url, ...tuples);
            await assert.rejects(connection.open(null), (err: ConfigException) => {
                assert.ok(err instanceof ConfigException);
                assert.equal(err.code, MqttErrorCode.BadOption);
                assert.equal(err.details.getAsString('key'), key);
                return true;
            }, JSON.stringify(tuples));
        }
    });

    it('reports a broker without MQTT 5 (Aedes) as a refused connection with its reason code', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url, 'options.protocol_version', 5);
        await assert.rejects(connection.open(null), (err: ConnectionException) => {
            assert.ok(err instanceof ConnectionException);
            assert.equal(err.code, MqttErrorCode.ConnectRefused);
            // 1: unacceptable protocol version (MQTT 3.1.1, 3.2.2.3).
            assert.equal(err.details.getAsInteger('reason_code'), 1);
            return true;
        });
        assert.equal(connection.isOpen(), false);
    });
});

describe('MqttConnection MQTT 3.1', { timeout: 60000 }, () => {
    for (const kind of ['aedes', 'mosquitto'] as const) {
        it(`connects with protocol_version 3 and delivers (${kind})`, { skip: kind === 'mosquitto' && mosquittoSkip() }, async (t) => {
            const f = fixture(t);
            const broker = kind === 'aedes' ? await f.aedes() : await f.mosquitto();
            const connection = f.connection(broker.url, 'options.protocol_version', 3);
            await connection.open(null);
            const options = connection.getConnection()!.options;
            assert.equal(options.protocolVersion, 3);
            assert.equal(options.protocolId, 'MQIsdp');
            const topic = uniqueTopic('v31');
            const listener = new RecordingListener();
            await connection.subscribe(topic, { qos: 1 }, listener);
            await connection.publish(topic, 'hello 3.1', { qos: 1 });
            await waitFor(() => listener.received.length === 1, 5000, 'the message');
            assert.equal(listener.received[0].data.toString(), 'hello 3.1');
        });
    }
});
