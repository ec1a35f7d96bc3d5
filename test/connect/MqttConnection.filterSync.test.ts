// The filters the broker holds follow the listeners: through refusals, QoS changes and reconnects.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Packet } from 'mqtt';
import { LogLevel } from 'pip-services3-components-nodex';

import { type MqttConnection, MqttErrorCode } from '../../src';
import { type AedesTestBroker, uniqueTopic, waitFor } from '../helpers/brokers';
import { delivered, RecordingListener, testReferences } from '../helpers/components';
import { fixture } from '../helpers/fixture';

/** Counts the SUBSCRIBE packets a connection sends for a filter. */
function subscribeCounter(connection: MqttConnection, filter: string): () => number {
    let count = 0;
    connection.getConnection()!.on('packetsend', (p: Packet) => {
        if (p.cmd === 'subscribe' && p.subscriptions.some((s) => s.topic === filter)) count++;
    });
    return () => count;
}

async function reconnected(broker: AedesTestBroker, connection: MqttConnection): Promise<void> {
    await broker.restart();
    await waitFor(() => connection.getConnection()?.connected === true, 10000, 'the reconnect');
}

describe('MqttConnection keeps the broker in line with its listeners', { timeout: 60000 }, () => {
    it('re-subscribing a listener while its first SUBSCRIBE is refused leaves the new subscription working', async (t) => {
        const f = fixture(t);
        let first = true;
        const broker = await f.aedes({ authorizeSubscribe: (_id, topic) => {
            if (!topic.startsWith('stale/') || !first) return true;
            first = false;
            return false;
        } });
        const connection = f.connection(broker.url);
        await connection.open(null);
        const topic = uniqueTopic('stale');
        const listener = new RecordingListener();
        // Once the first SUBSCRIBE is on the wire, before its SUBACK: unsubscribe, subscribe again.
        const later: { unsubscribing?: Promise<void>; secondCall?: Promise<string> } = {};
        connection.getConnection()!.on('packetsend', (p: Packet) => {
            if (p.cmd !== 'subscribe' || later.unsubscribing) return;
            later.unsubscribing = connection.unsubscribe(topic, listener);
            later.secondCall = connection.subscribe(topic, { qos: 1 }, listener).then(() => 'resolved', (e: { code: string }) => e.code);
        });
        const firstCall = connection.subscribe(topic, { qos: 1 }, listener).then(() => 'resolved', (e: { code: string }) => e.code);
        await waitFor(() => later.secondCall !== undefined, 5000, 'the first SUBSCRIBE to be sent');
        await later.unsubscribing;
        assert.deepEqual([await firstCall, await later.secondCall], ['resolved', 'resolved'],
            'the first call ends when its listener leaves; the second gets a SUBSCRIBE of its own');
        assert.deepEqual(connection.getSubscriptions().map((s) => s.topic), [topic]);
        await delivered(broker, topic, listener);
    });

    it('keeps the listeners of a filter the broker refuses after a reconnect, asks again, and delivers once the broker allows it', async (t) => {
        // A cluster that lost a node may refuse a SUBSCRIBE for a while (NATS: SUBACK 0x80 with one node of three down).
        const f = fixture(t);
        let allow = true;
        const broker = await f.aedes({ authorizeSubscribe: () => allow });
        const { references, logger } = testReferences();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 200);
        connection.setReferences(references);
        await connection.open(null);
        const topic = uniqueTopic('refused-again');
        const a = new RecordingListener();
        await connection.subscribe(topic, { qos: 1 }, a);
        allow = false;
        await reconnected(broker, connection);
        await waitFor(() => logger.entries.some((e) => e.level === LogLevel.Warn && /refused the subscription to .* again after a reconnect/.test(e.message)),
            5000, 'the warning');
        const count = subscribeCounter(connection, topic);
        await waitFor(() => count() >= 2, 5000, 'two more SUBSCRIBEs');
        assert.deepEqual(connection.getSubscriptions().map((s) => s.topic), [topic], 'the listener stays');
        allow = true;
        await delivered(broker, topic, a);
        assert.equal(logger.entries.filter((e) => e.level === LogLevel.Error).length, 0);
    });

    it('restores a confirmed listener when a higher QoS asked while offline is refused', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ authorizeSubscribe: (_id, _topic, qos) => qos < 2 });
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 100);
        await connection.open(null);
        const topic = uniqueTopic('upgrade');
        const a = new RecordingListener();
        const b = new RecordingListener();
        await connection.subscribe(topic, { qos: 0 }, a);
        await broker.broker.stop();
        await waitFor(() => connection.getConnection()?.connected === false, 5000, 'the loss');
        const upgrading = connection.subscribe(topic, { qos: 2 }, b).then(() => 'resolved', (e: { code: string }) => e.code);
        await broker.restart();
        assert.equal(await upgrading, MqttErrorCode.SubscribeRejected);
        assert.deepEqual(connection.getSubscriptions().map((s) => s.qos), [0]);
        await delivered(broker, topic, a);
        assert.equal(b.received.length, 0);
    });

    it('subscribes again at the QoS its listeners ask for now after a reconnect', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 100);
        await connection.open(null);
        const topic = uniqueTopic('downgrade');
        const a = new RecordingListener();
        const b = new RecordingListener();
        const c = new RecordingListener();
        await connection.subscribe(topic, { qos: 0 }, a);
        await connection.subscribe(topic, { qos: 2 }, b);
        await connection.unsubscribe(topic, b);
        await reconnected(broker, connection);
        await delivered(broker, topic, a);
        const count = subscribeCounter(connection, topic);
        await connection.subscribe(topic, { qos: 2 }, c);
        assert.equal(count(), 1, 'QoS 2 was asked again: the broker held QoS 0 after the reconnect');
        await delivered(broker, topic, c, 2);
        assert.equal(c.received.at(-1)?.qos, 2);
    });

    it("restores a filter named 'resubscribe' after a reconnect", async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 100);
        await connection.open(null);
        const listener = new RecordingListener();
        await connection.subscribe('resubscribe', { qos: 1 }, listener);
        await reconnected(broker, connection);
        await delivered(broker, 'resubscribe', listener);
    });
});
