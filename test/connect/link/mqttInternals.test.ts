import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import type { IClientOptions, MqttClient, Packet } from 'mqtt';

import {
    clearReconnectTimer, interceptAcknowledgements, type MqttQueuedPublish, rearmConnackTimeout, reconnectNow, restartServerRotation, storedPackets, storeProcessingQueue,
} from '../../../src/connect/link/mqttInternals';
import { type AedesTestBroker, delay, silentServer, startAedes, uniqueTopic, waitFor } from '../../helpers/brokers';
import { TestClients } from '../../helpers/clients';

// Each accessor of src/connect/link/mqttInternals.ts against the installed MQTT.js, on real
// clients and an embedded broker: an MQTT.js upgrade that moves one of its private fields fails here.

const TEST = { timeout: 20_000 };

const MQTT_VERSION = (JSON.parse(readFileSync(require.resolve('mqtt/package.json'), 'utf8')) as { version: string }).version;

/** The assertion message for a private part of MQTT.js that is not where the accessor looks. */
function moved(field: string): string {
    return `MQTT.js ${MQTT_VERSION} moved ${field}: update src/connect/link/mqttInternals.ts`;
}

/** A private member of the client, for the checks that it is still a function. */
function privateMember(client: MqttClient, name: string): unknown {
    return (client as unknown as Record<string, unknown>)[name];
}

