// MQTT 5 publish properties and subscribe options: passed through when valid, refused when the broker or MQTT.js would choke on them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { BadRequestException } from 'pip-services3-commons-nodex';

import { MqttErrorCode } from '../../src';
import { delay, mosquittoSkip, uniqueTopic, waitFor } from '../helpers/brokers';
import { dropConnection, RecordingListener, settle, testReferences } from '../helpers/components';
import { fixture } from '../helpers/fixture';

describe('MqttConnection MQTT 5 options without MQTT 5', { timeout: 30000 }, () => {
    it('refuses MQTT 5 properties and subscribe flags on an MQTT 3.1.1 connection instead of dropping them', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url);
        await connection.open(null);
        const topic = uniqueTopic('v4');
        await assert.rejects(connection.publish(topic, 'x', { qos: 1, properties: { contentType: 'text/plain' } }),
            (err: BadRequestException) => err instanceof BadRequestException && err.code === MqttErrorCode.InvalidOptions
                && /properties.*MQTT 5/.test(err.message));
        for (const flag of [{ rh: 1 }, { nl: true }, { rap: true }] as const) {
            await assert.rejects(connection.subscribe(topic, { qos: 0, ...flag }, new RecordingListener()),
                { code: MqttErrorCode.InvalidOptions }, JSON.stringify(flag));
        }
        assert.equal(connection.getSubscriptions().length, 0);
        // Empty properties carry nothing: allowed.
        await connection.publish(topic, 'x', { qos: 1, properties: {} });
    });
});

describe('MqttConnection MQTT 5 publish properties (mosquitto)', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('passes publish properties through to the subscriber', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const sub = f.connection(broker.url, 'options.protocol_version', 5);
        const pub = f.connection(broker.url, 'options.protocol_version', 5);
        await Promise.all([sub.open(null), pub.open(null)]);
        const topic = uniqueTopic('props');
        const listener = new RecordingListener();
        await sub.subscribe(topic, { qos: 1 }, listener);
        const properties = {
            messageExpiryInterval: 300,
            payloadFormatIndicator: true,
            contentType: 'application/json',
            responseTopic: `${topic}/reply`,
            correlationData: Buffer.from([1, 2, 3, 250]),
            userProperties: { tenant: 'acme', tags: ['a', 'b'] },
        };
        const frozen = Object.freeze({ qos: 1 as const, properties: Object.freeze({ ...properties }) });
        await pub.publish(topic, '{"t":21.5}', frozen);
        await waitFor(() => listener.received.length === 1, 5000, 'the message');
        const got = listener.received[0].packet.properties ?? {};
        assert.equal(got.contentType, 'application/json');
        assert.equal(got.responseTopic, `${topic}/reply`);
        assert.deepEqual(got.correlationData, Buffer.from([1, 2, 3, 250]));
        assert.deepEqual({ ...got.userProperties }, { tenant: 'acme', tags: ['a', 'b'] });
        assert.equal(got.payloadFormatIndicator, true);
        // The broker forwards the expiry less the time the message waited (none here, or a second).
        assert.ok(got.messageExpiryInterval !== undefined && got.messageExpiryInterval >= 299, String(got.messageExpiryInterval));
        assert.deepEqual(frozen.properties, properties, 'the caller\'s options are not modified');
    });

    it('refuses publish and subscribe properties MQTT.js would choke on, and stays connected', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const { references, counters } = testReferences();
        const connection = f.connection(broker.url, 'options.protocol_version', 5);
        connection.setReferences(references);
        await connection.open(null);
        const topic = uniqueTopic('badprops');
        const badPublish: Record<string, unknown>[] = [
            { messageExpiryInterval: -1 }, { messageExpiryInterval: 'x' }, { messageExpiryInterval: 2 ** 33 },
            { contentType: 5 }, { payloadFormatIndicator: 1 }, { userProperties: { a: null } }, { userProperties: { a: 5 } },
            { correlationData: 42 }, { responseTopic: 'a/+' }, { topicAlias: 3 }, { foo: 'bar' }, { subscriptionIdentifier: 1 },
        ];
        for (const properties of badPublish) {
            await assert.rejects(connection.publish(topic, 'x', { qos: 1, properties } as never),
                (err: BadRequestException) => err instanceof BadRequestException && err.code === MqttErrorCode.InvalidOptions,
                JSON.stringify(properties));
        }
        for (const properties of [{ subscriptionIdentifier: 0 }, { subscriptionIdentifier: 1.5 }, { userProperties: 'x' }, { bar: 1 }]) {
            await assert.rejects(connection.subscribe(topic, { qos: 1, properties } as never, new RecordingListener()),
                { code: MqttErrorCode.InvalidOptions }, JSON.stringify(properties));
        }
        const listener = new RecordingListener();
        await connection.subscribe(topic, { qos: 1, properties: { subscriptionIdentifier: 7 } }, listener);
        await connection.publish(topic, 'fine', { qos: 1, properties: { userProperties: { a: '5' }, correlationData: Buffer.from('text') } });
        await waitFor(() => listener.received.length === 1, 5000, 'the valid message');
        assert.deepEqual(listener.received[0].packet.properties?.subscriptionIdentifier, 7);
        assert.equal(counters.increments.get('mqtt.connection_losses') ?? 0, 0, 'no bad packet reached the client');
    });

    it('refuses a property longer than 65535 bytes instead of storing a packet MQTT.js cannot write', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        // MQTT.js throws half-way through writing the packet, after storing it; at the next
        // reconnect it replays it and throws again outside any promise: an uncaught exception.
        const broker = await f.mosquitto();
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.reconnect_timeout', 100);
        await connection.open(null);
        const err = await connection.publish('long/property', 'x', { qos: 1, properties: { contentType: 'a'.repeat(70000) } })
            .then(() => null, (e: BadRequestException) => e);
        await dropConnection(connection);
        await waitFor(() => connection.isConnected(), 5000, 'the reconnect');
        await delay(500);
        assert.equal(err?.code, MqttErrorCode.InvalidOptions, err?.message);
    });

    it('refuses a NUL character in a UTF-8 string property (Mosquitto drops the connection for it)', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.reconnect_timeout', 100);
        await connection.open(null);
        for (const properties of [{ contentType: 'text\u0000plain' }, { userProperties: { tenant: 'a\u0000b' } }]) {
            const result = settle(connection.publish('nul/property', 'x', { qos: 1, properties }));
            await delay(1000);
            assert.ok(result.state.startsWith(`${MqttErrorCode.InvalidOptions}: `),
                `${JSON.stringify(properties)}: ${result.state}; connected: ${connection.isConnected()}, attempts: ${connection.getStatus().reconnectAttempts}`);
        }
    });

    it('refuses control characters, noncharacters and lone surrogates in string properties, and the connection stays up', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.reconnect_timeout', 100);
        await connection.open(null);
        const cases: Record<string, unknown>[] = [
            { contentType: 'text/plain\n' },
            { contentType: 'a\u0085' },
            { userProperties: { tenant: 'a\u0001b' } },
            { userProperties: { 'ten\tant': 'a' } },
            { userProperties: { tenant: ['ok', 'a\uFFFE'] } },
            { userProperties: { tenant: 'a\uD800' } },
            { responseTopic: 'reply/\u007F' },
        ];
        for (const properties of cases) {
            const err = await connection.publish('bad/property', 'x', { qos: 1, properties }).then(() => null, (e: BadRequestException) => e);
            assert.equal(err?.code, MqttErrorCode.InvalidOptions, `${JSON.stringify(properties)}: ${err?.message ?? 'published'}`);
        }
        const err = await connection.subscribe('bad/property', { qos: 1, properties: { userProperties: { k: '\u001F' } } }, new RecordingListener())
            .then(() => null, (e: BadRequestException) => e);
        assert.equal(err?.code, MqttErrorCode.InvalidOptions, err?.message ?? 'subscribed');
        await connection.publish('good/property', 'x', { qos: 1, properties: { userProperties: { tenant: 'caf\u00E9 \u{1F600}' } } });
        assert.equal(connection.getStatus().reconnects, 0, 'no reconnect: nothing bad reached the broker');
    });
});

