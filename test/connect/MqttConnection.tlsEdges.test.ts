// TLS, WebSocket, credential and secret edge cases, found in review: each test failed before its fix.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';

import { ConfigException, ConfigParams, type ConnectionException, Descriptor, type InvalidStateException, References } from 'pip-services3-commons-nodex';
import { CredentialParams, MemoryCredentialStore } from 'pip-services3-components-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { type MqttConnection, MqttConnectionResolver, MqttErrorCode, MqttMessageQueue, MqttMessageQueueFactory } from '../../src';
import { startAedes, uniqueTopic, waitFor } from '../helpers/brokers';
import { testCertificates } from '../helpers/certs';
import { newConnection, RecordingListener, testReferences } from '../helpers/components';

const certs = testCertificates();
const TRUST_CA = ['credential.ssl_ca_file', certs.ca.cert.path];
const STORE = new Descriptor('pip-services', 'credential-store', 'memory', 'default', '1.0');
const tls = { key: certs.server.key.pem, cert: certs.server.cert.pem };

async function roundTrip(connection: MqttConnection): Promise<void> {
    const topic = uniqueTopic('tls-edge');
    const listener = new RecordingListener();
    await connection.subscribe(topic, { qos: 1 }, listener);
    await connection.publish(topic, 'x', { qos: 1 });
    await waitFor(() => listener.received.length === 1, 5000, 'the message');
}

describe('MqttConnection TLS and WebSocket edge cases', { timeout: 60000 }, () => {
    for (const [transport, websocket] of [['mqtts', false], ['wss', true]] as const) {
        it(`reconnects over ${transport} after a broker restart`, async () => {
            const broker = await startAedes({ tls, websocket });
            const connection = newConnection(broker.url, ...TRUST_CA, 'options.reconnect_timeout', 100);
            try {
                await connection.open(null);
                await broker.restart();
                await waitFor(() => connection.getStatus().reconnects >= 1 && connection.isConnected(), 15000, 'the reconnect');
                await roundTrip(connection);
            } finally {
                await connection.close(null);
                await broker.stop();
            }
        });
    }

    it('checks a wss broker against options.ssl_server_name', async () => {
        const broker = await startAedes({ tls, websocket: true });
        try {
            const good = newConnection(broker.url, ...TRUST_CA, 'options.ssl_server_name', 'localhost');
            await good.open(null);
            await good.close(null);
            await assert.rejects(newConnection(broker.url, ...TRUST_CA, 'options.ssl_server_name', 'broker.example.com').open(null),
                (err: ConnectionException) => err.code === MqttErrorCode.TlsFailed);
        } finally {
            await broker.stop();
        }
    });

    it('presents a client certificate with ssl_reject_unauthorized false', async () => {
        const broker = await startAedes({ tls: { ...tls, ca: certs.ca.cert.pem, requestCert: true, rejectUnauthorized: true } });
        try {
            const c = newConnection(broker.url, 'options.ssl_reject_unauthorized', false,
                'credential.ssl_crt_file', certs.client.cert.path, 'credential.ssl_key_file', certs.client.key.path);
            await c.open(null);
            await roundTrip(c);
            await c.close(null);
        } finally {
            await broker.stop();
        }
    });

    it('fails at once with MQTT_TLS_FAILED when the broker wants a client certificate, with ssl_reject_unauthorized false', async () => {
        const broker = await startAedes({ tls: { ...tls, ca: certs.ca.cert.pem, requestCert: true, rejectUnauthorized: true } });
        try {
            const started = Date.now();
            await assert.rejects(newConnection(broker.url, 'options.ssl_reject_unauthorized', false, 'options.connect_timeout', 8000).open(null),
                (err: ConnectionException) => {
                    assert.equal(err.code, MqttErrorCode.TlsFailed, err.message);
                    return true;
                });
            assert.ok(Date.now() - started < 4000, `took ${Date.now() - started} ms`);
        } finally {
            await broker.stop();
        }
    });

    it('trusts a CA bundle of several certificates', async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'review-'));
        const bundle = path.join(dir, 'bundle.pem');
        fs.writeFileSync(bundle, certs.otherCa.cert.pem + '\n' + certs.ca.cert.pem);
        const broker = await startAedes({ tls });
        try {
            const c = newConnection(broker.url, 'credential.ssl_ca_file', bundle);
            await c.open(null);
            await c.close(null);
        } finally {
            await broker.stop();
        }
    });

    it('refuses a passphrase given for an unencrypted key', async () => {
        const c = newConnection('mqtts://127.0.0.1:1', ...TRUST_CA, 'credential.ssl_crt_file', certs.client.cert.path,
            'credential.ssl_key_file', certs.client.key.path, 'credential.ssl_passphrase', 'unused', 'options.connect_timeout', 500,
            'options.retry_connect', false);
        await assert.rejects(c.open(null), (err: ConfigException) => {
            assert.equal(err.code, MqttErrorCode.BadTls, err.message);
            return true;
        });
    });

    it('uses TLS settings on a queue\'s own connection', async () => {
        const broker = await startAedes({ tls });
        const queue = new MqttMessageQueue('jobs');
        queue.configure(ConfigParams.fromTuples('connection.uri', broker.url, ...TRUST_CA, 'options.autosubscribe', true));
        try {
            await queue.open(null);
            await queue.send(null, new MessageEnvelope(null as unknown as string, 't', 'hello'));
            const m = await queue.receive(null, 5000);
            assert.equal(m?.getMessageAsString(), 'hello');
        } finally {
            await queue.close(null);
            await broker.stop();
        }
    });

    it('open() rejects MQTT_CLOSED when close() comes while the TLS files load', async () => {
        const c = newConnection('mqtts://127.0.0.1:1', ...TRUST_CA);
        const opening = c.open(null);
        await new Promise((r) => setImmediate(r));
        await c.close(null);
        await assert.rejects(opening, (err: InvalidStateException) => err.code === MqttErrorCode.Closed);
        assert.equal(c.isOpen(), false);
    });

    it('open() rejects MQTT_CLOSED when close() comes while a bad TLS file loads', async () => {
        const c = newConnection('mqtts://127.0.0.1:1', 'credential.ssl_ca_file', certs.client.key.path);
        const opening = c.open(null);
        await new Promise((r) => setImmediate(r));
        await c.close(null);
        await assert.rejects(opening, (err: InvalidStateException) => {
            assert.equal(err.code, MqttErrorCode.Closed, err.message);
            return true;
        });
    });
});

