// The connection's state and status: what state listeners see through a loss, a reconnect and close().
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { LogLevel } from 'pip-services3-components-nodex';

import type { MqttConnectionState, MqttConnectionStatus } from '../../src';
import { waitFor } from '../helpers/brokers';
import { testReferences } from '../helpers/components';
import { fixture } from '../helpers/fixture';

describe('MqttConnection state and status', { timeout: 60000 }, () => {
    it('reports each state change once, with status and counters, through a loss and a reconnect', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const { references, logger, counters } = testReferences();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 200);
        connection.setReferences(references);
        const seen: MqttConnectionStatus[] = [];
        connection.addStateListener((status) => seen.push(status));
        connection.addStateListener(() => { throw new Error('a broken listener'); });
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
    });

    it('says in lastError that the connection was closed when the broker closes it without a word', async (t) => {
        const f = fixture(t);
        // Aedes closes the connection on a publish it refuses: no error event, no DISCONNECT.
        const broker = await f.aedes({ authorizePublish: (_id, topic) => !topic.startsWith('refused/') });
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 5000);
        await connection.open(null);
        await connection.publish('refused/x', 'x');
        await waitFor(() => !connection.isConnected(), 5000, 'the broker to close the connection');
        assert.equal(connection.getStatus().state, 'reconnecting');
        assert.match(connection.getStatus().lastError ?? 'null', /the connection was closed \(by the broker or the network\)/);
    });

    it('turns disconnected, not reconnecting, when the connection is lost with retry_connect false', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url, 'options.retry_connect', false);
        const states: MqttConnectionState[] = [];
        connection.addStateListener((status) => states.push(status.state));
        await connection.open(null);
        await broker.stop();
        await waitFor(() => connection.getStatus().state === 'disconnected', 5000, 'the loss');
        assert.equal(connection.getStatus().nextAttemptDelay, null);
        assert.equal(connection.isOpen(), true);
        await connection.close(null);
        assert.deepEqual(states, ['opening', 'connected', 'disconnected', 'closing', 'closed']);
    });

    it('gives every state listener the states in order when one of them calls close()', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const conn = f.connection(broker.url, 'options.retry_connect', false);
        const seen: string[] = [];
        await conn.open(null);
        conn.addStateListener((s) => { if (s.state === 'disconnected') void conn.close(null); });
        conn.addStateListener((s) => { seen.push(s.state); });
        conn.getConnection()!.stream.destroy();
        await waitFor(() => seen.includes('closed'), 5000, 'closed');
        assert.deepEqual(seen, ['disconnected', 'closing', 'closed']);
    });
});
