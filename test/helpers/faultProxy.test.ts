import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { performance } from 'node:perf_hooks';
import { after, afterEach, before, describe, it } from 'node:test';
import { connect, connectAsync, type IClientOptions, type MqttClient } from 'mqtt';

import { EmbeddedBroker } from '../../dev/EmbeddedBroker';
import { FaultProxy } from './faultProxy';
import { delay, refusedPort, uniqueTopic, waitFor } from './net';

const TEST = { timeout: 20_000 };
/** Upper bound for anything that should happen "soon": generous, so slow CI never trips it. */
const SOON_MS = 8000;
/** How long a test waits to be sure something does NOT happen. */
const QUIET_MS = 300;

interface Tracked {
    client: MqttClient;
    errors: string[];
}

const clients = new Set<MqttClient>();
let proxy: FaultProxy | undefined;

type ClientEvent = 'connect' | 'close' | 'message';

/** Resolves with the arguments of the `count`-th `event` from now; rejects naming `what` after `ms`. */
function nthEvent(client: MqttClient, event: ClientEvent, count: number, what: string, ms = SOON_MS): Promise<unknown[]> {
    return new Promise((resolve, reject) => {
        let seen = 0;
        const listener = (...args: unknown[]): void => {
            if (++seen < count) return;
            clearTimeout(timer);
            client.off(event, listener);
            resolve(args);
        };
        const timer = setTimeout(() => {
            client.off(event, listener);
            reject(new Error(`Only ${seen} of ${count} '${event}' within ${ms} ms: ${what}`));
        }, ms);
        client.on(event, listener);
    });
}

function nextEvent(client: MqttClient, event: ClientEvent, what: string, ms = SOON_MS): Promise<unknown[]> {
    return nthEvent(client, event, 1, what, ms);
}

/** A client that is not connected yet (listeners can be attached first); errors are recorded. */
function track(url: string, options: IClientOptions = {}): Tracked {
    const client = connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    clients.add(client);
    const errors: string[] = [];
    client.on('error', (err) => errors.push(err.message));
    return { client, errors };
}

async function connected(url: string, options: IClientOptions = {}): Promise<Tracked> {
    const tracked = track(url, options);
    await nextEvent(tracked.client, 'connect', `connect to ${url}`);
    return tracked;
}

async function startProxy(port: number): Promise<FaultProxy> {
    proxy = await FaultProxy.start('127.0.0.1', port);
    return proxy;
}

