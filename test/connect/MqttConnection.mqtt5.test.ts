import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigException, ConnectionException } from 'pip-services3-commons-nodex';

import { MqttErrorCode } from '../../src';
import { delay, mosquittoSkip, startAedes, startMosquitto, uniqueTopic, waitFor } from '../helpers/brokers';
import { dropConnection, newConnection, RecordingListener, uniqueClientId } from '../helpers/components';



describe('MqttConnection MQTT 5 sessions (mosquitto)', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    const cases: { name: string; tuples: unknown[]; kept: boolean; expiry: number | undefined }[] = [
        { name: 'clean_session false keeps the session (no expiry)', tuples: ['options.clean_session', false], kept: true, expiry: 0xFFFFFFFF },
        { name: 'clean_session false with session_expiry 0 ends it at the disconnect',
            tuples: ['options.clean_session', false, 'options.session_expiry', 0], kept: false, expiry: 0 },
        { name: 'clean_session true with session_expiry 60 resumes it after a lost connection',
            tuples: ['options.session_expiry', 60], kept: true, expiry: 60 },
        { name: 'clean_session true without session_expiry ends it at the disconnect', tuples: [], kept: false, expiry: undefined },
    ];
    for (const { name, tuples, kept, expiry } of cases) {
        it(name, async () => {
            const broker = await startMosquitto();
            const sub = newConnection(broker.url, 'client_id', uniqueClientId('v5'), 'options.protocol_version', 5,
                'options.reconnect_timeout', 1000, ...tuples);
            const pub = newConnection(broker.url, 'options.protocol_version', 5);
            try {
                await sub.open(null);
                await pub.open(null);
                const options = sub.getConnection()!.options;
                assert.equal(options.protocolVersion, 5);
                assert.equal(options.properties?.sessionExpiryInterval, expiry);
                const topic = uniqueTopic('v5');
                const listener = new RecordingListener();
                await sub.subscribe(topic, { qos: 1 }, listener);
                await sub.subscribe(`${topic}/marker`, { qos: 1 }, listener);
                await dropConnection(sub);
                for (let i = 1; i <= 5; i++) await pub.publish(topic, String(i), { qos: 1 });
                await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
                await waitFor(async () => {
                    await pub.publish(`${topic}/marker`, '0', { qos: 1 });
                    return listener.topics().includes(`${topic}/marker`);
                }, 10000, 'the marker (subscriptions back)');
                const got = listener.received.filter((m) => m.topic === topic).map((m) => m.data.toString());
                assert.deepEqual(got, kept ? ['1', '2', '3', '4', '5'] : []);
            } finally {
                await sub.close(null);
                await pub.close(null);
                await broker.stop();
            }
        });
    }

    it('starts a clean session at open() with clean_session true and a session_expiry', async () => {
        const broker = await startMosquitto();
        const id = uniqueClientId('v5');
        const tuples = ['client_id', id, 'options.protocol_version', 5, 'options.session_expiry', 60];
        const first = newConnection(broker.url, ...tuples);
        const second = newConnection(broker.url, ...tuples);
        const pub = newConnection(broker.url);
        try {
            await first.open(null);
            await pub.open(null);
            const topic = uniqueTopic('v5-clean-start');
            await first.subscribe(topic, { qos: 1 }, new RecordingListener());
            await first.close(null);
            await pub.publish(topic, 'while-away', { qos: 1 });
            const listener = new RecordingListener();
            await second.open(null);
            await second.subscribe(topic, { qos: 1 }, listener);
            await pub.publish(topic, 'live', { qos: 1 });
            await waitFor(() => listener.received.length > 0, 5000, 'the live message');
            await delay(100);
            assert.deepEqual(listener.received.map((m) => m.data.toString()), ['live'], 'the kept session was discarded at open()');
        } finally {
            await first.close(null);
            await second.close(null);
            await pub.close(null);
            await broker.stop();
        }
    });
});

describe('MqttConnection MQTT 5 settings', { timeout: 30000 }, () => {
    it('rejects protocol versions other than 3, 4 and 5, and MQTT 5 options without MQTT 5', async () => {
        const broker = await startAedes();
        try {
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
                const connection = newConnection(broker.url, ...tuples);
                await assert.rejects(connection.open(null), (err: ConfigException) => {
                    assert.ok(err instanceof ConfigException);
                    assert.equal(err.code, MqttErrorCode.BadOption);
                    assert.equal(err.details.getAsString('key'), key);
                    return true;
                }, JSON.stringify(tuples));
            }
        } finally {
            await broker.stop();
        }
    });

    it('reports a broker without MQTT 5 (Aedes) as a refused connection with its reason code', async () => {
        const broker = await startAedes();
        const connection = newConnection(broker.url, 'options.protocol_version', 5);
        try {
            await assert.rejects(connection.open(null), (err: ConnectionException) => {
                assert.ok(err instanceof ConnectionException);
                assert.equal(err.code, MqttErrorCode.ConnectRefused);
                // 1: unacceptable protocol version (MQTT 3.1.1, 3.2.2.3).
                assert.equal(err.details.getAsInteger('reason_code'), 1);
                return true;
            });
            assert.equal(connection.isOpen(), false);
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });
});
