import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { connect, connectAsync, type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';

import { EmbeddedBroker, type EmbeddedBrokerOptions } from '../../dev/EmbeddedBroker';
import { FaultProxy } from '../helpers/faultProxy';
import { delay, uniqueTopic, waitFor } from '../helpers/net';

const TEST = { timeout: 30_000 };
/** Generous bound for anything expected to happen soon. */
const SOON_MS = 10_000;
/** How long to wait to be sure something does NOT arrive. */
const QUIET_MS = 300;

/** A persistent-session subscriber: a fixed clientId, clean=false, every message recorded. */
interface Subscriber {
    client: MqttClient;
    inbox: string[];
    /** CONNACKs received, in order (one per connection, reconnects included). */
    connacks: IConnackPacket[];
}

const brokers = new Set<EmbeddedBroker>();
const proxies = new Set<FaultProxy>();
const clients = new Set<MqttClient>();

afterEach(async () => {
    const all = [...clients];
    clients.clear();
    await Promise.all(all.map((client) => client.endAsync(true)));
    await Promise.all([...proxies].map((proxy) => proxy.stop()));
    proxies.clear();
    await Promise.all([...brokers].map((broker) => broker.stop()));
    brokers.clear();
});

async function startBroker(options: EmbeddedBrokerOptions = {}): Promise<EmbeddedBroker> {
    const broker = await EmbeddedBroker.start(options);
    brokers.add(broker);
    return broker;
}

/**
 * Connects a subscriber with clean=false. Listeners are attached before the CONNECT goes out:
 * queued messages may arrive in the same read as the CONNACK.
 */
async function subscriber(url: string, clientId: string, options: IClientOptions = {}): Promise<Subscriber> {
    const client = connect(url, { clientId, clean: false, reconnectPeriod: 0, connectTimeout: 5000, ...options });
    clients.add(client);
    const inbox: string[] = [];
    const connacks: IConnackPacket[] = [];
    client.on('message', (_topic, payload) => inbox.push(payload.toString()));
    client.on('connect', (connack) => connacks.push(connack));
    client.on('error', () => undefined);
    await waitFor(() => connacks.length > 0, SOON_MS, `${clientId} to connect`);
    return { client, inbox, connacks };
}

async function publisher(url: string): Promise<MqttClient> {
    const client = await connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000 });
    clients.add(client);
    return client;
}

async function publishAll(client: MqttClient, topic: string, payloads: string[]): Promise<void> {
    for (const payload of payloads) {
        await client.publishAsync(topic, payload, { qos: 1 });
    }
}

function numbered(prefix: string, count: number): string[] {
    return Array.from({ length: count }, (_, i) => `${prefix}${i}`);
}

/** Payloads of `expected` missing from `inbox` (duplicates in the inbox are allowed: QoS 1). */
function missing(expected: string[], inbox: string[]): string[] {
    const got = new Set(inbox);
    return expected.filter((payload) => !got.has(payload));
}

type Bounce = 'restart' | 'kill';

async function bounce(broker: EmbeddedBroker, how: Bounce): Promise<void> {
    if (how === 'kill') {
        await broker.kill();
    }
    await broker.restart();
}

/** A subscriber to `topic` that subscribed at QoS 1 and then disconnected cleanly. */
async function offlineSubscriber(broker: EmbeddedBroker, clientId: string, topic: string): Promise<void> {
    const first = await subscriber(broker.url, clientId);
    assert.equal(first.connacks[0].sessionPresent, false, 'a session before the first connect');
    await first.client.subscribeAsync(topic, { qos: 1 });
    await first.client.endAsync();
    clients.delete(first.client);
}

describe('EmbeddedBroker sessions across restart() and kill()', () => {
    for (const how of ['restart', 'kill'] as const) {
        it(`with keepSessions a persistent session, its subscription and its queued QoS 1 messages survive ${how}`, TEST, async () => {
            const broker = await startBroker({ keepSessions: true });
            const port = broker.port;
            const topic = uniqueTopic(`sessions/${how}`);
            const clientId = `keep-${how}-${Date.now()}`;
            await offlineSubscriber(broker, clientId, topic);

            const queued = numbered('q', 10);
            const pub = await publisher(broker.url);
            await publishAll(pub, topic, queued);
            await bounce(broker, how);
            assert.equal(broker.port, port);

            const back = await subscriber(broker.url, clientId);
            assert.equal(back.connacks[0].sessionPresent, true);
            await waitFor(() => back.inbox.length >= queued.length, SOON_MS, `the ${queued.length} queued messages (have ${back.inbox.length})`);
            assert.deepEqual(back.inbox, queued);

            // The subscription itself came back: this client never subscribed.
            const live = await publisher(broker.url);
            await live.publishAsync(topic, 'live', { qos: 1 });
            await waitFor(() => back.inbox.includes('live'), SOON_MS, 'a message published after the reconnect');
        });

        it(`without keepSessions the session is gone after ${how}`, TEST, async () => {
            const broker = await startBroker();
            const topic = uniqueTopic(`sessions/${how}`);
            const clientId = `lose-${how}-${Date.now()}`;
            await offlineSubscriber(broker, clientId, topic);
            const pub = await publisher(broker.url);
            await publishAll(pub, topic, numbered('q', 3));
            await bounce(broker, how);

            const back = await subscriber(broker.url, clientId);
            assert.equal(back.connacks[0].sessionPresent, false);
            const live = await publisher(broker.url);
            await live.publishAsync(topic, 'live', { qos: 1 });
            await delay(QUIET_MS);
            assert.deepEqual(back.inbox, [], 'neither queued messages nor the subscription survived');
        });
    }

    it('with keepSessions retained messages survive a restart', TEST, async () => {
        const broker = await startBroker({ keepSessions: true });
        const topic = uniqueTopic('sessions/retained');
        const pub = await publisher(broker.url);
        await pub.publishAsync(topic, 'kept', { qos: 1, retain: true });
        await broker.restart();

        const client = await publisher(broker.url);
        const received = new Promise<string>((resolve) => client.once('message', (_topic, payload) => resolve(payload.toString())));
        await client.subscribeAsync(topic, { qos: 1 });
        assert.equal(await received, 'kept');
    });

    it('kill() drops every client at once, releases the port, and restart() listens on it again', TEST, async () => {
        const broker = await startBroker();
        const port = broker.port;
        const client = await publisher(broker.url);
        const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
        await broker.kill();
        await closed;
        assert.equal(broker.clientCount(), 0);
        await broker.kill();
        await broker.restart();
        assert.equal(broker.port, port);
        await publisher(broker.url);
        assert.equal(broker.clientCount(), 1);
    });
});

