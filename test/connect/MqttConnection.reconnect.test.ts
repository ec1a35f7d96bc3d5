// Reconnects after the broker went away (restarted, killed, refusing a reconnect), and the watchdog behind MQTT.js's reconnect timer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConnectionException } from 'pip-services3-commons-nodex';
import { LogLevel } from 'pip-services3-components-nodex';

import { MqttErrorCode } from '../../src';
import { mosquittoSkip, uniqueTopic, waitFor } from '../helpers/brokers';
import { delivered, RecordingListener, testReferences } from '../helpers/components';
import { EACH_BROKER, fixture } from '../helpers/fixture';

/** The MQTT.js internals a test uses to make the client lose its reconnect timer. */
interface ReconnectInternals {
    _clearReconnect(): void;
}

for (const { kind, skip } of EACH_BROKER) {
    describe(`MqttConnection after a broker restart (${kind})`, { skip, timeout: 60000 }, () => {
        it('reconnects and its subscriptions work again', async (t) => {
            const f = fixture(t);
            const broker = await f.broker(kind);
            const { references, logger } = testReferences();
            const sub = f.connection(broker.url, 'options.reconnect_timeout', 100);
            sub.setReferences(references);
            const pub = f.connection(broker.url, 'options.reconnect_timeout', 100);
            await sub.open(null);
            await pub.open(null);
            const base = uniqueTopic('restart');
            const exact = new RecordingListener();
            const wild = new RecordingListener();
            await sub.subscribe(`${base}/exact`, { qos: 1 }, exact);
            await sub.subscribe(`${base}/+/deep/#`, { qos: 0 }, wild);

            await broker.restart();
            await waitFor(() => sub.getConnection()?.connected === true && pub.getConnection()?.connected === true,
                10000, 'both connections to come back');
            assert.equal(sub.isOpen(), true);

            // The broker lost every session: the connection subscribed again by itself.
            await waitFor(async () => {
                await pub.publish(`${base}/exact`, 'after', { qos: 1 });
                return exact.received.length > 0;
            }, 10000, 'delivery on the exact filter after the restart');
            await pub.publish(`${base}/x/deep/er`, 'after', { qos: 1 });
            await waitFor(() => wild.received.length > 0, 5000, 'delivery on the wildcard filter after the restart');
            assert.equal(sub.getSubscriptions().length, 2);

            const messages = logger.messages().join('\n');
            assert.match(messages, /Connection to MQTT broker at mqtt:\/\/127\.0\.0\.1:\d+ lost; reconnecting in \d+ ms, then with backoff up to 30000 ms/);
            assert.match(messages, /Reconnected to MQTT broker/);
            assert.equal(logger.messages(LogLevel.Warn).filter((m) => /lost/.test(m)).length, 1, 'the loss is logged once');
        });

        it('does not reconnect when retry_connect is false, and says so', async (t) => {
            const f = fixture(t);
            const broker = await f.broker(kind);
            const { references, logger } = testReferences();
            const connection = f.connection(broker.url, 'options.retry_connect', false);
            connection.setReferences(references);
            await connection.open(null);
            const listener = new RecordingListener();
            await connection.subscribe(uniqueTopic('noretry'), null, listener);
            await broker.restart();
            await waitFor(() => /not reconnecting because options\.retry_connect is false/.test(logger.text()), 10000, 'the log line');
            await new Promise((resolve) => setTimeout(resolve, 500));
            assert.equal(connection.getConnection()?.connected, false, 'still disconnected');
            assert.equal(connection.isOpen(), true, 'the component stays open until closed');
            await assert.rejects(connection.publish('x', 'y'), (err: ConnectionException) =>
                err instanceof ConnectionException && err.code === MqttErrorCode.NotConnected);
            await assert.rejects(connection.subscribe('x', null, listener), { code: MqttErrorCode.NotConnected });
        });
    });
}

describe('MqttConnection reconnects', { timeout: 60000 }, () => {
    it('keeps reconnecting after the broker refuses one reconnect', async (t) => {
        const f = fixture(t);
        let accept = true;
        const broker = await f.aedes({ authenticate: () => accept });
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 100);
        await connection.open(null);
        const topic = uniqueTopic('refused-reconnect');
        const listener = new RecordingListener();
        await connection.subscribe(topic, { qos: 1 }, listener);
        accept = false;
        await broker.restart();
        const refusedAt = broker.broker.connectionCount();
        await new Promise((resolve) => setTimeout(resolve, 400));
        accept = true;
        await waitFor(() => connection.getConnection()?.connected === true, 10000, 'a reconnect after the refusal');
        assert.ok(broker.broker.connectionCount() > refusedAt);
        await delivered(broker, topic, listener);
    });

    it('restarts reconnecting when MQTT.js loses its reconnect timer (watchdog)', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const { references, logger, counters } = testReferences();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 100, 'options.connect_timeout', 500);
        connection.setReferences(references);
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
    });
});

describe('MqttConnection reconnects to Mosquitto', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('comes back after Mosquitto is killed and started again on the same port', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const sub = f.connection(broker.url, 'options.reconnect_timeout', 100);
        const pub = f.connection(broker.url, 'options.reconnect_timeout', 100);
        await sub.open(null);
        await pub.open(null);
        const topic = uniqueTopic('killed');
        const listener = new RecordingListener();
        await sub.subscribe(topic, { qos: 1 }, listener);
        await broker.kill('SIGKILL');
        await waitFor(() => sub.getConnection()?.connected === false, 5000, 'the loss to be seen');
        await broker.start();
        await waitFor(async () => {
            if (pub.getConnection()?.connected !== true) return false;
            await pub.publish(topic, 'back', { qos: 1 });
            return listener.received.length > 0;
        }, 15000, 'delivery after the restart');
    });
});
