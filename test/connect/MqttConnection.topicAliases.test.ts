// MQTT 5 topic aliases (topic_alias_maximum): sent, never replayed with an alias of an earlier connection, and within the maximum packet size.
import assert from 'node:assert/strict';
import { connect as netConnect, createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it } from 'node:test';

import type { Packet } from 'mqtt';
import * as mqttPacket from 'mqtt-packet';

import { MqttErrorCode, type MqttConnection } from '../../src';
import { delay, HOST, mosquittoSkip, uniqueTopic, waitFor } from '../helpers/brokers';
import { RecordingListener, settle, testReferences } from '../helpers/components';
import { fixture } from '../helpers/fixture';

/**
 * A proxy to a broker that passes on, per connection, only as many PUBACKs as `pubacks(n)` allows
 * (n: 1 for the first connection), then resets it: a link that drops while acknowledgements are
 * on their way. Other packets pass unchanged.
 */
async function pubackCutter(port: number, pubacks: (n: number) => number): Promise<{ url: string; connections: () => number; stop(): Promise<void> }> {
    const sockets = new Set<Socket>();
    let n = 0;
    const server = createServer((client) => {
        const index = ++n;
        const allowed = pubacks(index);
        let seen = 0;
        const backend = netConnect(port, HOST);
        sockets.add(client);
        sockets.add(backend);
        const cut = (): void => { client.destroy(); backend.destroy(); };
        client.on('error', cut);
        backend.on('error', cut);
        client.on('close', cut);
        backend.on('close', cut);
        client.on('data', (chunk: Buffer) => backend.write(chunk));
        const parser = mqttPacket.parser({ protocolVersion: 5 });
        parser.on('packet', (packet: mqttPacket.Packet) => {
            if (client.destroyed) return;
            if (packet.cmd === 'puback' && ++seen > allowed) { cut(); return; }
            client.write(mqttPacket.generate(packet, { protocolVersion: 5 }));
        });
        backend.on('data', (chunk: Buffer) => parser.parse(chunk));
    });
    await new Promise<void>((resolve) => server.listen(0, HOST, () => resolve()));
    return {
        url: `mqtt://${HOST}:${(server.address() as AddressInfo).port}`,
        connections: () => n,
        stop: async () => {
            for (const s of sockets) s.destroy();
            await new Promise<void>((resolve) => server.close(() => resolve()));
        },
    };
}

/** Records the packets a connection's client sends. */
function recordSent(connection: MqttConnection): Packet[] {
    const sent: Packet[] = [];
    connection.getConnection()!.on('packetsend', (packet: Packet) => sent.push(packet));
    return sent;
}