describe('MqttConnection TLS after open()', { timeout: 60000 }, () => {
    it('reports an untrusted certificate on a reconnect, and reconnects once it is trusted again', async () => {
        const first = await startAedes({ tls });
        const port = first.port;
        const { references, logger } = testReferences();
        const connection = newConnection(first.url, ...TRUST_CA, 'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 200);
        connection.setReferences(references);
        let second: Awaited<ReturnType<typeof startAedes>> | null = null;
        try {
            await connection.open(null);
            await first.stop();
            second = await startAedes({ port, tls: { key: certs.otherServer.key.pem, cert: certs.otherServer.cert.pem } });
            await waitFor(() => connection.getStatus().reconnectAttempts >= 3, 10000, 'attempts');
            assert.match(connection.getStatus().lastError ?? '', /verify/);
            assert.equal(logger.entries.filter((e) => e.error != null).length, 1, 'the TLS error logged once');
            await second.stop();
            second = await startAedes({ port, tls });
            await waitFor(() => connection.isConnected(), 10000, 'the reconnect');
        } finally {
            await connection.close(null);
            await second?.stop();
        }
    });

    it('fails at once with MQTT_TLS_FAILED when the peer does not speak TLS, also with ssl_reject_unauthorized false', async () => {
        // An HTTP server (a wrong port): the handshake fails with a TLS error (wrong version number).
        const server = net.createServer((socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        const port = (server.address() as net.AddressInfo).port;
        try {
            for (const reject of [true, false]) {
                const started = Date.now();
                const err = await newConnection(`mqtts://127.0.0.1:${port}`, 'options.ssl_reject_unauthorized', reject,
                    'options.connect_timeout', 5000).open(null).then(() => null, (e: ConnectionException) => e);
                assert.equal(err?.code, MqttErrorCode.TlsFailed, `ssl_reject_unauthorized ${reject}: ${err?.message}`);
                assert.ok(Date.now() - started < 3000, `ssl_reject_unauthorized ${reject}: took ${Date.now() - started} ms`);
            }
        } finally {
            server.close();
        }
    });

    it('refuses options.ssl_server_name on a connection that is neither mqtts nor wss, as it refuses TLS files', async () => {
        const broker = await startAedes();
        try {
            const connection = newConnection(broker.url, 'options.ssl_server_name', 'broker.example.com');
            const err = await connection.open(null).then(() => null, (e: ConfigException) => e);
            await connection.close(null);
            assert.equal(err?.code, MqttErrorCode.BadTls, `options.ssl_server_name was ignored on ${broker.url}`);
        } finally {
            await broker.stop();
        }
    });

    it('configure() twice: the second configuration\'s TLS settings are used', async () => {
        const broker = await startAedes({ tls });
        const connection = newConnection(broker.url, 'credential.ssl_ca_file', certs.otherCa.cert.path);
        connection.configure(ConfigParams.fromTuples('connection.uri', broker.url, ...TRUST_CA));
        try {
            await connection.open(null);
        } finally {
            await connection.close(null);
            await broker.stop();
        }
    });
});

describe('MqttConnection credentials and secrets edge cases', { timeout: 60000 }, () => {
    it('completes a credentials.0 store credential with the keys configured beside its store_key', async () => {
        const store = new MemoryCredentialStore();
        await store.store(null as unknown as string, 'mqtt', CredentialParams.fromTuples('password', 'pw'));
        const resolver = new MqttConnectionResolver();
        resolver.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://127.0.0.1:1883',
            'credentials.0.store_key', 'mqtt', 'credentials.0.username', 'svc'));
        resolver.setReferences(References.fromTuples(STORE, store));
        const resolved = await resolver.resolve(null);
        assert.equal(resolved.password, 'pw');
        assert.equal(resolved.username, 'svc');
    });

    it('never shows a uri password that holds an unencoded ? in an open() error or its details', async () => {
        // WHATWG URL ends the authority at ?, # or / when what precedes looks like host:port.
        const connection = newConnection('mqtt://svc:2024?Spr1ng@127.0.0.1:1883');
        const err = await connection.open(null).then(() => null, (e: unknown) => e);
        const shown = [String(err), JSON.stringify(err), inspect(err)].join('\n');
        assert.ok(!shown.includes('Spr1ng'), shown);
    });

    for (const uri of ['mqtt://svc:#Spr1ng@127.0.0.1:1883', 'mqtt://svc:12/Spr1ng@127.0.0.1:1883', 'mqtt://svc:2024?Spr1ng@127.0.0.1:1883']) {
        it(`never shows the password of ${uri} in toJSON or inspect`, () => {
            const connection = newConnection(uri);
            const shown = JSON.stringify(connection) + inspect(connection);
            assert.ok(!shown.includes('Spr1ng'), shown);
        });
    }

    it('does not take the user name for the host when the password holds an unencoded # or /', async () => {
        for (const uri of ['mqtt://svc:#Spr1ng@127.0.0.1:1883', 'mqtt://svc:12/Spr1ng@127.0.0.1:1883']) {
            const resolver = new MqttConnectionResolver();
            resolver.configure(ConfigParams.fromTuples('connection.uri', uri));
            const resolved = await resolver.resolve(null).catch((e: ConfigException) => e);
            if (resolved instanceof ConfigException) {
                assert.equal(resolved.code, MqttErrorCode.BadUri);
                continue;
            }
            assert.equal(resolved.servers[0].host, '127.0.0.1', `${uri} resolved to ${resolved.displayUri}`);
        }
    });

    it('MqttMessageQueueFactory shows no secret in JSON.stringify or util.inspect', () => {
        const factory = new MqttMessageQueueFactory();
        factory.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://svc:S3cret-uri@127.0.0.1:1883', 'credential.password', 'S3cret-pw'));
        const shown = JSON.stringify(factory) + inspect(factory, { depth: 10 });
        assert.ok(!shown.includes('S3cret'), shown);
    });
});
