import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { get as httpGet } from 'node:http';
import { connect as tcpConnect, type Socket } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { type IClientOptions, type MqttClient } from 'mqtt';

import { EmbeddedBroker, type EmbeddedBrokerOptions, type EmbeddedBrokerTransport } from '../../dev/EmbeddedBroker';
import { CLIENT_KEY_PASSPHRASE, testCertificates } from '../helpers/certs';
import { waitFor } from '../helpers/net';
import { connectOnce, refusal, roundTrip, UNTRUSTED_SERVER } from '../helpers/transports';

const TEST = { timeout: 30_000 };
const SOON_MS = 5000;

const certs = testCertificates();
const SERVER_TLS = { key: certs.server.key.pem, cert: certs.server.cert.pem };
/** Trusts the test CA, which signed the server certificate. */
const TRUSTING: IClientOptions = { ca: certs.ca.cert.pem };
/** Trusts the test CA and presents the client certificate it signed. */
const WITH_CLIENT_CERT: IClientOptions = { ...TRUSTING, cert: certs.client.cert.pem, key: certs.client.key.pem };
/**
 * The same with the encrypted copy of the client key. MQTT.js hands `passphrase` on to Node but
 * does not declare it; Node's `{ pem, passphrase }` key form is typed.
 */
const WITH_ENCRYPTED_CLIENT_KEY: IClientOptions = {
    ...WITH_CLIENT_CERT,
    key: [{ pem: certs.client.keyEncrypted.pem, passphrase: CLIENT_KEY_PASSPHRASE }],
};

/** Broker options for each transport, and what a client needs to trust the broker. */
const TRANSPORTS: { transport: EmbeddedBrokerTransport; options: EmbeddedBrokerOptions; scheme: RegExp }[] = [
    { transport: 'tcp', options: {}, scheme: /^mqtt:\/\/127\.0\.0\.1:\d+$/ },
    { transport: 'tls', options: { tls: SERVER_TLS }, scheme: /^mqtts:\/\/127\.0\.0\.1:\d+$/ },
    { transport: 'ws', options: { websocket: true }, scheme: /^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/ },
    { transport: 'wss', options: { tls: SERVER_TLS, websocket: true }, scheme: /^wss:\/\/127\.0\.0\.1:\d+\/mqtt$/ },
];

const brokers = new Set<EmbeddedBroker>();
const clients = new Set<MqttClient>();
const sockets = new Set<Socket>();

afterEach(async () => {
    const all = [...clients];
    clients.clear();
    await Promise.all(all.map((client) => client.endAsync(true)));
    for (const socket of sockets) {
        socket.destroy();
    }
    sockets.clear();
    await Promise.all([...brokers].map((broker) => broker.stop()));
    brokers.clear();
});

async function startBroker(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
    const broker = await EmbeddedBroker.start(options);
    brokers.add(broker);
    return broker;
}

async function connectClient(url: string, options: IClientOptions): Promise<MqttClient> {
    const client = await connectOnce(url, options);
    clients.add(client);
    return client;
}

/** A bare TCP connection to the broker's port that never says anything (no TLS, HTTP or MQTT). */
async function silentSocket(port: number): Promise<{ socket: Socket; closed: Promise<void> }> {
    const socket = tcpConnect({ host: '127.0.0.1', port });
    sockets.add(socket);
    socket.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
    });
    return { socket, closed };
}

function clientClosed(client: MqttClient): Promise<void> {
    return new Promise((resolve) => client.once('close', () => resolve()));
}

