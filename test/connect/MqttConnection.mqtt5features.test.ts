import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import type { Packet } from 'mqtt';
import { BadRequestException, type ConnectionException } from 'pip-services3-commons-nodex';

import { type MqttConnection, MqttErrorCode } from '../../src';
import { delay, mosquittoSkip, startAedes, startMosquitto, uniqueTopic, waitFor } from '../helpers/brokers';
import { dropConnection, newConnection, RecordingListener, testReferences, uniqueClientId } from '../helpers/components';

/** A file in a fresh temp folder, for a Mosquitto ACL. */
function aclFile(lines: string[]): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pip-mqtt-acl-'));
    const file = path.join(dir, 'acl');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    return file;
}

/** Records the packets a connection's client sends. */
function recordSent(connection: MqttConnection): Packet[] {
    const sent: Packet[] = [];
    connection.getConnection()!.on('packetsend', (packet: Packet) => sent.push(packet));
    return sent;
}

describe('MqttConnection MQTT 5 features (mosquitto)', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('passes publish properties through to the subscriber', async () => {
        const broker = await startMosquitto();
        const sub = newConnection(broker.url, 'options.protocol_version', 5);
        const pub = newConnection(broker.url, 'options.protocol_version', 5);
        try {
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
        } finally {
            await sub.close(null);
            await pub.close(null);
            await broker.stop();
        }
    });

    it('refuses MQTT 5 properties and subscribe flags on an MQTT 3.1.1 connection instead of dropping them', async () => {
        const broker = await startAedes();
        const connection = newConnection(broker.url);
        try {
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
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('uses a broker-assigned client id, and resumes its session with it after a reconnect', async () => {
        const broker = await startMosquitto();
        const sub = newConnection(broker.url, 'options.protocol_version', 5, 'options.broker_assigns_client_id', true,
            'options.session_expiry', 300, 'options.reconnect_timeout', 200);
        const pub = newConnection(broker.url, 'options.protocol_version', 5);
        try {
            await Promise.all([sub.open(null), pub.open(null)]);
            const assigned = sub.getStatus().clientId;
            assert.match(assigned, /^auto-/, 'Mosquitto names assigned ids auto-<uuid>');
            assert.match(sub.toString(), new RegExp(assigned));
            const topic = uniqueTopic('assigned');
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos: 1 }, listener);
            await dropConnection(sub);
            await pub.publish(topic, 'while-away', { qos: 1 });
            await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
            await waitFor(() => listener.received.length === 1, 5000, 'the message kept by the session');
            assert.equal(listener.received[0].data.toString(), 'while-away');
            assert.equal(sub.getStatus().clientId, assigned);
        } finally {
            await sub.close(null);
            await pub.close(null);
            await broker.stop();
        }
    });

    it('keeps the server keepalive the broker imposes, and stays connected by it, also with keepalive_timeout 0', async () => {
        // Mosquitto's smallest max_keepalive is 10 seconds.
        const broker = await startMosquitto({ extraConfig: ['max_keepalive 10'] });
        const { references, counters } = testReferences();
        const longer = newConnection(broker.url, 'options.protocol_version', 5, 'options.keepalive_timeout', 60000);
        // MQTT.js alone would never ping with keepalive 0, and Mosquitto imposes 10 s on it too.
        const off = newConnection(broker.url, 'options.protocol_version', 5, 'options.keepalive_timeout', 0);
        longer.setReferences(references);
        off.setReferences(references);
        try {
            await Promise.all([longer.open(null), off.open(null)]);
            assert.equal(longer.getStatus().keepAlive, 10);
            assert.equal(off.getStatus().keepAlive, 10);
            // Idle for more than 1.5 x 10 s: Mosquitto drops a client that keeps to 60 s or to none.
            await delay(16000);
            assert.equal(longer.isConnected(), true);
            assert.equal(off.isConnected(), true);
            assert.equal(counters.increments.get('mqtt.connection_losses') ?? 0, 0);
        } finally {
            await longer.close(null);
            await off.close(null);
            await broker.stop();
        }
    });

    it('refuses publish and subscribe properties MQTT.js would choke on, and stays connected', async () => {
        const broker = await startMosquitto();
        const { references, counters } = testReferences();
        const connection = newConnection(broker.url, 'options.protocol_version', 5);
        connection.setReferences(references);
        try {
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
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('sends topic aliases when topic_alias_maximum is set, and the subscriber still sees the topic', async () => {
        const broker = await startMosquitto();
        const sub = newConnection(broker.url, 'options.protocol_version', 5);
        const pub = newConnection(broker.url, 'options.protocol_version', 5, 'options.topic_alias_maximum', 10);
        try {
            await Promise.all([sub.open(null), pub.open(null)]);
            const topic = uniqueTopic('alias/a-rather-long-topic-name-worth-an-alias');
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos: 1 }, listener);
            const sent = recordSent(pub);
            for (let i = 0; i < 3; i++) await pub.publish(topic, String(i), { qos: 1 });
            await waitFor(() => listener.received.length === 3, 5000, 'three messages');
            assert.deepEqual(listener.received.map((m) => m.topic), [topic, topic, topic]);
            const publishes = sent.filter((p) => p.cmd === 'publish') as (Packet & { topic: string; properties?: { topicAlias?: number } })[];
            assert.equal(publishes.length, 3);
            assert.equal(publishes[0].topic, topic);
            assert.ok(publishes[0].properties?.topicAlias !== undefined, 'the first publish sets the alias');
            for (const later of publishes.slice(1)) {
                assert.equal(later.topic, '', 'later publishes send the alias instead of the topic');
                assert.equal(later.properties?.topicAlias, publishes[0].properties?.topicAlias);
            }
        } finally {
            await sub.close(null);
            await pub.close(null);
            await broker.stop();
        }
    });

    it('does not send a retained message again after a reconnect when the broker kept the subscription', async () => {
        const broker = await startMosquitto();
        const pub = newConnection(broker.url, 'options.protocol_version', 5);
        const sub = newConnection(broker.url, 'options.protocol_version', 5, 'client_id', uniqueClientId('rh'),
            'options.session_expiry', 300, 'options.reconnect_timeout', 200);
        try {
            await pub.open(null);
            const topic = uniqueTopic('retained');
            await pub.publish(topic, 'state', { qos: 1, retain: true });
            await sub.open(null);
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos: 1 }, listener);
            await waitFor(() => listener.received.length === 1, 5000, 'the retained message');
            await dropConnection(sub);
            await waitFor(() => sub.isConnected(), 10000, 'the reconnect');
            await pub.publish(topic, 'live', { qos: 1 });
            await waitFor(() => listener.received.some((m) => m.data.toString() === 'live'), 5000, 'the live message');
            assert.deepEqual(listener.received.map((m) => m.data.toString()), ['state', 'live']);
        } finally {
            await sub.close(null);
            await pub.close(null);
            await broker.stop();
        }
    });

    it('reports the reason codes of a refused CONNECT and PUBLISH', async () => {
        const acl = aclFile(['user svc', 'topic readwrite open/#']);
        const broker = await startMosquitto({ passwords: { svc: 'svc-pw' }, extraConfig: [`acl_file ${acl}`] });
        const connection = newConnection(broker.url, 'credential.username', 'svc', 'credential.password', 'svc-pw',
            'options.protocol_version', 5);
        try {
            const bad = newConnection(broker.url, 'credential.username', 'svc', 'credential.password', 'nope', 'options.protocol_version', 5);
            await assert.rejects(bad.open(null), (err: ConnectionException) => {
                assert.equal(err.code, MqttErrorCode.ConnectRefused);
                // Mosquitto answers a bad password with 0x87 "not authorized" (as with 5 in MQTT 3.1.1).
                assert.equal(err.details.getAsNullableInteger('reason_code'), 0x87);
                return true;
            });
            await connection.open(null);
            // Mosquitto 2.0 grants every SUBSCRIBE whatever its ACL says (no SUBACK refusal to show),
            // and closes a taken-over session's connection without a DISCONNECT; see the scripted broker test.
            await assert.rejects(connection.publish('closed/topic', 'x', { qos: 1 }), (err: ConnectionException) => {
                assert.equal(err.code, MqttErrorCode.PublishFailed);
                assert.equal(err.details.getAsNullableInteger('reason_code'), 0x87, 'not authorized');
                return true;
            });
            await connection.publish('open/topic', 'x', { qos: 1 });
            assert.equal(connection.isConnected(), true, 'a refused MQTT 5 publish keeps the connection');
        } finally {
            await connection.close(null);
            await broker.stop();
            fs.rmSync(path.dirname(acl), { recursive: true, force: true });
        }
    });
});

describe('MqttConnection MQTT 3.1', { timeout: 60000 }, () => {
    for (const kind of ['aedes', 'mosquitto'] as const) {
        it(`connects with protocol_version 3 and delivers (${kind})`, { skip: kind === 'mosquitto' && mosquittoSkip() }, async () => {
            const broker = kind === 'aedes' ? await startAedes() : await startMosquitto();
            const connection = newConnection(broker.url, 'options.protocol_version', 3);
            try {
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
            } finally {
                await connection.close(null);
                await broker.stop();
            }
        });
    }
});
