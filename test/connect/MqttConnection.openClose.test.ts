// MqttConnection.open() and close(): concurrent calls, failing opens, close() while work is in flight, a process that exits by itself.
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { before, describe, it } from 'node:test';

import { ConnectionException, Descriptor, InvalidStateException, References } from 'pip-services3-commons-nodex';
import { CredentialParams, type ICredentialStore } from 'pip-services3-components-nodex';

import { MqttErrorCode } from '../../src';
import { type AedesTestBroker, delay, refusedPort, uniqueTopic, waitFor } from '../helpers/brokers';
import { newConnection, RecordingListener, testReferences } from '../helpers/components';
import { fixture, suiteFixture } from '../helpers/fixture';
import { PACKAGE_SRC, runScript } from '../helpers/process';

const SRC = JSON.stringify(PACKAGE_SRC);

/** A TCP server that counts connection attempts and drops each at once. */
async function droppingServer(): Promise<{ port: number; attempts: () => number; stop: () => Promise<void> }> {
    let attempts = 0;
    const sockets = new Set<Socket>();
    const server: Server = createServer((socket) => {
        attempts++;
        sockets.add(socket);
        socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    return {
        port,
        attempts: () => attempts,
        stop: () => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }),
    };
}

/** A credential store that answers only when told to. */
class SlowCredentialStore implements ICredentialStore {
    public release!: () => void;
    private readonly _released = new Promise<void>((resolve) => { this.release = resolve; });
    public store(): Promise<void> { return Promise.resolve(); }
    public async lookup(): Promise<CredentialParams> {
        await this._released;
        return CredentialParams.fromTuples('username', 'u', 'password', 'p');
    }
}

describe('MqttConnection open and close', { timeout: 60000 }, () => {
    const suite = suiteFixture();
    let broker: AedesTestBroker;
    before(async () => { broker = await suite.aedes(); });

    it('is idempotent and safe when opened and closed concurrently', async (t) => {
        const f = fixture(t);
        const before = broker.broker.connectionCount();
        const connection = f.connection(broker.url);
        await Promise.all([connection.open(null), connection.open(null), connection.open(null)]);
        const client = connection.getConnection();
        await connection.open(null);
        assert.equal(connection.getConnection(), client);
        assert.equal(broker.broker.connectionCount() - before, 1, 'one broker connection');
        assert.equal(connection.isOpen(), true);
        await Promise.all([connection.close(null), connection.close(null)]);
        await connection.close(null);
        assert.equal(connection.isOpen(), false);
        assert.equal(connection.getConnection(), null);
        assert.equal(client!.connected, false);
        await waitFor(() => broker.broker.clientCount() === 0, 5000, 'the broker to see the client leave');
        // And it opens again after a close.
        await connection.open(null);
        assert.equal(connection.isOpen(), true);
        await connection.close(null);
    });

    it('fails at once on a refused port with retry_connect false, and leaves nothing behind', async (t) => {
        const f = fixture(t);
        const server = await droppingServer();
        f.defer(() => server.stop());
        const connection = f.connection(`mqtt://127.0.0.1:${server.port}`, 'options.retry_connect', false, 'options.reconnect_timeout', 50);
        const started = Date.now();
        await assert.rejects(connection.open(null), (err: ConnectionException) => {
            assert.ok(err instanceof ConnectionException);
            assert.equal(err.code, MqttErrorCode.ConnectFailed);
            return true;
        });
        assert.ok(Date.now() - started < 10000);
        const attempts = server.attempts();
        await delay(300);
        assert.equal(server.attempts(), attempts, 'no reconnect after a failed open');
        assert.equal(connection.isOpen(), false);
        assert.equal(connection.getConnection(), null);
    });

    it('retries within connect_timeout, then rejects once and stops trying', async (t) => {
        const f = fixture(t);
        const server = await droppingServer();
        f.defer(() => server.stop());
        const { references, logger } = testReferences();
        const connection = f.connection(`mqtt://127.0.0.1:${server.port}`, 'options.connect_timeout', 800, 'options.reconnect_timeout', 100);
        connection.setReferences(references);
        const started = Date.now();
        await assert.rejects(connection.open(null), { code: MqttErrorCode.ConnectFailed });
        const elapsed = Date.now() - started;
        assert.ok(elapsed >= 700, `waited ${elapsed} ms, less than connect_timeout`);
        assert.ok(elapsed < 5000, `waited ${elapsed} ms`);
        assert.ok(server.attempts() >= 2, `retried (${server.attempts()} attempts)`);
        const attempts = server.attempts();
        await delay(400);
        assert.equal(server.attempts(), attempts, 'no reconnect loop after the rejection');
        assert.match(logger.text(), /Failed to connect to MQTT broker at mqtt:\/\/127\.0\.0\.1/);
    });

    it('rejects with MQTT_CONNECT_FAILED when nothing listens', async () => {
        const port = await refusedPort();
        const connection = newConnection(`mqtt://127.0.0.1:${port}`, 'options.connect_timeout', 500, 'options.reconnect_timeout', 100);
        await assert.rejects(connection.open(null), (err: ConnectionException) => {
            assert.equal(err.code, MqttErrorCode.ConnectFailed);
            assert.match(err.message, /ECONNREFUSED/);
            return true;
        });
    });

    it('rejects with MQTT_CONNECT_TIMEOUT when the broker is silent', async (t) => {
        const f = fixture(t);
        const silent = await f.silent();
        for (const retry of [true, false]) {
            const connection = f.connection(silent.url, 'options.connect_timeout', 400, 'options.retry_connect', retry);
            const started = Date.now();
            await assert.rejects(connection.open(null), { code: MqttErrorCode.ConnectTimeout });
            assert.ok(Date.now() - started < 5000);
            assert.equal(connection.isOpen(), false);
        }
    });

    it('rejects a pending open with MQTT_CLOSED when closed meanwhile', async (t) => {
        const f = fixture(t);
        const silent = await f.silent();
        const connection = f.connection(silent.url, 'options.connect_timeout', 20000);
        const opening = connection.open(null);
        await delay(50);
        const started = Date.now();
        await connection.close(null);
        await assert.rejects(opening, (err: InvalidStateException) => {
            assert.ok(err instanceof InvalidStateException);
            assert.equal(err.code, MqttErrorCode.Closed);
            return true;
        });
        assert.ok(Date.now() - started < 3000);
        assert.equal(connection.isOpen(), false);
    });

    it('rejects open with MQTT_CLOSED when closed while resolving, and never connects', async () => {
        const store = new SlowCredentialStore();
        const connection = newConnection(broker.url, 'credential.store_key', 'k');
        connection.setReferences(References.fromTuples(new Descriptor('pip-services', 'credential-store', 'slow', 'default', '1.0'), store));
        const connections = broker.broker.connectionCount();
        const opening = connection.open(null);
        const closing = connection.close(null);
        store.release();
        await assert.rejects(opening, { code: MqttErrorCode.Closed });
        await closing;
        assert.equal(connection.isOpen(), false);
        assert.equal(broker.broker.connectionCount(), connections);
    });

    it('answers the queue-connection methods: no queue names, create and delete do nothing', async () => {
        const connection = newConnection(broker.url);
        assert.deepEqual(await connection.readQueueNames(), []);
        await connection.createQueue('q');
        await connection.deleteQueue('q');
        assert.deepEqual(await connection.readQueueNames(), []);
    });

    it('lets a process that closed its connections exit by itself', async () => {
        const script = `
            const { MqttConnection } = require(${JSON.stringify(PACKAGE_SRC)});
            const { ConfigParams } = require('pip-services3-commons-nodex');
            (async () => {
                const c = new MqttConnection();
                c.configure(ConfigParams.fromTuples('connection.uri', ${JSON.stringify(broker.url)}, 'options.keepalive_timeout', 1000));
                await c.open(null);
                await c.subscribe('exit/test', { qos: 1 }, { onMessage: () => undefined });
                await c.publish('exit/test', 'x', { qos: 1 });
                await c.close(null);
                const failed = new MqttConnection();
                failed.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://127.0.0.1:1', 'options.connect_timeout', 300));
                await failed.open(null).catch(() => console.log('open failed as expected'));
                console.log('closed');
            })();`;
        const { code, output } = await runScript(script, 15000);
        assert.equal(code, 0, `the process should exit by itself; output: ${output}`);
        assert.match(output, /open failed as expected\nclosed/);
    });
});

