import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConnectionException } from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';

import { MqttErrorCode, type MqttConnectionState, type MqttConnectionStatus } from '../../src';
import { startAedes, uniqueTopic, waitFor } from '../helpers/brokers';
import { newConnection, RecordingListener, testReferences } from '../helpers/components';

/** The MQTT.js internals a test uses to make the client lose its reconnect timer. */
interface ReconnectInternals {
    _clearReconnect(): void;
}

describe('MqttConnection resilience', { timeout: 60000 }, () => {
    it('reports each state change once, with status and counters, through a loss and a reconnect', async () => {
        const broker = await startAedes();
        const { references, logger, counters } = testReferences();
        const connection = newConnection(broker.url, 'options.reconnect_timeout', 200);
        connection.setReferences(references);
        const seen: MqttConnectionStatus[] = [];
        connection.addStateListener((status) => seen.push(status));
        connection.addStateListener(() => { throw new Error('a broken listener'); });
        try {
            assert.equal(connection.getStatus().state, 'closed');
            await connection.open(null);
            assert.equal(connection.isConnected(), true);
            assert.deepEqual({ ...connection.getStatus(), since: null }, {
                state: 'connected', connected: true, since: null, reconnectAttempts: 0, nextAttemptDelay: null,
                reconnects: 0, lastError: null, pendingPublishes: 0, clientId: connection.getConnection()!.options.clientId, keepAlive: 60, maxQos: 2,
            });

            await broker.stop();
            await waitFor(() => connection.getStatus().reconnectAttempts >= 2, 10000, 'two failed attempts');
            const down = connection.getStatus();
            assert.equal(down.state, 'reconnecting');
            assert.equal(down.connected, false);
            assert.equal(connection.isConnected(), false);
            assert.equal(connection.isOpen(), true, 'open, though not connected');
            assert.match(String(down.lastError), /ECONNREFUSED/);
            assert.ok(down.nextAttemptDelay !== null && down.nextAttemptDelay >= 150 * 2, `the wait grows: ${down.nextAttemptDelay}`);

            await broker.restart();
            await waitFor(() => connection.isConnected(), 10000, 'the reconnect');
            assert.equal(connection.getStatus().reconnects, 1);
            assert.equal(connection.getStatus().reconnectAttempts, 0);
            assert.equal(connection.getStatus().lastError, null);
            await connection.close(null);

            const states: MqttConnectionState[] = seen.map((s) => s.state);
            assert.deepEqual(states, ['opening', 'connected', 'reconnecting', 'connected', 'closing', 'closed']);
            assert.equal(seen[2].connected, false);
            assert.equal(counters.increments.get('mqtt.connection_losses'), 1);
            assert.equal(counters.increments.get('mqtt.reconnects'), 1);
            assert.ok((counters.increments.get('mqtt.reconnect_attempts') ?? 0) >= 3);
            assert.equal(logger.messages(LogLevel.Warn).filter((m) => /lost/.test(m)).length, 1, 'the loss is logged once');
            assert.equal(logger.messages().filter((m) => /^Reconnected/.test(m)).length, 1, 'the reconnect is logged once');
            assert.ok(logger.messages(LogLevel.Error).some((m) => /state listener failed/.test(m)), 'the broken listener is logged');
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('turns disconnected, not reconnecting, when the connection is lost with retry_connect false', async () => {
        const broker = await startAedes();
        const connection = newConnection(broker.url, 'options.retry_connect', false);
        const states: MqttConnectionState[] = [];
        connection.addStateListener((status) => states.push(status.state));
        try {
            await connection.open(null);
            await broker.stop();
            await waitFor(() => connection.getStatus().state === 'disconnected', 5000, 'the loss');
            assert.equal(connection.getStatus().nextAttemptDelay, null);
            assert.equal(connection.isOpen(), true);
            await connection.close(null);
            assert.deepEqual(states, ['opening', 'connected', 'disconnected', 'closing', 'closed']);
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('holds at most max_offline_messages publishes while disconnected, then rejects with MQTT_OFFLINE_LIMIT', async () => {
        const broker = await startAedes();
        const pub = newConnection(broker.url, 'options.reconnect_timeout', 100, 'options.max_offline_messages', 3);
        const none = newConnection(broker.url, 'options.reconnect_timeout', 100, 'options.max_offline_messages', 0);
        const sub = newConnection(broker.url, 'options.reconnect_timeout', 100);
        try {
            await Promise.all([pub.open(null), none.open(null), sub.open(null)]);
            const topic = uniqueTopic('offline-limit');
            await broker.stop();
            await waitFor(() => !pub.isConnected() && !none.isConnected() && !sub.isConnected(), 5000, 'the loss');

            // QoS 0 waits offline as well, and counts against the same limit.
            const held = [pub.publish(topic, '1', { qos: 1 }), pub.publish(topic, '2', { qos: 0 }), pub.publish(topic, '3', { qos: 2 })];
            assert.equal(pub.getStatus().pendingPublishes, 3);
            await assert.rejects(pub.publish(topic, '4', { qos: 1 }), (err: ConnectionException) => {
                assert.ok(err instanceof ConnectionException);
                assert.equal(err.code, MqttErrorCode.OfflineLimit);
                assert.equal(err.details.getAsInteger('limit'), 3);
                assert.match(err.message, /max_offline_messages \(3\)/);
                return true;
            });
            await assert.rejects(none.publish(topic, 'x', { qos: 1 }), { code: MqttErrorCode.OfflineLimit });
            assert.equal(pub.getStatus().pendingPublishes, 3, 'a refused publish is not held');

            await broker.restart();
            await waitFor(() => sub.isConnected(), 10000, 'the subscriber to come back');
            const listener = new RecordingListener();
            await sub.subscribe(topic, { qos: 2 }, listener);
            await Promise.all(held);
            assert.equal(pub.getStatus().pendingPublishes, 0);
            // Connected again: the limit no longer applies.
            await Promise.all([1, 2, 3, 4, 5].map((i) => pub.publish(topic, `after-${i}`, { qos: 1 })));
            await waitFor(() => listener.received.length >= 5, 5000, 'the messages after the reconnect');
        } finally {
            await Promise.all([pub.close(null), none.close(null), sub.close(null)]);
            await broker.stop();
        }
    });

    it('restarts reconnecting when MQTT.js loses its reconnect timer (watchdog)', async () => {
        const broker = await startAedes();
        const { references, logger, counters } = testReferences();
        const connection = newConnection(broker.url, 'options.reconnect_timeout', 100, 'options.connect_timeout', 500);
        connection.setReferences(references);
        try {
            await connection.open(null);
            const client = connection.getConnection()!;
            // After MQTT.js armed its timer for the loss, take it away: without a watchdog nothing reconnects.
            client.once('close', () => setImmediate(() => (client as unknown as ReconnectInternals)._clearReconnect()));
            await broker.stop();
            await waitFor(() => !connection.isConnected(), 5000, 'the loss');
            await broker.restart();
            await waitFor(() => connection.isConnected(), 20000, 'the watchdog to restart reconnecting');
            assert.ok((counters.increments.get('mqtt.watchdog_restarts') ?? 0) >= 1);
            assert.ok(logger.messages(LogLevel.Warn).some((m) => /the watchdog restarted it/.test(m)));
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('closes promptly during a long reconnect wait', async () => {
        const broker = await startAedes();
        const connection = newConnection(broker.url, 'options.reconnect_timeout', 20000);
        try {
            await connection.open(null);
            await broker.stop();
            await waitFor(() => connection.getStatus().state === 'reconnecting', 5000, 'the loss');
            const started = Date.now();
            await connection.close(null);
            // The wait is 15 to 20 s; closing must not sit through it.
            assert.ok(Date.now() - started < 5000, `close() took ${Date.now() - started} ms`);
            assert.equal(connection.getStatus().state, 'closed');
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });
});