describe('EmbeddedBroker kill() with a subscriber receiving a QoS 1 stream', () => {
    it('delivers, after the reconnect, every message acknowledged to the publisher before the kill', TEST, async (t) => {
        const broker = await startBroker({ keepSessions: true });
        const topic = uniqueTopic('sessions/stream');
        const clientId = `stream-${Date.now()}`;
        const sub = await subscriber(broker.url, clientId, { reconnectPeriod: 100 });
        await sub.client.subscribeAsync(topic, { qos: 1 });
        const pub = await publisher(broker.url);

        // Up to 32 publishes in flight at a time; the broker is killed as soon as 200 are acknowledged.
        const acked: string[] = [];
        let killed: Promise<void> | undefined;
        let receivedAtKill = 0;
        const payloads = numbered('s', 1000);
        let next = 0;
        const worker = async (): Promise<void> => {
            while (!killed && next < payloads.length) {
                const payload = payloads[next++];
                try {
                    await pub.publishAsync(topic, payload, { qos: 1 });
                } catch {
                    return; // the kill ended the publisher's connection
                }
                if (killed) return;
                acked.push(payload);
                if (acked.length === 200) {
                    receivedAtKill = sub.inbox.length;
                    killed = broker.kill();
                }
            }
        };
        // Publishes cut by the kill never settle (the publisher does not reconnect): don't wait for them.
        const workers = Array.from({ length: 32 }, () => worker());
        void Promise.all(workers);
        await waitFor(() => killed !== undefined, SOON_MS, '200 acknowledged publishes');
        await killed;
        const ackedBeforeKill = [...acked];
        await broker.restart();

        await waitFor(() => sub.connacks.length >= 2, SOON_MS, 'the subscriber to reconnect');
        assert.equal(sub.connacks[1].sessionPresent, true);
        await waitFor(() => missing(ackedBeforeKill, sub.inbox).length === 0, SOON_MS, 'every acknowledged message');
        t.diagnostic(`acknowledged before the kill: ${ackedBeforeKill.length}, received by then: ${receivedAtKill}, received in all: ${sub.inbox.length}`);
    });

    it('redelivers the messages that were in flight to a subscriber when the broker was killed', TEST, async () => {
        const broker = await startBroker({ keepSessions: true });
        // The subscriber connects through a proxy, so its link can be stalled: deliveries then
        // stay unacknowledged, certainly in flight when the broker is killed.
        const proxy = await FaultProxy.start(broker.host, broker.port);
        proxies.add(proxy);
        const topic = uniqueTopic('sessions/inflight');
        const clientId = `inflight-${Date.now()}`;
        const sub = await subscriber(proxy.url, clientId, { reconnectPeriod: 100, keepalive: 60 });
        await sub.client.subscribeAsync(topic, { qos: 1 });
        const pub = await publisher(broker.url);

        // Received is not acknowledged: the subscriber's PUBACKs may still be on their way (MQTT.js
        // leaves Nagle on, so back-to-back PUBACKs can wait ~40 ms), so these may come again.
        const before = numbered('before', 5);
        await publishAll(pub, topic, before);
        await waitFor(() => sub.inbox.length === before.length, SOON_MS, 'the messages before the stall');

        proxy.stall();
        const inFlight = numbered('inflight', 5);
        await publishAll(pub, topic, inFlight);
        await delay(QUIET_MS);
        await broker.kill();
        // The crash takes what the network held with it: the held deliveries never arrive.
        proxy.cutAll();
        proxy.unstall();
        assert.deepEqual(sub.inbox, before);

        await broker.restart();
        await waitFor(() => sub.connacks.length >= 2, SOON_MS, 'the subscriber to reconnect');
        assert.equal(sub.connacks[1].sessionPresent, true);
        await waitFor(() => missing(inFlight, sub.inbox).length === 0, SOON_MS, 'the in-flight messages');

        const after = numbered('after', 5);
        const pub2 = await publisher(broker.url);
        await publishAll(pub2, topic, after);
        await waitFor(() => missing(after, sub.inbox).length === 0, SOON_MS, 'the messages after the restart');
        assert.deepEqual(new Set(sub.inbox), new Set([...before, ...inFlight, ...after]));
    });
});
