// MQTT 5 limits, keepalive, credential choice and uri edge cases found in a second review: each test failed before its fix.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import * as mqttPacket from 'mqtt-packet';
import { ConfigParams } from 'pip-services3-commons-nodex';
import { CredentialResolver } from 'pip-services3-components-nodex';

import { MqttConnectionResolver, MqttErrorCode } from '../../src';

import { delay, mosquittoSkip, startMosquitto, waitFor } from '../helpers/brokers';
import { dropConnection, newConnection, RecordingListener, testReferences } from '../helpers/components';
import { startScriptedBroker } from '../helpers/scriptedBroker';

/** The state of a promise, read later: 'pending', 'ok', or '<error code>: <message>'. */
function settle(promise: Promise<void>): { state: string } {
    const result = { state: 'pending' };
    promise.then(() => { result.state = 'ok'; }, (err: Error & { code?: string }) => { result.state = `${err.code}: ${err.message}`; });
    return result;
}

describe('MqttConnection MQTT 5 limits and other review edge cases', { timeout: 30000 }, () => {
    it('keepalive_timeout 0: a reconnect to a broker that imposed a server keepalive keeps pinging', async () => {
        // Like Mosquitto 2.0 with max_keepalive 1: a server keepalive only for a CONNECT keepalive
        // of 0 or above the maximum; a client silent for 1.5 x keepalive is dropped.
        let connections = 0;
        const keepalives: number[] = [];
        const broker = await startScriptedBroker((packet, send, socket) => {
            const s = socket as typeof socket & { timer?: NodeJS.Timeout; ka?: number };
            const arm = (): void => {
                clearTimeout(s.timer);
                if (s.ka) s.timer = setTimeout(() => socket.destroy(), s.ka * 1500);
            };
            if (packet.cmd === 'connect') {
                connections++;
                const keepalive = packet.keepalive ?? 0;
                keepalives.push(keepalive);
                const imposed = keepalive === 0 || keepalive > 1;
                s.ka = imposed ? 1 : keepalive;
                socket.on('close', () => clearTimeout(s.timer));
                send({ cmd: 'connack', sessionPresent: false, reasonCode: 0, properties: imposed ? { serverKeepAlive: 1 } : {} });
            }
            arm();
        });
        const connection = newConnection(broker.url, 'options.protocol_version', 5, 'options.keepalive_timeout', 0,
            'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 100);
        try {
            await connection.open(null);
            await dropConnection(connection);
            await waitFor(() => connection.isConnected(), 5000, 'the reconnect');
            await delay(4000);
            assert.equal(connections, 2, `CONNECT keepalives: ${keepalives.join(', ')}`);
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('a publish above the maximum packet size made while offline is refused, not replayed forever', { skip: mosquittoSkip() }, async () => {
        const broker = await startMosquitto({ extraConfig: ['max_packet_size 2000'] });
        const connection = newConnection(broker.url, 'options.protocol_version', 5, 'options.reconnect_timeout', 1000,
            'options.max_reconnect_timeout', 1000);
        try {
            await connection.open(null);
            await dropConnection(connection);
            const result = settle(connection.publish('big/offline', Buffer.alloc(5000), { qos: 1 }));
            await delay(4000);
            assert.ok(result.state.startsWith(`${MqttErrorCode.InvalidPayload}: `),
                `${result.state}; reconnect attempts ${connection.getStatus().reconnectAttempts}, last error ${connection.getStatus().lastError}`);
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('a publish that fits by the check still fits once MQTT.js adds its topic alias', { skip: mosquittoSkip() }, async () => {
        const broker = await startMosquitto({ extraConfig: ['max_packet_size 2000'] });
        const { references, counters } = testReferences();
        const connection = newConnection(broker.url, 'options.protocol_version', 5, 'options.topic_alias_maximum', 10,
            'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 100);
        connection.setReferences(references);
        try {
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
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('the receive maximum follows the broker: a later CONNACK without one means 65535, not the old limit', async () => {
        // Connection 1: receive maximum 1. Connection 2: none (65535); it answers the PUBACKs only
        // once it holds 3 publishes unacknowledged (allowed: 3 <= 65535).
        let connections = 0;
        const broker = await startScriptedBroker((packet, send, socket) => {
            const s = socket as typeof socket & { n?: number; held?: number[] };
            if (packet.cmd === 'connect') {
                s.n = ++connections;
                s.held = [];
                send({ cmd: 'connack', sessionPresent: false, reasonCode: 0, properties: s.n === 1 ? { receiveMaximum: 1 } : {} });
            } else if (packet.cmd === 'publish' && packet.qos === 1) {
                if (s.n === 1) send({ cmd: 'puback', messageId: packet.messageId!, reasonCode: 0 });
                else {
                    s.held!.push(packet.messageId!);
                    if (s.held!.length === 3) for (const id of s.held!.splice(0)) send({ cmd: 'puback', messageId: id, reasonCode: 0 });
                }
            }
        });
        const connection = newConnection(broker.url, 'options.protocol_version', 5,
            'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 100);
        try {
            await connection.open(null);
            await connection.publish('rm/a', 'x', { qos: 1 });
            await dropConnection(connection);
            await waitFor(() => connection.isConnected(), 5000, 'the reconnect');
            const results = ['1', '2', '3'].map((p) => settle(connection.publish('rm/b', p, { qos: 1 })));
            await delay(2000);
            assert.deepEqual(results.map((r) => r.state), ['ok', 'ok', 'ok']);
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('a listener that replaces one whose SUBSCRIBE is still unanswered gets its own subscribe options', async () => {
        // The broker keeps the options of the last SUBSCRIBE of a filter (MQTT 5, 3.8.4). (Mosquitto
        // 2.0.11 keeps nl from the first one: there only UNSUBSCRIBE + SUBSCRIBE changes it.)
        const held = new Map<string, boolean>();
        const broker = await startScriptedBroker((packet, send) => {
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
        const connection = newConnection(broker.url, 'options.protocol_version', 5);
        try {
            await connection.open(null);
            const topic = 'nl/filter';
            const first = new RecordingListener();
            const subscribing = connection.subscribe(topic, { qos: 1 }, first);
            const leaving = connection.unsubscribe(topic, first);
            await connection.subscribe(topic, { qos: 1, nl: true }, new RecordingListener());
            await Promise.all([subscribing, leaving]);
            await delay(300);
            assert.equal(held.get(topic), true, 'the broker holds the filter with nl');
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('with both credential and credentials.N configured, the credential Pip.Services would choose', async () => {
        const config = ConfigParams.fromTuples('connection.host', 'h',
            'credential.username', 'old-user', 'credential.password', 'old-pass',
            'credentials.0.username', 'new-user', 'credentials.0.password', 'new-pass');
        const pip = await new CredentialResolver(config).lookup(null as unknown as string);
        const resolver = new MqttConnectionResolver();
        resolver.configure(config);
        const resolved = await resolver.resolve(null);
        assert.equal(resolved.username, pip?.getUsername());
    });

    it('an @ in a query value (a client id such as sensor@plant) is a legitimate uri', async () => {
        const resolver = new MqttConnectionResolver();
        resolver.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://broker:1883?client_id=sensor@plant-7'));
        const resolved = await resolver.resolve(null);
        assert.equal(resolved.uriOptions.getAsString('client_id'), 'sensor@plant-7');
    });
});