describe('EmbeddedBroker transports', () => {
    for (const { transport, options, scheme } of TRANSPORTS) {
        const trust = transport === 'tls' || transport === 'wss' ? TRUSTING : {};

        it(`${transport}: url, a message round trip, kill() and restart() on the same port`, TEST, async () => {
            const broker = await startBroker(options);
            assert.equal(broker.transport, transport);
            assert.match(broker.url, scheme);
            assert.ok(broker.url.includes(`:${broker.port}`));
            await roundTrip(broker.url, trust);
            assert.equal(broker.connectionCount(), 2);

            const port = broker.port;
            const client = await connectClient(broker.url, trust);
            const closed = clientClosed(client);
            await broker.kill();
            await closed;
            assert.equal((await refusal(broker.url, trust)).code, 'ECONNREFUSED');

            await broker.restart();
            assert.equal(broker.port, port);
            await roundTrip(broker.url, trust);

            await broker.stop();
            assert.equal((await refusal(broker.url, trust)).code, 'ECONNREFUSED');
            await broker.restart();
            assert.equal(broker.port, port);
            await roundTrip(broker.url, trust);
            assert.equal(broker.connectionCount(), 7);
        });

        it(`${transport}: stop() and kill() also drop connections that never got to MQTT`, TEST, async () => {
            const broker = await startBroker(options);
            for (const how of ['stop', 'kill'] as const) {
                // Before a TLS handshake, an HTTP upgrade or a CONNECT: Aedes does not know it.
                const silent = await silentSocket(broker.port);
                const client = await connectClient(broker.url, trust);
                const closed = clientClosed(client);
                await broker[how]();
                await Promise.all([silent.closed, closed]);
                await broker.restart();
            }
            await roundTrip(broker.url, trust);
        });
    }

    it('tls and wss: a client that trusts another CA (or only the public ones) is refused', TEST, async () => {
        for (const websocket of [false, true]) {
            const broker = await startBroker({ tls: SERVER_TLS, websocket });
            assert.match(String((await refusal(broker.url, { ca: certs.otherCa.cert.pem })).code), UNTRUSTED_SERVER);
            assert.match(String((await refusal(broker.url)).code), UNTRUSTED_SERVER);
            assert.equal(broker.connectionCount(), 0);
        }
    });

    it('tls: a self-signed server certificate is trusted by naming it as the CA, and only so', TEST, async () => {
        const broker = await startBroker({ tls: { key: certs.selfSigned.key.pem, cert: certs.selfSigned.cert.pem } });
        await roundTrip(broker.url, { ca: certs.selfSigned.cert.pem });
        assert.equal((await refusal(broker.url, TRUSTING)).code, 'DEPTH_ZERO_SELF_SIGNED_CERT');
    });

    it('tls: an encrypted server key is read with its passphrase', TEST, async () => {
        const passphrase = 'server-passphrase';
        const key = createPrivateKey(certs.server.key.pem).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase });
        const broker = await startBroker({ tls: { key, passphrase, cert: certs.server.cert.pem } });
        await roundTrip(broker.url, TRUSTING);
    });

    for (const websocket of [false, true]) {
        const name = websocket ? 'wss' : 'tls';
        it(`${name} with requestCert: a client certificate from the CA is accepted, none or another CA's is refused`, TEST, async () => {
            const broker = await startBroker({ tls: { ...SERVER_TLS, ca: certs.ca.cert.pem, requestCert: true }, websocket });
            await roundTrip(broker.url, WITH_CLIENT_CERT);
            await roundTrip(broker.url, WITH_ENCRYPTED_CLIENT_KEY);
            assert.equal(broker.connectionCount(), 4);

            // TLS 1.3: the client finishes its handshake first, then reads the server's alert.
            assert.equal((await refusal(broker.url, TRUSTING)).code, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
            // Node's TLS server checks the certificate after the handshake and just closes the
            // connection, with no alert: MQTT.js sees a close before CONNACK (wss: the HTTP
            // upgrade gets no answer).
            const other = await refusal(broker.url, { ...TRUSTING, cert: certs.otherClient.cert.pem, key: certs.otherClient.key.pem });
            assert.match(`${String(other.code)} ${other.message}`, websocket ? /ECONNRESET/ : /Couldn't connect to server/);
            assert.equal(broker.connectionCount(), 4);
        });
    }

    it('tls with requestCert and rejectUnauthorized false: a client without a certificate is accepted too', TEST, async () => {
        const broker = await startBroker({
            tls: { ...SERVER_TLS, ca: certs.ca.cert.pem, requestCert: true, rejectUnauthorized: false },
        });
        await roundTrip(broker.url, TRUSTING);
        await roundTrip(broker.url, WITH_CLIENT_CERT);
    });

    it('websocket: listens on the configured path only; plain HTTP gets 426', TEST, async () => {
        const broker = await startBroker({ websocket: { path: '/custom/mqtt' } });
        assert.equal(broker.url, `ws://127.0.0.1:${broker.port}/custom/mqtt`);
        await roundTrip(broker.url);
        // The upgrade to another path is answered with HTTP 400, which MQTT.js reports as a close.
        await refusal(`ws://127.0.0.1:${broker.port}/mqtt`);
        const status = await new Promise<number | undefined>((resolve, reject) => {
            httpGet(`http://127.0.0.1:${broker.port}/custom/mqtt`, (response) => {
                response.resume();
                resolve(response.statusCode);
            }).once('error', reject);
        });
        assert.equal(status, 426);
        await waitFor(() => broker.clientCount() === 0, SOON_MS, 'the round trip clients to be gone');
        assert.equal(broker.connectionCount(), 2);
    });
});
