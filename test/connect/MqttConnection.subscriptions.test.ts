// subscribe() and unsubscribe(): the listed subscriptions, unsubscribes that wait for their UNSUBACK or not, calls made while the broker is down, shared subscriptions.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import type { Packet } from 'mqtt';

import { type AedesTestBroker, delay, mosquittoSkip, uniqueTopic, waitFor } from '../helpers/brokers';
import { RecordingListener, uniqueClientId } from '../helpers/components';
import { fixture, suiteFixture } from '../helpers/fixture';

describe('MqttConnection subscriptions', { timeout: 60000 }, () => {
    const suite = suiteFixture();
    let broker: AedesTestBroker;
    before(async () => { broker = await suite.aedes(); });

    it('lists its subscriptions', async (t) => {
        const f = fixture(t);
        const connection = f.connection(broker.url);
        await connection.open(null);
        const a = new RecordingListener();
        const b = new RecordingListener();
        await connection.subscribe('list/+/x', { qos: 1 }, a);
        await connection.subscribe('list/+/x', null, b);
        await connection.subscribe('$share/g/list/y', null, a);
        const subs = connection.getSubscriptions().map((s) => ({
            topic: s.topic, filter: s.filter, qos: s.qos, shared: s.isShared, wild: s.hasWildcards, mine: s.listener === a,
        }));
        assert.deepEqual(subs, [
            { topic: 'list/+/x', filter: 'list/+/x', qos: 1, shared: false, wild: true, mine: true },
            { topic: 'list/+/x', filter: 'list/+/x', qos: 0, shared: false, wild: true, mine: false },
            { topic: '$share/g/list/y', filter: 'list/y', qos: 0, shared: true, wild: false, mine: true },
        ]);
        assert.ok(Object.isFrozen(connection.getSubscriptions()[0].options));
    });
});

describe('MqttConnection subscribe and unsubscribe around a lost connection', { timeout: 60000 }, () => {
    it('resolves unsubscribe() of a filter\'s last listener only after the UNSUBACK', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url);
        await connection.open(null);
        const topic = uniqueTopic('unsuback');
        const a = new RecordingListener();
        const b = new RecordingListener();
        await connection.subscribe(topic, null, a);
        await connection.subscribe(topic, null, b);
        let unsubacks = 0;
        connection.getConnection()!.on('packetreceive', (p: Packet) => { if (p.cmd === 'unsuback') unsubacks++; });
        const seen: Record<string, number> = {};
        // In one tick: a is not the last listener (returns at once), b is (waits for the UNSUBACK).
        await Promise.all([
            connection.unsubscribe(topic, a).then(() => { seen.a = unsubacks; }),
            connection.unsubscribe(topic, b).then(() => { seen.b = unsubacks; }),
        ]);
        assert.deepEqual(seen, { a: 0, b: 1 });
    });

    it('subscribes while the broker is down once it is back, and unsubscribes while down without error', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const sub = f.connection(broker.url, 'options.reconnect_timeout', 100);
        const pub = f.connection(broker.url, 'options.reconnect_timeout', 100);
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
    });

    it('unsubscribes at once while the broker is down, even with a subscribe of the same filter waiting', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 100);
        await connection.open(null);
        const topic = uniqueTopic('down');
        const a = new RecordingListener();
        const b = new RecordingListener();
        await connection.subscribe(topic, { qos: 1 }, a);
        await broker.broker.stop();
        await waitFor(() => connection.getConnection()?.connected === false, 5000, 'the loss');
        const waiting = connection.subscribe(topic, { qos: 1 }, b).then(() => 'resolved', (e: { code: string }) => e.code);
        const started = Date.now();
        await connection.unsubscribe(topic, a);
        await connection.unsubscribe(topic, b);
        assert.ok(Date.now() - started < 1000, 'did not wait for the broker');
        assert.equal(await waiting, 'resolved', 'the subscribe of a listener unsubscribed meanwhile resolves');
        assert.deepEqual(connection.getSubscriptions(), []);
        await broker.restart();
        await waitFor(() => connection.getConnection()?.connected === true, 10000, 'the reconnect');
        const pub = f.connection(broker.url);
        await pub.open(null);
        await pub.publish(topic, 'x', { qos: 1 });
        await pub.close(null);
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.equal(a.received.length + b.received.length, 0, 'nothing subscribed after the reconnect');
    });

    it('returns from unsubscribe() when the connection drops under it', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const proxy = await f.proxy(broker.host, broker.port);
        const sub = f.connection(proxy.url, 'client_id', uniqueClientId('edge'), 'options.clean_session', false, 'options.reconnect_timeout', 200,
            'options.connect_timeout', 1000);
        f.defer(() => proxy.accept());
        await sub.open(null);
        const topic = uniqueTopic('f3');
        const l = new RecordingListener();
        await sub.subscribe(topic, { qos: 1 }, l);
        proxy.stall();
        let done = false;
        const unsub = sub.unsubscribe(topic, l).then(() => { done = true; });
        await delay(100);
        proxy.refuse();
        proxy.cutAll();
        await waitFor(() => !sub.isConnected(), 5000, 'the loss');
        proxy.unstall();
        await waitFor(() => done, 5000, 'unsubscribe() to return during the outage');
        proxy.accept();
        await unsub;
    });

    it('rejects an unsubscribe() still waiting for its UNSUBACK with MQTT_CLOSED when closed', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const proxy = await f.proxy(broker.host, broker.port);
        const conn = f.connection(proxy.url, 'options.reconnect_timeout', 100);
        f.defer(() => proxy.unstall());
        await conn.open(null);
        const topic = uniqueTopic('r2');
        const l = new RecordingListener();
        await conn.subscribe(topic, { qos: 1 }, l);
        proxy.stall();
        const unsub = assert.rejects(conn.unsubscribe(topic, l), { code: 'MQTT_CLOSED' });
        await delay(100);
        await conn.close(null);
        await unsub;
    });
});

describe('MqttConnection shared subscriptions on Mosquitto', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('splits a shared subscription between its group members', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto();
        const a = f.connection(broker.url);
        const b = f.connection(broker.url);
        const pub = f.connection(broker.url);
        await Promise.all([a.open(null), b.open(null), pub.open(null)]);
        const base = uniqueTopic('jobs');
        const la = new RecordingListener();
        const lb = new RecordingListener();
        await a.subscribe(`$share/workers/${base}/+`, { qos: 1 }, la);
        await b.subscribe(`$share/workers/${base}/+`, { qos: 1 }, lb);
        const count = 40;
        for (let i = 0; i < count; i++) await pub.publish(`${base}/${i}`, String(i), { qos: 1 });
        await waitFor(() => la.received.length + lb.received.length === count, 10000, 'all jobs');
        assert.ok(la.received.length > 0 && lb.received.length > 0, `split ${la.received.length}/${lb.received.length}`);
        const all = [...la.received, ...lb.received].map((r) => Number(r.data.toString())).sort((x, y) => x - y);
        assert.deepEqual(all, Array.from({ length: count }, (_, i) => i), 'each job exactly once');
        assert.equal(a.getSubscriptions()[0].isShared, true);
        assert.equal(a.getSubscriptions()[0].filter, `${base}/+`);
    });
});