describe('MqttConnection MQTT 5 subscribe options', { timeout: 30000 }, () => {
    it('refuses a second listener on a filter with other MQTT 5 subscribe options than the first', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        // The broker holds one subscription per filter: the second listener's rh would be lost.
        const broker = await f.mosquitto();
        const connection = f.connection(broker.url, 'options.protocol_version', 5);
        await connection.open(null);
        const topic = uniqueTopic('rh2');
        const first = new RecordingListener();
        await connection.subscribe(topic, { qos: 0, rh: 2 }, first);
        for (const options of [{ qos: 1 }, { qos: 1, rh: 1 }, { qos: 0, rh: 2, nl: true }, { qos: 0, rh: 2, properties: { subscriptionIdentifier: 3 } }] as const) {
            await assert.rejects(connection.subscribe(topic, options, new RecordingListener()),
                (err: BadRequestException) => err.code === MqttErrorCode.InvalidOptions && /one subscription per filter/.test(err.message),
                JSON.stringify(options));
        }
        // The same options, at another QoS, are fine.
        await connection.subscribe(topic, { qos: 1, rh: 2 }, new RecordingListener());
        assert.equal(connection.getSubscriptions().length, 2);
    });

    it('a listener that replaces one whose SUBSCRIBE is still unanswered gets its own subscribe options', async (t) => {
        const f = fixture(t);
        // The broker keeps the options of the last SUBSCRIBE of a filter (MQTT 5, 3.8.4). (Mosquitto
        // 2.0.11 keeps nl from the first one: there only UNSUBSCRIBE + SUBSCRIBE changes it.)
        const held = new Map<string, boolean>();
        const broker = await f.scripted((packet, send) => {
            if (packet.cmd === 'connect') send({ cmd: 'connack', sessionPresent: false, reasonCode: 0 });
            else if (packet.cmd === 'subscribe') {
                for (const s of packet.subscriptions) held.set(s.topic, s.nl ?? false);
                // Answered a little later, as over a network.
                setTimeout(() => send({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map((s) => s.qos) }), 50);
            } else if (packet.cmd === 'unsubscribe') {
                for (const t of packet.unsubscriptions) held.delete(t);
                send({ cmd: 'unsuback', messageId: packet.messageId, granted: packet.unsubscriptions.map(() => 0) });
            }
        });
        const connection = f.connection(broker.url, 'options.protocol_version', 5);
        await connection.open(null);
        const topic = 'nl/filter';
        const first = new RecordingListener();
        const subscribing = connection.subscribe(topic, { qos: 1 }, first);
        const leaving = connection.unsubscribe(topic, first);
        await connection.subscribe(topic, { qos: 1, nl: true }, new RecordingListener());
        await Promise.all([subscribing, leaving]);
        await delay(300);
        assert.equal(held.get(topic), true, 'the broker holds the filter with nl');
    });
});
