import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import {
    freePort,
    mosquittoSkip,
    refusedPort,
    silentServer,
    startAedes,
    startMosquitto,
    uniqueTopic,
    waitFor,
    type AedesTestBroker,
    type MosquittoBroker,
    type MosquittoOptions,
} from './brokers';
import { TestClients } from './clients';

const TEST = { timeout: 20_000 };

const clients = new TestClients();

/**
 * Resolves on the client's next `event` (its arguments), rejects on 'error' or after `timeoutMs`.
 * (`events.once` does not accept MqttClient: its typed emitter is not a Node EventEmitter type.)
 */
function nextEvent(client: MqttClient, event: 'connect', timeoutMs?: number): Promise<[IConnackPacket]>;
function nextEvent(client: MqttClient, event: 'message', timeoutMs?: number): Promise<[string, Buffer]>;
function nextEvent(client: MqttClient, event: 'close', timeoutMs?: number): Promise<[]>;
function nextEvent(client: MqttClient, event: 'connect' | 'message' | 'close', timeoutMs = 5000): Promise<unknown[]> {
    return new Promise((resolve, reject) => {
        const cleanup = (): void => {
            clearTimeout(timer);
            client.off(event, onEvent);
            client.off('error', onError);
        };
        const onEvent = (...args: unknown[]): void => {
            cleanup();
            resolve(args);
        };
        const onError = (err: Error): void => {
            cleanup();
            reject(err);
        };
        const timer = setTimeout(() => {
            cleanup();
            reject(new Error(`no '${event}' event within ${timeoutMs} ms`));
        }, timeoutMs);
        client.on(event, onEvent);
        client.on('error', onError);
    });
}

/** Resolves with the error a refused connection attempt produces. */
async function connectError(url: string, options: IClientOptions = {}): Promise<Error & { code?: unknown }> {
    try {
        await clients.connect(url, options);
    } catch (err) {
        assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
        return err;
    }
    assert.fail(`connected to ${url} although a refusal was expected`);
}

async function roundTrip(url: string): Promise<void> {
    const topic = uniqueTopic('helpers');
    const subscriber = await clients.connect(url);
    const publisher = await clients.connect(url);
    const received = nextEvent(subscriber, 'message');
    await subscriber.subscribeAsync(topic, { qos: 1 });
    await publisher.publishAsync(topic, 'hello', { qos: 1 });
    const [receivedTopic, payload] = await received;
    assert.equal(receivedTopic, topic);
    assert.equal(payload.toString(), 'hello');
    await subscriber.endAsync();
    await publisher.endAsync();
}

/**
 * Connects with a persistent session (subscribing to `topic` when given) and returns whether the
 * broker still had the session. Aedes reports a session as present only when it has subscriptions.
 */
async function sessionPresent(url: string, clientId: string, topic?: string): Promise<boolean> {
    const client = clients.create(url, { clientId, clean: false });
    const [connack] = await nextEvent(client, 'connect');
    if (topic) {
        await client.subscribeAsync(topic, { qos: 1 });
    }
    await client.endAsync();
    return connack.sessionPresent;
}

