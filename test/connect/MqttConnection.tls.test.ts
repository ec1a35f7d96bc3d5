// Connections over TLS and WebSocket: trust, host names, client certificates, handshake failures, reconnects.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { describe, it } from 'node:test';

import { ConfigParams, ConnectionException, Descriptor } from 'pip-services3-commons-nodex';
import { CredentialParams, MemoryCredentialStore } from 'pip-services3-components-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { MqttConnection, MqttErrorCode, MqttMessageQueue } from '../../src';
import { mosquittoSkip, refusedPort, uniqueTopic, waitFor } from '../helpers/brokers';
import { CLIENT_KEY_PASSPHRASE, testCertificates } from '../helpers/certs';
import { RecordingListener, testReferences } from '../helpers/components';
import { fixture } from '../helpers/fixture';
import { UNTRUSTED_SERVER } from '../helpers/transports';

const certs = testCertificates();
const TRUST_CA = ['credential.ssl_ca_file', certs.ca.cert.path];
const tls = { key: certs.server.key.pem, cert: certs.server.cert.pem };

/** A connection configured by the tuples alone (no connection.uri). */
function configured(...tuples: unknown[]): MqttConnection {
    const connection = new MqttConnection();
    connection.configure(ConfigParams.fromTuples(...tuples));
    return connection;
}

/** Opens, checks a QoS 1 round trip on the connection itself, and closes. */
async function roundTrip(connection: MqttConnection): Promise<void> {
    await connection.open(null);
    try {
        const topic = uniqueTopic('tls');
        const listener = new RecordingListener();
        await connection.subscribe(topic, { qos: 1 }, listener);
        await connection.publish(topic, 'secret stuff', { qos: 1 });
        await waitFor(() => listener.received.length === 1, 5000, 'the message');
        assert.equal(listener.received[0].data.toString(), 'secret stuff');
    } finally {
        await connection.close(null);
    }
}

/** A QoS 1 message to itself over an open connection. */
async function roundTripOpen(connection: MqttConnection): Promise<void> {
    const topic = uniqueTopic('tls-edge');
    const listener = new RecordingListener();
    await connection.subscribe(topic, { qos: 1 }, listener);
    await connection.publish(topic, 'x', { qos: 1 });
    await waitFor(() => listener.received.length === 1, 5000, 'the message');
}

/** Expects open() to fail at once (long before connect_timeout) with `MQTT_TLS_FAILED`. */
async function rejectsTls(connection: MqttConnection, tlsCode: RegExp): Promise<void> {
    const started = Date.now();
    await assert.rejects(connection.open(null), (err: ConnectionException) => {
        assert.ok(err instanceof ConnectionException, String(err));
        assert.equal(err.code, MqttErrorCode.TlsFailed, err.message);
        assert.match(err.details.getAsString('tls_code'), tlsCode);
        return true;
    });
    assert.ok(Date.now() - started < 15000, 'failed at the handshake, not at connect_timeout (30 s)');
    assert.equal(connection.isOpen(), false);
}

