// The limits an MQTT 5 broker gives in CONNACK: maximum packet size, receive maximum, server keepalive.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MqttErrorCode } from '../../src';
import { delay, mosquittoSkip, waitFor } from '../helpers/brokers';
import { dropConnection, settle, testReferences } from '../helpers/components';
import { fixture } from '../helpers/fixture';

describe('MqttConnection within the limits the broker gives', { timeout: 30000 }, () => {
    it('does not send a packet above the maximum packet size the broker gave in CONNACK', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto({ extraConfig: ['max_packet_size 2000'] });
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.reconnect_timeout', 100);
        await connection.open(null);
        assert.equal(connection.getConnection()!.serverProperties?.maximumPacketSize, 2000);
        const result = settle(connection.publish('big/payload', Buffer.alloc(5000), { qos: 1 }));
        await delay(2000);
        assert.notEqual(result.state, 'pending', `connected: ${connection.isConnected()}, attempts: ${connection.getStatus().reconnectAttempts}, ` +
            `last error: ${connection.getStatus().lastError}`);
        assert.equal(connection.isConnected(), true);
    });

    it('a publish above the maximum packet size made while offline is refused, not replayed forever', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto({ extraConfig: ['max_packet_size 2000'] });
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.reconnect_timeout', 1000,
            'options.max_reconnect_timeout', 1000);
        await connection.open(null);
        await dropConnection(connection);
        const result = settle(connection.publish('big/offline', Buffer.alloc(5000), { qos: 1 }));
        await delay(4000);
        assert.ok(result.state.startsWith(`${MqttErrorCode.InvalidPayload}: `),
            `${result.state}; reconnect attempts ${connection.getStatus().reconnectAttempts}, last error ${connection.getStatus().lastError}`);
    });

    it('keeps within the receive maximum of the broker: a burst of QoS 2 publishes succeeds as on MQTT 3.1.1', { skip: mosquittoSkip() }, async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const connection = f.connection(broker.url, 'options.protocol_version', 5);
        await connection.open(null);
        assert.equal(connection.getConnection()!.serverProperties?.receiveMaximum, 20);
        const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => connection.publish('burst/qos2', String(i), { qos: 2 })));
        const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        assert.equal(failed.length, 0, `${failed.length} of 200 failed, e.g. ${(failed[0]?.reason as Error | undefined)?.message}`);
    });

    it('the receive maximum follows the broker: a later CONNACK without one means 65535, not the old limit', async (t) => {
        const f = fixture(t);
        // Connection 1: receive maximum 1. Connection 2: none (65535); it answers the PUBACKs only
        // once it holds 3 publishes unacknowledged (allowed: 3 <= 65535).
        let connections = 0;
        const broker = await f.scripted((packet, send, socket) => {
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
        const connection = f.connection(broker.url, 'options.protocol_version', 5,
            'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 100);
        await connection.open(null);
        await connection.publish('rm/a', 'x', { qos: 1 });
        await dropConnection(connection);
        await waitFor(() => connection.isConnected(), 5000, 'the reconnect');
        const results = ['1', '2', '3'].map((p) => settle(connection.publish('rm/b', p, { qos: 1 })));
        await delay(2000);
        assert.deepEqual(results.map((r) => r.state), ['ok', 'ok', 'ok']);
    });

    it('keepalive_timeout 0: a reconnect to a broker that imposed a server keepalive keeps pinging', async (t) => {
        const f = fixture(t);
        // Like Mosquitto 2.0 with max_keepalive 1: a server keepalive only for a CONNECT keepalive
        // of 0 or above the maximum; a client silent for 1.5 x keepalive is dropped.
        let connections = 0;
        const keepalives: number[] = [];
        const broker = await f.scripted((packet, send, socket) => {
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
        const connection = f.connection(broker.url, 'options.protocol_version', 5, 'options.keepalive_timeout', 0,
            'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 100);
        await connection.open(null);
        await dropConnection(connection);
        await waitFor(() => connection.isConnected(), 5000, 'the reconnect');
        await delay(4000);
        assert.equal(connections, 2, `CONNECT keepalives: ${keepalives.join(', ')}`);
    });
});

describe('MqttConnection and the server keepalive of Mosquitto', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('keeps the server keepalive the broker imposes, and stays connected by it, also with keepalive_timeout 0', async (t) => {
        const f = fixture(t);
        // Mosquitto's smallest max_keepalive is 10 seconds.
        const broker = await f.mosquitto({ extraConfig: ['max_keepalive 10'] });
        const { references, counters } = testReferences();
        const longer = f.connection(broker.url, 'options.protocol_version', 5, 'options.keepalive_timeout', 60000);
        // MQTT.js alone would never ping with keepalive 0, and Mosquitto imposes 10 s on it too.
        const off = f.connection(broker.url, 'options.protocol_version', 5, 'options.keepalive_timeout', 0);
        longer.setReferences(references);
        off.setReferences(references);
        await Promise.all([longer.open(null), off.open(null)]);
        assert.equal(longer.getStatus().keepAlive, 10);
        assert.equal(off.getStatus().keepAlive, 10);
        // Idle for more than 1.5 x 10 s: Mosquitto drops a client that keeps to 60 s or to none.
        await delay(16000);
        assert.equal(longer.isConnected(), true);
        assert.equal(off.isConnected(), true);
        assert.equal(counters.increments.get('mqtt.connection_losses') ?? 0, 0);
    });
});
