import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { ConfigException, ConfigParams, ConnectionException, InvalidStateException } from 'pip-services3-commons-nodex';

import { MqttConnection, MqttErrorCode } from '../../src';
import { type AedesTestBroker, refusedPort, silentServer, startAedes, waitFor } from '../helpers/brokers';
import { newConnection, testReferences } from '../helpers/components';
import { PACKAGE_SRC, runScript } from '../helpers/process';

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

function delay(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

describe('MqttConnection open and close', { timeout: 60000 }, () => {
    let broker: AedesTestBroker;
    before(async () => { broker = await startAedes(); });
    after(async () => { await broker.stop(); });

    it('uses the documented defaults', async () => {
        assert.deepEqual(MqttConnection.defaultConfig.getAsObject(), {
            'options.retry_connect': 'true',
            'options.connect_timeout': '30000',
            'options.reconnect_timeout': '1000',
            'options.max_reconnect_timeout': '30000',
            'options.keepalive_timeout': '60000',
            'options.clean_session': 'true',
            'options.max_offline_messages': '10000',
            'options.protocol_version': '4',
            'options.broker_assigns_client_id': 'false',
            'options.topic_alias_maximum': '0',
            'options.ssl_reject_unauthorized': 'true',
            'options.max_qos': '2',
            'options.will_qos': '0',
            'options.will_retain': 'false',
        });
        const connection = newConnection(broker.url);
        await connection.open(null);
        try {
            const options = connection.getConnection()!.options;
            assert.equal(options.keepalive, 60);
            assert.equal(options.connectTimeout, 30000);
            assertFirstWait(options.reconnectPeriod, 1000);
            assert.equal(options.clean, true);
            assert.equal(options.protocolVersion, 4);
            assert.match(options.clientId ?? '', /^[A-Za-z0-9]{1,11}[0-9a-f]{12}$/, 'at most 23 characters from [0-9a-zA-Z]');
        } finally {
            await connection.close(null);
        }
    });

    it('reads every option key and client_id', async () => {
        const connection = newConnection(broker.url,
            'client_id', 'my-client',
            'options.retry_connect', false,
            'options.connect_timeout', 5000,
            'options.reconnect_timeout', 250,
            'options.keepalive_timeout', 1500);
        await connection.open(null);
        try {
            const options = connection.getConnection()!.options;
            assert.equal(options.clientId, 'my-client');
            assert.equal(options.connectTimeout, 5000);
            assert.equal(options.reconnectPeriod, 0, 'retry_connect false turns MQTT.js reconnects off');
            assert.equal(options.keepalive, 2, 'keepalive is rounded up to whole seconds');
        } finally {
            await connection.close(null);
        }
        const withRetry = newConnection(broker.url, 'options.reconnect_timeout', 250, 'options.keepalive_timeout', 0,
            'options.clean_session', false, 'client_id', 'persistent-one');
        await withRetry.open(null);
        assertFirstWait(withRetry.getConnection()!.options.reconnectPeriod, 250);
        assert.equal(withRetry.getConnection()!.options.keepalive, 0);
        assert.equal(withRetry.getConnection()!.options.clean, false);
        await withRetry.close(null);
    });

    it('reads client_id and options from the uri query, and rejects a conflicting key', async () => {
        const connection = newConnection(`${broker.url}?client_id=from-uri&connect_timeout=4000`);
        await connection.open(null);
        assert.equal(connection.getConnection()!.options.clientId, 'from-uri');
        assert.equal(connection.getConnection()!.options.connectTimeout, 4000);
        await connection.close(null);

        const conflicting = newConnection(`${broker.url}?connect_timeout=4000`, 'options.connect_timeout', 5000);
        await assert.rejects(conflicting.open(null), { code: MqttErrorCode.ConflictingConfig });
        assert.equal(conflicting.isOpen(), false);
    });

    it('gives two default connections different client ids, and both stay connected', async () => {
        const a = newConnection(broker.url);
        const b = newConnection(broker.url);
        await a.open(null);
        await b.open(null);
        try {
            assert.notEqual(a.getConnection()!.options.clientId, b.getConnection()!.options.clientId);
            await delay(200);
            assert.equal(a.getConnection()!.connected, true);
            assert.equal(b.getConnection()!.connected, true);
        } finally {
            await a.close(null);
            await b.close(null);
        }
    });

    it('rejects bad options at open with ConfigException naming the key', async () => {
        const cases: [string, unknown, string][] = [
            ['options.connect_timeout', 'soon', MqttErrorCode.BadOption],
            ['options.connect_timeout', 0, MqttErrorCode.BadOption],
            ['options.reconnect_timeout', -5, MqttErrorCode.BadOption],
            ['options.keepalive_timeout', 70000000, MqttErrorCode.BadOption],
            ['options.retry_connect', 'maybe', MqttErrorCode.BadOption],
            ['options.clean_session', 'sometimes', MqttErrorCode.BadOption],
            ['options.max_offline_messages', -1, MqttErrorCode.BadOption],
            ['options.max_offline_messages', 'many', MqttErrorCode.BadOption],
            ['options.max_reconnect_timeout', 0, MqttErrorCode.BadOption],
            // Below reconnect_timeout (default 1000 ms): backoff could never reach the first wait.
            ['options.max_reconnect_timeout', 500, MqttErrorCode.BadOption],
            ['client_id', 'x'.repeat(70000), MqttErrorCode.BadOption],
            ['client_id', 'a\u0000b', MqttErrorCode.BadOption],
        ];
        for (const [key, value, code] of cases) {
            const connection = newConnection(broker.url, key, value);
            await assert.rejects(connection.open(null), (err: ConfigException) => {
                assert.ok(err instanceof ConfigException);
                assert.equal(err.code, code);
                assert.equal(err.details.getAsNullableString('key'), key);
                return true;
            }, `${key}=${String(value).substring(0, 20)}`);
            assert.equal(connection.isOpen(), false);
        }
        const none = new MqttConnection();
        none.configure(new ConfigParams());
        await assert.rejects(none.open(null), { code: MqttErrorCode.NoConnection });
        const unconfigured = new MqttConnection();
        await assert.rejects(unconfigured.open(null), { code: MqttErrorCode.NoConnection });
    });

    it('is idempotent and safe when opened and closed concurrently', async () => {
        const before = broker.broker.connectionCount();
        const connection = newConnection(broker.url);
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

    it('fails at once on a refused port with retry_connect false, and leaves nothing behind', async () => {
        const server = await droppingServer();
        try {
            const connection = newConnection(`mqtt://127.0.0.1:${server.port}`, 'options.retry_connect', false, 'options.reconnect_timeout', 50);
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
        } finally {
            await server.stop();
        }
    });

    it('retries within connect_timeout, then rejects once and stops trying', async () => {
        const server = await droppingServer();
        try {
            const { references, logger } = testReferences();
            const connection = newConnection(`mqtt://127.0.0.1:${server.port}`, 'options.connect_timeout', 800, 'options.reconnect_timeout', 100);
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
        } finally {
            await server.stop();
        }
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

    it('rejects with MQTT_CONNECT_TIMEOUT when the broker is silent', async () => {
        const silent = await silentServer();
        try {
            for (const retry of [true, false]) {
                const connection = newConnection(silent.url, 'options.connect_timeout', 400, 'options.retry_connect', retry);
                const started = Date.now();
                await assert.rejects(connection.open(null), { code: MqttErrorCode.ConnectTimeout });
                assert.ok(Date.now() - started < 5000);
                assert.equal(connection.isOpen(), false);
            }
        } finally {
            await silent.stop();
        }
    });

    it('rejects refused credentials at once with the reason code, without retrying', async () => {
        const guarded = await startAedes({ authenticate: (_id, user, password) => user === 'u' && password?.toString() === 'right' });
        try {
            const { references, logger } = testReferences();
            const connection = newConnection(guarded.url, 'credential.username', 'u', 'credential.password', 'wrong-secret-1',
                'options.reconnect_timeout', 50);
            connection.setReferences(references);
            const started = Date.now();
            await assert.rejects(connection.open(null), (err: ConnectionException) => {
                assert.equal(err.code, MqttErrorCode.ConnectRefused);
                assert.equal(err.details.getAsNullableInteger('reason_code'), 4);
                assert.ok(!err.message.includes('wrong-secret-1'));
                return true;
            });
            assert.ok(Date.now() - started < 5000, 'does not wait for connect_timeout');
            const count = guarded.broker.connectionCount();
            await delay(300);
            assert.equal(guarded.broker.connectionCount(), count, 'no retry');
            assert.ok(!logger.text().includes('wrong-secret-1'), 'the password is never logged');

            const good = newConnection(guarded.url, 'credential.username', 'u', 'credential.password', 'right');
            good.setReferences(references);
            await good.open(null);
            await good.close(null);
            const viaUri = newConnection(`mqtt://u:right@127.0.0.1:${guarded.port}`);
            await viaUri.open(null);
            await viaUri.close(null);
            assert.ok(!logger.text().includes('right@'), 'no user info in logs');
        } finally {
            await guarded.stop();
        }
    });

    it('rejects a pending open with MQTT_CLOSED when closed meanwhile', async () => {
        const silent = await silentServer();
        try {
            const connection = newConnection(silent.url, 'options.connect_timeout', 20000);
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
        } finally {
            await silent.stop();
        }
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

/** The first reconnect wait is reconnect_timeout shortened by up to a quarter at random. */
function assertFirstWait(period: number | undefined, reconnectTimeout: number): void {
    assert.ok(period !== undefined && period >= reconnectTimeout * 0.75 && period <= reconnectTimeout,
        `first reconnect wait ${period} should be within 75..100% of ${reconnectTimeout}`);
}