describe('MqttConnection MQTT 5 topic aliases', { timeout: 30000 }, () => {
    it('sends topic aliases when topic_alias_maximum is set, and the subscriber still sees the topic', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const sub = f.connection(broker.url, 'options.protocol_version', 5);
        const pub = f.connection(broker.url, 'options.protocol_version', 5, 'options.topic_alias_maximum', 10);
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
    });

    it('QoS 1 publishes replayed after two drops never reach the broker with an alias it does not know', async (t) => {
        const f = fixture(t);
        // A broker that, like Mosquitto, allows 10 topic aliases and treats an unknown alias as a
        // protocol error (DISCONNECT 0x94). Connection 1: no PUBACK, then a drop. Connection 2:
        // PUBACK for the first publish only, then a drop (a flapping link during the replay).
        let connects = 0;
        const violations: string[] = [];
        const broker = await f.scripted((packet, send, socket) => {
            const conn = socket as typeof socket & { aliases?: Map<number, string>; n?: number; publishes?: number };
            switch (packet.cmd) {
                case 'connect':
                    conn.n = ++connects;
                    conn.aliases = new Map();
                    conn.publishes = 0;
                    send({ cmd: 'connack', sessionPresent: false, reasonCode: 0, properties: { topicAliasMaximum: 10 } });
                    break;
                case 'publish': {
                    const alias = packet.properties?.topicAlias;
                    let topic = packet.topic;
                    if (alias !== undefined && topic !== '') conn.aliases!.set(alias, topic);
                    if (topic === '') topic = alias !== undefined ? conn.aliases!.get(alias) ?? '' : '';
                    if (topic === '') {
                        violations.push(`connection ${conn.n}: PUBLISH with empty topic and unknown alias ${alias}`);
                        send({ cmd: 'disconnect', reasonCode: 0x94 });
                        socket.end();
                        return;
                    }
                    conn.publishes!++;
                    if (conn.n === 1) {
                        if (conn.publishes === 2) setTimeout(() => socket.destroy(), 50);
                    } else if (conn.n === 2) {
                        if (conn.publishes === 1) send({ cmd: 'puback', messageId: packet.messageId!, reasonCode: 0 });
                        else setTimeout(() => socket.destroy(), 50);
                    } else {
                        send({ cmd: 'puback', messageId: packet.messageId!, reasonCode: 0 });
                    }
                    break;
                }
                default:
                    break;
            }
        });
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.topic_alias_maximum', 10,
            'options.reconnect_timeout', 50, 'options.max_reconnect_timeout', 50);
        await connection.open(null);
        const first = settle(connection.publish('plant/line-7/temperature', 'a', { qos: 1 }));
        const second = settle(connection.publish('plant/line-7/temperature', 'b', { qos: 1 }));
        await delay(2000);
        assert.deepEqual(violations.slice(0, 3), [], `connections made: ${connects}`);
        await waitFor(() => first.state !== 'pending' && second.state !== 'pending', 3000, 'both publishes to settle');
        assert.deepEqual([first.state, second.state], ['ok', 'ok']);
    });

    it('QoS 1 publishes replayed after two drops reach Mosquitto (topic aliases)', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        // Connection 1 loses every PUBACK, connection 2 gets the first one only, then all pass.
        const proxy = await pubackCutter(broker.port, (n) => (n === 1 ? 0 : n === 2 ? 1 : Infinity));
        f.defer(() => proxy.stop());
        const { references, logger } = testReferences();
        const sub = f.connection(broker.url, 'options.protocol_version', 5);
        const pub = f.connection(proxy.url, 'options.protocol_version', 5, 'options.topic_alias_maximum', 10,
            'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 100);
        pub.setReferences(references);
        await Promise.all([sub.open(null), pub.open(null)]);
        const topic = uniqueTopic('alias-replay');
        const listener = new RecordingListener();
        await sub.subscribe(topic, { qos: 1 }, listener);
        const first = settle(pub.publish(topic, 'a', { qos: 1 }));
        const second = settle(pub.publish(topic, 'b', { qos: 1 }));
        await delay(3000);
        assert.deepEqual([first.state, second.state], ['ok', 'ok'],
            `after ${proxy.connections()} connections; last error: ${pub.getStatus().lastError}; ` +
            `warnings: ${logger.messages().filter((m) => m.includes('DISCONNECT')).slice(0, 2).join(' | ')}`);
    });

    it('a publish that fits by the check still fits once MQTT.js adds its topic alias', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto({ extraConfig: ['max_packet_size 2000'] });
        const { references, counters } = testReferences();
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.topic_alias_maximum', 10,
            'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 100);
        connection.setReferences(references);
        await connection.open(null);
        const topic = 'near/limit';
        // The payload that makes the PUBLISH exactly 2000 bytes without a topic alias.
        let size = 1900;
        const length = (n: number): number => mqttPacket.generate({ cmd: 'publish', topic, payload: Buffer.alloc(n), qos: 1,
            messageId: 1, retain: false, dup: false, properties: {} }, { protocolVersion: 5 }).length;
        while (length(size + 1) <= 2000) size++;
        assert.equal(length(size), 2000);
        const result = settle(connection.publish(topic, Buffer.alloc(size), { qos: 1 }));
        await delay(3000);
        assert.ok(result.state === 'ok' || result.state.startsWith(`${MqttErrorCode.InvalidPayload}: `),
            `${result.state}; connection losses ${counters.increments.get('mqtt.connection_losses') ?? 0}`);
        assert.equal(counters.increments.get('mqtt.connection_losses') ?? 0, 0);
    });
});
