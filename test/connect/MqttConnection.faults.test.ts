import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Packet } from 'mqtt';
import { ConnectionException, InvalidStateException } from 'pip-services3-commons-nodex';

import { MqttErrorCode } from '../../src';
import { refusedPort, silentServer, startAedes, uniqueTopic, waitFor } from '../helpers/brokers';
import { newConnection, RecordingListener } from '../helpers/components';
import { PACKAGE_SRC, runScript } from '../helpers/process';

const SRC = JSON.stringify(PACKAGE_SRC);

describe('MqttConnection under faults', { timeout: 60000 }, () => {
    it('leaves no timer behind when closed during a connect attempt or a reconnect wait', async () => {
        const silent = await silentServer();
        const dead = await refusedPort();
        try {
            const script = `
                const { MqttConnection } = require(${SRC});
                const { ConfigParams } = require('pip-services3-commons-nodex');
                (async () => {
                    const a = new MqttConnection();
                    a.configure(ConfigParams.fromTuples('connection.uri', '${silent.url}', 'options.connect_timeout', 20000));
                    const opening = a.open(null).catch((e) => console.log('open:', e.code));
                    await new Promise((r) => setTimeout(r, 200));
                    await a.close(null);
                    await opening;
                    const b = new MqttConnection();
                    b.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://127.0.0.1:${dead}',
                        'options.connect_timeout', 20000, 'options.reconnect_timeout', 15000));
                    const opening2 = b.open(null).catch((e) => console.log('open:', e.code));
                    await new Promise((r) => setTimeout(r, 200));
                    await b.close(null);
                    await opening2;
                    console.log('closed');
                })();`;
            const { code, output, ms } = await runScript(script, 30000);
            assert.equal(code, 0, output);
            assert.match(output, /open: MQTT_CLOSED\nopen: MQTT_CLOSED\nclosed/);
            // Either timer (20 s CONNACK, 15 s reconnect) would keep the process alive far longer.
            assert.ok(ms < 10000, `the process lived ${ms} ms after closing`);
        } finally {
            await silent.stop();
        }
    });

    it('rejects an unacknowledged QoS 1 publish when the connection is lost and retry_connect is false', async () => {
        const broker = await startAedes({ authorizePublish: (_id, topic) => !topic.startsWith('refused/') });
        const connection = newConnection(broker.url, 'options.retry_connect', false);
        try {
            await connection.open(null);
            // The broker answers a refused publish by closing the connection.
            await assert.rejects(connection.publish('refused/x', 'x', { qos: 1 }), (err: ConnectionException) => {
                assert.ok(err instanceof ConnectionException, String(err));
                assert.equal(err.code, MqttErrorCode.NotConnected);
                return true;
            });
            assert.equal(connection.isOpen(), true);
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    for (const retry of [true, false]) {
        it(`rejects what is pending with MQTT_CLOSED when closed (retry_connect ${retry})`, async () => {
            const broker = await startAedes({ authorizePublish: (_id, topic) => (topic.startsWith('held/') ? 'hold' : true) });
            const connection = newConnection(broker.url, 'options.retry_connect', retry);
            try {
                await connection.open(null);
                const outcome = connection.publish('held/x', 'x', { qos: 1 }).then(() => null, (err: unknown) => err);
                await new Promise((resolve) => setTimeout(resolve, 100));
                await connection.close(null);
                const err = await outcome;
                assert.ok(err instanceof InvalidStateException, String(err));
                assert.equal(err.code, MqttErrorCode.Closed);
            } finally {
                await connection.close(null);
                await broker.stop();
            }
        });
    }

    it('subscribes while the broker is down once it is back, and unsubscribes while down without error', async () => {
        const broker = await startAedes();
        const sub = newConnection(broker.url, 'options.reconnect_timeout', 100);
        const pub = newConnection(broker.url, 'options.reconnect_timeout', 100);
        try {
            await sub.open(null);
            await pub.open(null);
            const kept = uniqueTopic('offline-sub');
            const dropped = uniqueTopic('offline-unsub');
            const listener = new RecordingListener();
            await sub.subscribe(dropped, { qos: 1 }, listener);
            await broker.broker.stop();
            await waitFor(() => sub.getConnection()?.connected === false, 5000, 'the loss');
            const subscribing = sub.subscribe(kept, { qos: 1 }, listener);
            await sub.unsubscribe(dropped, listener);
            await new Promise((resolve) => setTimeout(resolve, 300));
            await broker.restart();
            await subscribing;
            await waitFor(() => pub.getConnection()?.connected === true, 10000, 'the publisher to reconnect');
            await pub.publish(dropped, 'not for us', { qos: 1 });
            await pub.publish(kept, 'for us', { qos: 1 });
            await waitFor(() => listener.received.length > 0, 5000, 'the message on the filter subscribed while down');
            await new Promise((resolve) => setTimeout(resolve, 100));
            assert.deepEqual(listener.topics(), [kept]);
            assert.deepEqual(sub.getSubscriptions().map((s) => s.topic), [kept]);
        } finally {
            await sub.close(null);
            await pub.close(null);
            await broker.stop();
        }
    });

    it('keeps one SUBSCRIBE per QoS step when an earlier SUBSCRIBE for the filter is refused', async () => {
        let first = true;
        const broker = await startAedes({
            authorizeSubscribe: (_id, topic) => {
                if (!topic.startsWith('race/') || !first) return true;
                first = false;
                return false;
            },
        });
        const connection = newConnection(broker.url);
        try {
            await connection.open(null);
            const sent: Packet[] = [];
            connection.getConnection()!.on('packetsend', (p: Packet) => { if (p.cmd === 'subscribe') sent.push(p); });
            const a = new RecordingListener();
            const b = new RecordingListener();
            const c = new RecordingListener();
            const results = await Promise.allSettled([
                connection.subscribe('race/f', { qos: 0 }, a),
                connection.subscribe('race/f', { qos: 1 }, b),
            ]);
            assert.deepEqual(results.map((r) => r.status), ['rejected', 'fulfilled']);
            await connection.subscribe('race/f', { qos: 1 }, c);
            assert.equal(sent.length, 2, 'the QoS 1 subscription already stands: no third SUBSCRIBE');
            assert.deepEqual(connection.getSubscriptions().map((s) => s.listener === b || s.listener === c), [true, true]);
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });

    it('closes cleanly while subscribes and unsubscribes are on their way to the broker', async () => {
        const broker = await startAedes();
        try {
            for (let round = 0; round < 5; round++) {
                const connection = newConnection(broker.url);
                await connection.open(null);
                const listener = new RecordingListener();
                const topics = [uniqueTopic('c1'), uniqueTopic('c2'), uniqueTopic('c3')];
                for (const t of topics) await connection.subscribe(t, null, listener);
                const calls = [
                    ...topics.map((t) => connection.unsubscribe(t, listener)),
                    connection.subscribe(uniqueTopic('c4'), { qos: 1 }, listener),
                    connection.publish(uniqueTopic('c5'), 'x', { qos: 1 }),
                ].map((p) => p.then(() => 'ok', (e: { code?: string }) => e.code ?? 'error'));
                // Let the calls reach MQTT.js in different rounds before closing.
                for (let i = 0; i < round; i++) await Promise.resolve();
                await connection.close(null);
                for (const outcome of await Promise.all(calls)) {
                    assert.ok(outcome === 'ok' || outcome === MqttErrorCode.Closed, `outcome ${outcome}`);
                }
            }
        } finally {
            await broker.stop();
        }
    });
});