describe('generic helpers', () => {
    it('uniqueTopic returns a new topic under the prefix on every call', () => {
        const topics = new Set(Array.from({ length: 100 }, () => uniqueTopic('p')));
        assert.equal(topics.size, 100);
        for (const topic of topics) {
            assert.match(topic, /^p\/[0-9a-f]+-\d+$/);
        }
        assert.match(uniqueTopic(), /^test\//);
    });

    it('waitFor resolves once the condition holds and rejects naming what it waited for', async () => {
        let calls = 0;
        await waitFor(() => ++calls >= 3, 1000, 'three calls');
        assert.equal(calls, 3);
        await waitFor(() => Promise.resolve(true));
        await assert.rejects(waitFor(() => false, 50, 'the impossible'), /Timed out after 50 ms waiting for the impossible/);
    });

    it('freePort and refusedPort give ports nothing listens on', TEST, async () => {
        const port = await freePort();
        assert.ok(port > 0 && port !== 1883);
        const err = await connectError(`mqtt://127.0.0.1:${await refusedPort()}`);
        assert.equal(err.code, 'ECONNREFUSED');
    });

    it('silentServer accepts TCP but never answers, so CONNECT times out', TEST, async () => {
        const server = await silentServer();
        try {
            const started = Date.now();
            const err = await connectError(server.url, { connectTimeout: 300 });
            assert.equal(err.message, 'connack timeout');
            assert.ok(Date.now() - started >= 250, 'gave up before connectTimeout');
        } finally {
            await server.stop();
            await server.stop();
        }
        assert.equal((await connectError(server.url)).code, 'ECONNREFUSED');
    });
});

describe('startAedes', () => {
    const brokers: AedesTestBroker[] = [];
    after(async () => {
        await clients.endAll();
        await Promise.all(brokers.map((broker) => broker.stop()));
    });

    it('starts on a free port, routes messages and counts clients', TEST, async () => {
        const broker = await startAedes();
        brokers.push(broker);
        assert.equal(broker.kind, 'aedes');
        assert.equal(broker.host, '127.0.0.1');
        assert.notEqual(broker.port, 0);
        assert.equal(broker.url, `mqtt://127.0.0.1:${broker.port}`);
        assert.equal(broker.broker.clientCount(), 0);

        await roundTrip(broker.url);
        assert.equal(broker.broker.connectionCount(), 2);
        await waitFor(() => broker.broker.clientCount() === 0, 5000, 'both clients to be gone');

        const first = await clients.connect(broker.url);
        await clients.connect(broker.url);
        assert.equal(broker.broker.clientCount(), 2);
        assert.equal(broker.broker.connectionCount(), 4);
        await first.endAsync();
        await waitFor(() => broker.broker.clientCount() === 1, 5000, 'one client left');
    });

    it('stop() disconnects clients and refuses connections; restart() listens on the same port', TEST, async () => {
        const broker = await startAedes();
        brokers.push(broker);
        const clientId = `aedes-${randomBytes(4).toString('hex')}`;
        const topic = uniqueTopic('session');
        assert.equal(await sessionPresent(broker.url, clientId, topic), false);
        assert.equal(await sessionPresent(broker.url, clientId), true);

        const client = await clients.connect(broker.url);
        const closed = nextEvent(client, 'close');
        await Promise.all([broker.stop(), broker.stop()]);
        await closed;
        await broker.stop();
        assert.equal(broker.broker.clientCount(), 0);
        assert.equal((await connectError(broker.url)).code, 'ECONNREFUSED');

        const port = broker.port;
        await broker.restart();
        assert.equal(broker.port, port);
        assert.equal(broker.broker.port, port);
        // A fresh Aedes: the persistent session is gone, as after a real broker restart.
        assert.equal(await sessionPresent(broker.url, clientId), false);
        assert.equal(broker.broker.connectionCount(), 4, 'connectionCount is not reset by restart()');
        await roundTrip(broker.url);

        // restart() while clients are connected drops them and comes back on the same port.
        const survivor = await clients.connect(broker.url);
        const dropped = nextEvent(survivor, 'close');
        await broker.restart();
        await dropped;
        await roundTrip(broker.url);
    });

    it('authenticate rejects bad credentials with CONNACK return code 4', TEST, async () => {
        const seen: string[] = [];
        const broker = await startAedes({
            authenticate: (clientId, username, password) => {
                seen.push(clientId);
                return username === 'alice' && password?.toString() === 'secret';
            },
        });
        brokers.push(broker);

        await clients.connect(broker.url, { clientId: 'good', username: 'alice', password: 'secret' });
        const bad = await connectError(broker.url, { clientId: 'bad', username: 'alice', password: 'wrong' });
        assert.equal(bad.code, 4);
        const anonymous = await connectError(broker.url);
        assert.equal(anonymous.code, 4);
        assert.deepEqual(seen.slice(0, 2), ['good', 'bad']);
        assert.equal(broker.broker.connectionCount(), 1);
    });
});

describe('startMosquitto', { skip: mosquittoSkip() }, () => {
    const brokers: MosquittoBroker[] = [];
    after(async () => {
        await clients.endAll();
        await Promise.all(brokers.map((broker) => broker.cleanup()));
    });

    async function start(options?: MosquittoOptions): Promise<MosquittoBroker> {
        const broker = await startMosquitto(options);
        brokers.push(broker);
        return broker;
    }

    it('starts a private broker on a free port and routes messages', TEST, async () => {
        const broker = await start();
        assert.equal(broker.kind, 'mosquitto');
        assert.notEqual(broker.port, 1883);
        assert.equal(broker.url, `mqtt://127.0.0.1:${broker.port}`);
        await roundTrip(broker.url);
        const config = readFileSync(broker.configFile, 'utf8');
        assert.match(config, /^max_queued_messages 100000$/m);
        assert.match(config, /^allow_anonymous true$/m);
    });

    it('with passwords: good credentials connect, bad and anonymous ones get return code 5', TEST, async () => {
        const broker = await start({ passwords: { alice: 'secret', bob: 'builder' } });
        await clients.connect(broker.url, { username: 'alice', password: 'secret' });
        await clients.connect(broker.url, { username: 'bob', password: 'builder' });
        // mosquitto answers a wrong password with 5 (not authorized), not 4 (bad user name or password).
        assert.equal((await connectError(broker.url, { username: 'alice', password: 'wrong' })).code, 5);
        assert.equal((await connectError(broker.url, { username: 'mallory', password: 'x' })).code, 5);
        assert.equal((await connectError(broker.url)).code, 5);
    });

    it('kill(SIGKILL) refuses connections; start() comes back on the same port', TEST, async () => {
        const broker = await start();
        const client = await clients.connect(broker.url);
        const closed = nextEvent(client, 'close');
        await broker.kill('SIGKILL');
        await closed;
        assert.equal((await connectError(broker.url)).code, 'ECONNREFUSED');
        const port = broker.port;
        await broker.start();
        assert.equal(broker.port, port);
        await roundTrip(broker.url);

        await broker.stop();
        await broker.stop();
        assert.equal((await connectError(broker.url)).code, 'ECONNREFUSED');
        await broker.restart();
        assert.equal(broker.port, port);
        await roundTrip(broker.url);
    });

    it('persistence: a message queued for an offline session survives stop + start', TEST, async () => {
        const broker = await start({ persistence: true });
        const topic = uniqueTopic('persist');
        const clientId = `persist-${randomBytes(4).toString('hex')}`;

        const subscriber = await clients.connect(broker.url, { clientId, clean: false });
        await subscriber.subscribeAsync(topic, { qos: 1 });
        await subscriber.endAsync();
        const publisher = await clients.connect(broker.url);
        await publisher.publishAsync(topic, 'sent while offline', { qos: 1 });
        await publisher.endAsync();

        await broker.stop();
        await broker.start();

        const resumed = clients.create(broker.url, { clientId, clean: false });
        const message = nextEvent(resumed, 'message');
        const [connack] = await nextEvent(resumed, 'connect');
        assert.equal(connack.sessionPresent, true);
        const [receivedTopic, payload] = await message;
        assert.equal(receivedTopic, topic);
        assert.equal(payload.toString(), 'sent while offline');
    });

    it('without persistence a restart loses sessions (so the test above can fail)', TEST, async () => {
        const broker = await start();
        const clientId = `volatile-${randomBytes(4).toString('hex')}`;
        assert.equal(await sessionPresent(broker.url, clientId), false);
        assert.equal(await sessionPresent(broker.url, clientId), true);
        await broker.restart();
        assert.equal(await sessionPresent(broker.url, clientId), false);
    });
});