describe('MqttConnection TLS and WebSocket on the embedded broker', { timeout: 60000 }, () => {
    it('connects over mqtts to a server whose CA it trusts, and refuses one it does not trust', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ tls });
        assert.match(broker.url, /^mqtts:/);
        await roundTrip(f.connection(broker.url, ...TRUST_CA));
        // A host name the certificate names, and one it does not.
        await roundTrip(f.connection(broker.url.replace('127.0.0.1', 'localhost'), ...TRUST_CA));
        await rejectsTls(f.connection(broker.url, ...TRUST_CA, 'options.ssl_server_name', 'broker.example.com'),
            /^ERR_TLS_CERT_ALTNAME_INVALID$/);
        // Trusting another CA, or only Node's root certificates.
        await rejectsTls(f.connection(broker.url, 'credential.ssl_ca_file', certs.otherCa.cert.path), UNTRUSTED_SERVER);
        await rejectsTls(f.connection(broker.url), UNTRUSTED_SERVER);
        // Unless told not to check.
        await roundTrip(f.connection(broker.url, 'options.ssl_reject_unauthorized', false));
    });

    it('connects over ws on the default path /mqtt, and on a configured one', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ websocket: true });
        const custom = await f.aedes({ websocket: { path: '/brokers/mqtt' } });
        const bare = broker.url.replace(/\/mqtt$/, '');
        assert.match(bare, /^ws:\/\/127\.0\.0\.1:\d+$/);
        await roundTrip(f.connection(bare));
        const host = new URL(custom.url);
        const byKeys = configured('connection.protocol', 'ws', 'connection.host', host.hostname,
            'connection.port', host.port, 'connection.path', '/brokers/mqtt');
        await roundTrip(byKeys);
        // The default path is wrong for this broker: the upgrade is refused.
        await assert.rejects(f.connection(custom.url.replace(/\/brokers\/mqtt$/, ''), 'options.connect_timeout', 2000).open(null),
            { code: MqttErrorCode.ConnectFailed });
    });

    it('connects over wss with the CA file, and refuses an untrusted server', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ tls, websocket: true });
        assert.match(broker.url, /^wss:/);
        await roundTrip(f.connection(broker.url, ...TRUST_CA));
        await rejectsTls(f.connection(broker.url, 'credential.ssl_ca_file', certs.otherCa.cert.path), UNTRUSTED_SERVER);
    });

    it('checks a wss broker against options.ssl_server_name', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ tls, websocket: true });
        const good = f.connection(broker.url, ...TRUST_CA, 'options.ssl_server_name', 'localhost');
        await good.open(null);
        await good.close(null);
        await assert.rejects(f.connection(broker.url, ...TRUST_CA, 'options.ssl_server_name', 'broker.example.com').open(null),
            (err: ConnectionException) => err.code === MqttErrorCode.TlsFailed);
    });

    it('presents a client certificate, with its key encrypted, to a broker that requires one', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ tls: { ...tls, ca: certs.ca.cert.pem, requestCert: true, rejectUnauthorized: true } });
        await roundTrip(f.connection(broker.url, ...TRUST_CA,
            'credential.ssl_crt_file', certs.client.cert.path, 'credential.ssl_key_file', certs.client.key.path));
        await roundTrip(f.connection(broker.url, ...TRUST_CA,
            'credential.ssl_cert_file', certs.client.cert.path, 'credential.ssl_key_file', certs.client.keyEncrypted.path,
            'credential.ssl_passphrase', CLIENT_KEY_PASSPHRASE));
        await rejectsTls(f.connection(broker.url, ...TRUST_CA), /^ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED$/);
    });

    it('presents a client certificate with ssl_reject_unauthorized false', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ tls: { ...tls, ca: certs.ca.cert.pem, requestCert: true, rejectUnauthorized: true } });
        const c = f.connection(broker.url, 'options.ssl_reject_unauthorized', false,
            'credential.ssl_crt_file', certs.client.cert.path, 'credential.ssl_key_file', certs.client.key.path);
        await c.open(null);
        await roundTripOpen(c);
        await c.close(null);
    });

    it('fails at once with MQTT_TLS_FAILED when the broker wants a client certificate, with ssl_reject_unauthorized false', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ tls: { ...tls, ca: certs.ca.cert.pem, requestCert: true, rejectUnauthorized: true } });
        const started = Date.now();
        await assert.rejects(f.connection(broker.url, 'options.ssl_reject_unauthorized', false, 'options.connect_timeout', 8000).open(null),
            (err: ConnectionException) => {
                assert.equal(err.code, MqttErrorCode.TlsFailed, err.message);
                return true;
            });
        assert.ok(Date.now() - started < 4000, `took ${Date.now() - started} ms`);
    });

    it('takes the key passphrase from a credential store', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ tls: { ...tls, ca: certs.ca.cert.pem, requestCert: true, rejectUnauthorized: true } });
        const store = new MemoryCredentialStore();
        await store.store(null as unknown as string, 'mqtt-tls', CredentialParams.fromTuples('ssl_passphrase', CLIENT_KEY_PASSPHRASE));
        const { references, logger } = testReferences();
        references.put(new Descriptor('pip-services', 'credential-store', 'memory', 'default', '1.0'), store);
        const connection = f.connection(broker.url, ...TRUST_CA, 'credential.store_key', 'mqtt-tls',
            'credential.ssl_crt_file', certs.client.cert.path, 'credential.ssl_key_file', certs.client.keyEncrypted.path);
        connection.setReferences(references);
        await roundTrip(connection);
        assert.ok(!JSON.stringify(connection).includes(CLIENT_KEY_PASSPHRASE));
        assert.ok(!logger.text().includes(CLIENT_KEY_PASSPHRASE));
    });

    it('checks each failover server against its own host name', async (t) => {
        const f = fixture(t);
        // The certificate names 127.0.0.1 only. MQTT.js alone would check the second server
        // against "localhost", the host of the first attempt.
        const broker = await f.aedes({ tls: { key: certs.ipOnlyServer.key.pem, cert: certs.ipOnlyServer.cert.pem } });
        const dead = await refusedPort();
        const connection = configured(
            'connections.0.uri', `mqtts://localhost:${dead}`, 'connections.1.uri', broker.url,
            ...TRUST_CA, 'options.reconnect_timeout', 50, 'options.connect_timeout', 20000);
        await roundTrip(connection);
    });

    it('uses TLS settings on a queue\'s own connection', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ tls });
        const queue = f.closing(new MqttMessageQueue('jobs'));
        queue.configure(ConfigParams.fromTuples('connection.uri', broker.url, ...TRUST_CA, 'options.autosubscribe', true));
        await queue.open(null);
        await queue.send(null, new MessageEnvelope(null as unknown as string, 't', 'hello'));
        const m = await queue.receive(null, 5000);
        assert.equal(m?.getMessageAsString(), 'hello');
    });

    it('fails at once with MQTT_TLS_FAILED when the peer does not speak TLS, also with ssl_reject_unauthorized false', async (t) => {
        const f = fixture(t);
        // An HTTP server (a wrong port): the handshake fails with a TLS error (wrong version number).
        const server = net.createServer((socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        const port = (server.address() as net.AddressInfo).port;
        f.defer(() => server.close());
        for (const reject of [true, false]) {
            const started = Date.now();
            const err = await f.connection(`mqtts://127.0.0.1:${port}`, 'options.ssl_reject_unauthorized', reject,
                'options.connect_timeout', 5000).open(null).then(() => null, (e: ConnectionException) => e);
            assert.equal(err?.code, MqttErrorCode.TlsFailed, `ssl_reject_unauthorized ${reject}: ${err?.message}`);
            assert.ok(Date.now() - started < 3000, `ssl_reject_unauthorized ${reject}: took ${Date.now() - started} ms`);
        }
    });
});