describe('FaultProxy', () => {
    let broker: EmbeddedBroker;

    before(async () => {
        broker = await EmbeddedBroker.start();
    });

    afterEach(async () => {
        const all = [...clients];
        clients.clear();
        await Promise.all(all.map((client) => client.endAsync(true)));
        await proxy?.stop();
        proxy = undefined;
    });

    after(async () => {
        await broker.stop();
    });

    it('forwards traffic both ways and counts connections', TEST, async () => {
        const p = await startProxy(broker.port);
        assert.equal(p.url, `mqtt://127.0.0.1:${p.port}`);
        const topic = uniqueTopic('proxy');
        const { client: subscriber } = await connected(p.url);
        await subscriber.subscribeAsync(topic, { qos: 1 });
        const { client: publisher } = await connected(p.url);
        const received = nextEvent(subscriber, 'message', 'the message through the proxy');
        await publisher.publishAsync(topic, 'hello', { qos: 1 });
        const [gotTopic, payload] = (await received) as [string, Buffer];
        assert.equal(gotTopic, topic);
        assert.equal(payload.toString(), 'hello');
        assert.equal(p.connectionCount(), 2);
        assert.equal(p.openConnections(), 2);
        assert.equal(p.attempts().length, 2);
        assert.equal(broker.clientCount(), 2);
    });

    it('cutAll() drops every connection at once and accepts new ones afterwards', TEST, async () => {
        const p = await startProxy(broker.port);
        const a = await connected(p.url);
        const b = await connected(p.url);
        const closes = [nextEvent(a.client, 'close', 'client a closed'), nextEvent(b.client, 'close', 'client b closed')];
        p.cutAll();
        assert.equal(p.openConnections(), 0);
        await Promise.all(closes);
        await waitFor(() => broker.clientCount() === 0, SOON_MS, 'the broker to see both clients gone');
        const c = await connected(p.url);
        assert.equal(c.client.connected, true);
        assert.equal(p.connectionCount(), 3);
        assert.equal(p.openConnections(), 1);
    });

    it('refuse(ms) refuses new connections for the window, records each attempt and leaves existing ones alone', TEST, async () => {
        const p = await startProxy(broker.port);
        const topic = uniqueTopic('refuse');
        const existing = await connected(p.url);
        await existing.client.subscribeAsync(topic, { qos: 1 });

        const refusedAt = performance.now();
        p.refuse(1000);
        const { client } = track(p.url, { reconnectPeriod: 100 });
        let closes = 0;
        client.on('close', () => closes++);
        await nextEvent(client, 'connect', 'the connect after the refuse window');
        const connectedAt = performance.now();

        // setTimeout may fire up to a millisecond early against performance.now().
        assert.ok(connectedAt - refusedAt >= 990, `connected ${connectedAt - refusedAt} ms after refuse(1000)`);
        const attempts = p.attempts();
        assert.equal(attempts.length, 1 + closes + 1, 'the existing connection, every refused one and the last');
        assert.ok(closes >= 2, `only ${closes} refused attempts in 1 s with a 100 ms reconnect period`);
        const retries = attempts.slice(1);
        for (let i = 1; i < retries.length; i++) {
            assert.ok(retries[i] - retries[i - 1] >= 90, `attempts ${i - 1} and ${i} only ${retries[i] - retries[i - 1]} ms apart`);
        }
        assert.ok(retries.slice(0, -1).every((t) => t < refusedAt + 1050), 'a refused attempt after the window');
        assert.ok(retries[retries.length - 1] - refusedAt >= 990, 'an attempt accepted within the window');
        assert.equal(p.connectionCount(), 2);

        // The connection made before the window still works.
        const received = nextEvent(existing.client, 'message', 'a message on the connection made before refuse()');
        await client.publishAsync(topic, 'still here', { qos: 1 });
        await received;
    });

    it('refuse() without a duration lasts until accept()', TEST, async () => {
        const p = await startProxy(broker.port);
        p.refuse();
        const { client } = track(p.url, { reconnectPeriod: 50 });
        await nthEvent(client, 'close', 3, 'refused attempts');
        assert.equal(client.connected, false);
        assert.equal(p.connectionCount(), 0);
        p.accept();
        await nextEvent(client, 'connect', 'the connect after accept()');
        assert.equal(p.connectionCount(), 1);
    });

    it('stall() leaves a silent connection that the client detects with its keepalive', TEST, async () => {
        const p = await startProxy(broker.port);
        const { client, errors } = await connected(p.url, { keepalive: 1 });
        const stalledAt = performance.now();
        const closed = nextEvent(client, 'close', 'the keepalive to notice the stalled link');
        p.stall();
        await closed;
        const ms = performance.now() - stalledAt;
        // MQTT.js pings after 1 s of silence and gives up half a keepalive later.
        assert.ok(ms >= 900, `closed after ${ms} ms, before a keepalive could have expired`);
        assert.deepEqual(errors, ['Keepalive timeout']);
    });

    it('stall() holds the bytes of existing and new connections; unstall() delivers them', TEST, async () => {
        const p = await startProxy(broker.port);
        const topic = uniqueTopic('stall');
        const subscriber = await connectAsync(broker.url, { reconnectPeriod: 0 });
        clients.add(subscriber);
        await subscriber.subscribeAsync(topic, { qos: 1 });
        const inbox: string[] = [];
        subscriber.on('message', (_topic, payload) => inbox.push(payload.toString()));

        const { client: publisher } = await connected(p.url, { keepalive: 60 });
        p.stall();
        let published = false;
        const publishing = Promise.all(['1', '2', '3'].map((payload) => publisher.publishAsync(topic, payload, { qos: 1 }))).then(() => {
            published = true;
        });
        const late = track(p.url, { keepalive: 60 });
        await delay(QUIET_MS);
        assert.deepEqual(inbox, [], 'a message got through the stalled proxy');
        assert.equal(published, false, 'a PUBACK got through the stalled proxy');
        assert.equal(late.client.connected, false, 'a CONNACK got through the stalled proxy');
        assert.equal(publisher.connected, true);

        p.unstall();
        await Promise.all([publishing, nextEvent(late.client, 'connect', 'the connection made while stalled')]);
        await waitFor(() => inbox.length === 3, SOON_MS, 'the held messages');
        assert.deepEqual(inbox, ['1', '2', '3']);
        assert.equal(p.openConnections(), 2);
    });

    it('resets the client when the target is unreachable; retarget() moves new connections', TEST, async () => {
        const p = await startProxy(await refusedPort());
        const first = track(p.url);
        await nextEvent(first.client, 'close', 'the client of an unreachable target closed');
        assert.equal(first.client.connected, false);
        await waitFor(() => p.openConnections() === 0, SOON_MS, 'no open connection left');

        p.retarget(broker.port);
        assert.equal(p.targetPort, broker.port);
        const second = await connected(p.url);
        assert.equal(second.client.connected, true);
        assert.equal(p.connectionCount(), 2);
    });

    it('stop() closes every connection and releases the port; it is idempotent', TEST, async () => {
        const p = await startProxy(broker.port);
        const port = p.port;
        const { client } = await connected(p.url);
        const closed = nextEvent(client, 'close', 'the client closed by stop()');
        await Promise.all([p.stop(), p.stop()]);
        await closed;
        await p.stop();
        // The port is free again: something else can listen on it.
        const server = createServer();
        await new Promise<void>((resolve, reject) => {
            server.once('error', reject);
            server.listen(port, '127.0.0.1', () => resolve());
        });
        await new Promise<void>((resolve) => server.close(() => resolve()));
    });
});