describe('MqttConnection close() with work in flight', { timeout: 60000 }, () => {
    it('leaves no timer behind when closed during a connect attempt or a reconnect wait', async (t) => {
        const f = fixture(t);
        const silent = await f.silent();
        const dead = await refusedPort();
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
    });

    for (const retry of [true, false]) {
        it(`rejects what is pending with MQTT_CLOSED when closed (retry_connect ${retry})`, async (t) => {
            const f = fixture(t);
            const broker = await f.aedes({ authorizePublish: (_id, topic) => (topic.startsWith('held/') ? 'hold' : true) });
            const connection = f.connection(broker.url, 'options.retry_connect', retry);
            await connection.open(null);
            const outcome = connection.publish('held/x', 'x', { qos: 1 }).then(() => null, (err: unknown) => err);
            await new Promise((resolve) => setTimeout(resolve, 100));
            await connection.close(null);
            const err = await outcome;
            assert.ok(err instanceof InvalidStateException, String(err));
            assert.equal(err.code, MqttErrorCode.Closed);
        });
    }

    it('closes cleanly while subscribes and unsubscribes are on their way to the broker', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        for (let round = 0; round < 5; round++) {
            const connection = f.connection(broker.url);
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
    });

    it('closes promptly during a long reconnect wait', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url, 'options.reconnect_timeout', 20000);
        await connection.open(null);
        await broker.stop();
        await waitFor(() => connection.getStatus().state === 'reconnecting', 5000, 'the loss');
        const started = Date.now();
        await connection.close(null);
        // The wait is 15 to 20 s; closing must not sit through it.
        assert.ok(Date.now() - started < 5000, `close() took ${Date.now() - started} ms`);
        assert.equal(connection.getStatus().state, 'closed');
    });
});