describe('MqttConnection TLS across reconnects', { timeout: 60000 }, () => {
    for (const [transport, websocket] of [['mqtts', false], ['wss', true]] as const) {
        it(`reconnects over ${transport} after a broker restart`, async (t) => {
            const f = fixture(t);
            const broker = await f.aedes({ tls, websocket });
            const connection = f.connection(broker.url, ...TRUST_CA, 'options.reconnect_timeout', 100);
            await connection.open(null);
            await broker.restart();
            await waitFor(() => connection.getStatus().reconnects >= 1 && connection.isConnected(), 15000, 'the reconnect');
            await roundTripOpen(connection);
        });
    }

    it('reports an untrusted certificate on a reconnect, and reconnects once it is trusted again', async (t) => {
        const f = fixture(t);
        const first = await f.aedes({ tls });
        const port = first.port;
        const { references, logger } = testReferences();
        const connection = f.connection(first.url, ...TRUST_CA, 'options.reconnect_timeout', 100, 'options.max_reconnect_timeout', 200);
        connection.setReferences(references);
        await connection.open(null);
        await first.stop();
        const second = await f.aedes({ port, tls: { key: certs.otherServer.key.pem, cert: certs.otherServer.cert.pem } });
        await waitFor(() => connection.getStatus().reconnectAttempts >= 3, 10000, 'attempts');
        assert.match(connection.getStatus().lastError ?? '', /verify/);
        assert.equal(logger.entries.filter((e) => e.error != null).length, 1, 'the TLS error logged once');
        await second.stop();
        await f.aedes({ port, tls });
        await waitFor(() => connection.isConnected(), 10000, 'the reconnect');
    });
});

describe('MqttConnection TLS and WebSocket on Mosquitto', { skip: mosquittoSkip(), timeout: 60000 }, () => {
    it('connects over mqtts, ws and wss listeners of one broker, and messages cross them', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto({
            tls: { certfile: certs.server.cert.path, keyfile: certs.server.key.path },
            websockets: true,
            secureWebsockets: true,
        });
        const tlsConnection = f.connection(broker.tlsUrl!, ...TRUST_CA);
        const wsConnection = f.connection(broker.wsUrl!.replace(/\/mqtt$/, ''));
        const wssConnection = f.connection(broker.wssUrl!, ...TRUST_CA);
        await Promise.all([tlsConnection.open(null), wsConnection.open(null), wssConnection.open(null)]);
        const topic = uniqueTopic('cross');
        const listeners = [new RecordingListener(), new RecordingListener()];
        await wsConnection.subscribe(topic, { qos: 1 }, listeners[0]);
        await wssConnection.subscribe(topic, { qos: 1 }, listeners[1]);
        await tlsConnection.publish(topic, 'to all listeners', { qos: 1 });
        await waitFor(() => listeners.every((l) => l.received.length === 1), 5000, 'the message on ws and wss');
        await rejectsTls(f.connection(broker.tlsUrl!, 'credential.ssl_ca_file', certs.otherCa.cert.path), UNTRUSTED_SERVER);
    });

    it('authenticates with a client certificate, and is refused without one', async (t) => {
        const f = fixture(t);
        const broker = await f.mosquitto({
            tls: { certfile: certs.server.cert.path, keyfile: certs.server.key.path, cafile: certs.ca.cert.path, requireCertificate: true },
        });
        await roundTrip(f.connection(broker.tlsUrl!, ...TRUST_CA,
            'credential.ssl_crt_file', certs.client.cert.path, 'credential.ssl_key_file', certs.client.keyEncrypted.path,
            'credential.ssl_passphrase', CLIENT_KEY_PASSPHRASE));
        await rejectsTls(f.connection(broker.tlsUrl!, ...TRUST_CA), /^ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED$/);
        await rejectsTls(f.connection(broker.tlsUrl!, ...TRUST_CA,
            'credential.ssl_crt_file', certs.otherClient.cert.path, 'credential.ssl_key_file', certs.otherClient.key.path),
        /^ERR_SSL_TLSV1_ALERT_UNKNOWN_CA$/);
    });
});