/** The next `event` of the client; rejects after `ms`. */
function nextEvent(client: MqttClient, event: 'connect' | 'close' | 'reconnect', ms = 5000): Promise<void> {
    return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no '${event}' within ${ms} ms`)), ms);
        client.once(event, () => {
            clearTimeout(timer);
            resolve();
        });
    });
}

/** Publishes at QoS 1; `stored` resolves once MQTT.js put it in its outgoing store, `done` at its PUBACK. */
function publishQos1(client: MqttClient, topic: string): { stored: Promise<void>; done: Promise<void> } {
    let storedResolve!: () => void;
    const stored = new Promise<void>((resolve) => { storedResolve = resolve; });
    const done = new Promise<void>((resolve, reject) => {
        client.publish(topic, 'payload', { qos: 1, cbStorePut: () => storedResolve() }, (err?: Error) => (err ? reject(err) : resolve()));
    });
    return { stored, done };
}

describe(`mqttInternals (MQTT.js ${MQTT_VERSION})`, () => {
    let broker: AedesTestBroker;
    const clients = new TestClients();
    /** Every client of this file, for after(). */
    const created: MqttClient[] = [];
    const create = (options: IClientOptions): MqttClient => {
        const client = clients.create(broker.url, options);
        created.push(client);
        return client;
    };
    const connect = async (options: IClientOptions): Promise<MqttClient> => {
        const client = create(options);
        await nextEvent(client, 'connect');
        return client;
    };

    before(async () => {
        broker = await startAedes();
    });

    after(async () => {
        // A client a failed test left unconnected (manualConnect) cannot be ended (MQTT.js has no
        // stream to close): settle every end, then stop the broker, so that a failure never hangs the file.
        await Promise.allSettled(created.map((client) => client.endAsync(true)));
        await broker.stop();
    });

    it('storedPackets(store) is the live Map of the outgoing store by message id: a QoS 1 publish made offline is in it until its PUBACK', TEST, async () => {
        const client = create({ manualConnect: true });
        const topic = uniqueTopic('internals');
        const { stored, done } = publishQos1(client, topic);
        await stored;

        const packets = storedPackets(client.outgoingStore);
        assert.ok(packets instanceof Map, moved('Store._inflights (the packets of the outgoing store)'));
        const entries = [...packets.entries()];
        assert.equal(entries.length, 1, moved('Store._inflights: the offline publish is not in it'));
        const [id, packet] = entries[0] as [number, Packet];
        assert.equal(packet.cmd, 'publish', moved('Store._inflights: its values are not the stored packets'));
        assert.equal((packet as { topic?: unknown }).topic, topic);
        assert.equal(id, packet.messageId, moved('Store._inflights: it is not keyed by message id'));
        assert.ok(id !== undefined && client.outgoing[id] !== undefined, 'MQTT.js waits for the PUBACK of this message id');

        client.connect();
        await done;
        assert.equal(packets.size, 0, moved('Store._inflights: the Map returned is not the store\'s live one'));
        assert.equal(storedPackets(client.outgoingStore)?.size, 0);
    });

    it('storeProcessingQueue(client) is an array, and holds a publish made while MQTT.js resends its store after a CONNACK', TEST, async () => {
        const client = create({ manualConnect: true });
        const initial = storeProcessingQueue(client);
        assert.ok(Array.isArray(initial), moved('_storeProcessingQueue'));
        assert.equal(initial.length, 0);

        // A publish stored offline: at the CONNACK MQTT.js resends it, and a publish made before its
        // PUBACK waits in the store processing queue.
        const first = uniqueTopic('internals');
        const second = uniqueTopic('internals');
        const resent = publishQos1(client, first);
        await resent.stored;

        let secondDone!: () => void;
        let secondFailed!: (err: Error) => void;
        const secondSettled = new Promise<void>((resolve, reject) => { secondDone = resolve; secondFailed = reject; });
        const secondCallback = (err?: Error): void => (err ? secondFailed(err) : secondDone());
        let queued: MqttQueuedPublish[] | undefined;
        client.on('packetsend', (packet: Packet) => {
            if (queued !== undefined || packet.cmd !== 'publish' || packet.topic !== first) return;
            client.publish(second, 'payload', { qos: 1 }, secondCallback);
            queued = [...(storeProcessingQueue(client) ?? [])];
        });
        client.connect();
        await Promise.all([resent.done, secondSettled]);

        assert.ok(queued !== undefined, 'the stored publish was resent after the CONNACK');
        assert.equal(queued.length, 1, moved('_storeProcessingQueue: a publish made while the store is resent is not in it'));
        assert.equal(queued[0].callback, secondCallback, moved('_storeProcessingQueue[].callback (the publish callback of a queued publish)'));
        assert.equal(storeProcessingQueue(client)?.length, 0, 'the queue is empty once the store was resent');
    });

    it('interceptAcknowledgements(client) gets the PUBACK and PUBCOMP MQTT.js writes for incoming QoS 1 and 2 messages, and only those', TEST, async () => {
        const sub = await connect({});
        const pub = await connect({});
        const topic = uniqueTopic('internals-puback');
        await sub.subscribeAsync(topic, { qos: 2 });
        const seen: string[] = [];
        assert.ok(interceptAcknowledgements(sub, (packet, cb, send) => {
            seen.push(packet.cmd);
            send(packet, cb);
        }), moved('_sendPacket'));
        await pub.publishAsync(topic, 'x', { qos: 1 });
        await waitFor(() => seen.length > 0, 5000, 'the PUBACK').catch(() => undefined);
        await pub.publishAsync(topic, 'y', { qos: 2 });
        await waitFor(() => seen.length > 1, 5000, 'the PUBCOMP').catch(() => undefined);
        await sub.publishAsync(uniqueTopic('internals-other'), 'z', { qos: 2 });
        assert.deepEqual(seen, ['puback', 'pubcomp'], moved('_sendPacket'));
    });

    it('clearReconnectTimer(client) stops the reconnect timer MQTT.js armed at a close', TEST, async () => {
        const client = await connect({ reconnectPeriod: 50 });
        assert.equal(typeof privateMember(client, '_clearReconnect'), 'function', moved('_clearReconnect'));
        let reconnects = 0;
        client.on('reconnect', () => { reconnects++; });
        const closed = nextEvent(client, 'close');
        client.stream.destroy();
        await closed;
        clearReconnectTimer(client);
        await delay(400);
        assert.equal(reconnects, 0, moved('_clearReconnect: the reconnect timer (50 ms) still fired after it'));
        assert.equal(client.connected, false);
    });

    it('without clearReconnectTimer the same client does reconnect (the check above can fail)', TEST, async () => {
        const client = await connect({ reconnectPeriod: 50 });
        const reconnected = nextEvent(client, 'reconnect', 2000);
        const closed = nextEvent(client, 'close');
        client.stream.destroy();
        await closed;
        await reconnected;
    });

    it('reconnectNow(client) starts a reconnect attempt at once on a client that would not reconnect by itself', TEST, async () => {
        const client = await connect({ reconnectPeriod: 0 });
        assert.equal(typeof privateMember(client, '_reconnect'), 'function', moved('_reconnect'));
        const closed = nextEvent(client, 'close');
        client.stream.destroy();
        await closed;
        await delay(100);
        assert.equal(client.connected, false, 'reconnectPeriod 0: MQTT.js does not reconnect by itself');

        let reconnectEmitted = false;
        client.once('reconnect', () => { reconnectEmitted = true; });
        const connected = nextEvent(client, 'connect');
        reconnectNow(client);
        assert.equal(reconnectEmitted, true, moved('_reconnect: no reconnect attempt started'));
        await connected;
        assert.equal(client.connected, true);
    });

    /** The port of the server a client of `servers` [broker, a second broker] reconnects to after a drop, with or without restartServerRotation. */
    async function portAfterDrop(restart: boolean): Promise<{ port: number | undefined; first: number; second: number }> {
        const second = await startAedes();
        try {
            const client = await connect({ reconnectPeriod: 50, servers: [{ host: broker.host, port: broker.port }, { host: second.host, port: second.port }] });
            assert.equal(client.options.port, broker.port, 'the first attempt goes to servers[0]');
            const closed = nextEvent(client, 'close');
            const reconnected = nextEvent(client, 'connect');
            client.stream.destroy();
            await closed;
            if (restart) restartServerRotation(client);
            await reconnected;
            const port = client.options.port;
            await client.endAsync(true);
            return { port, first: broker.port, second: second.port };
        } finally {
            await second.stop();
        }
    }

    it('restartServerRotation(client) sends the next attempt to the first of the servers', TEST, async () => {
        const { port, first } = await portAfterDrop(true);
        assert.equal(port, first, moved('_reconnectCount (the index of the next server)'));
    });

    it('without restartServerRotation the client moves on to the next server (the check above can fail)', TEST, async () => {
        const { port, second } = await portAfterDrop(false);
        assert.equal(port, second);
    });

    /** Whether a client of a silent server (connectTimeout 60 s) gives up on its CONNACK within 2 s, with or without rearmConnackTimeout(200). */
    async function connackGivenUp(rearm: boolean): Promise<boolean> {
        const silent = await silentServer();
        const client = clients.create(silent.url, { reconnectPeriod: 0, connectTimeout: 60_000 });
        created.push(client);
        try {
            const gaveUp = new Promise<boolean>((resolve) => client.once('error', (err) => resolve(err.message === 'connack timeout')));
            if (rearm) assert.ok(rearmConnackTimeout(client, 200), moved('connackTimer, _onConnackTimeout'));
            return await Promise.race([gaveUp, delay(2000).then(() => false)]);
        } finally {
            client.end(true);
            await silent.stop();
        }
    }

    it('rearmConnackTimeout(client, ms) replaces the wait for the CONNACK of the current attempt', TEST, async () => {
        assert.equal(await connackGivenUp(true), true, moved('connackTimer, _onConnackTimeout: the attempt did not end after 200 ms'));
    });

    it('without rearmConnackTimeout the attempt waits its connectTimeout (the check above can fail)', TEST, async () => {
        assert.equal(await connackGivenUp(false), false);
    });
});
