import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { type IClientOptions } from 'mqtt';

import { CLIENT_KEY_PASSPHRASE, testCertificates } from './certs';
import { mosquittoSkip, startMosquitto, type MosquittoBroker, type MosquittoOptions } from './mosquitto';
import { refusal, roundTrip, UNTRUSTED_SERVER } from './transports';

const TEST = { timeout: 30_000 };

const certs = testCertificates();
/** The server files of every TLS listener here. */
const SERVER_FILES = { certfile: certs.server.cert.path, keyfile: certs.server.key.path };
/** Trusts the test CA, which signed the server certificate. */
const TRUSTING: IClientOptions = { ca: certs.ca.cert.pem };
/** Trusts the test CA and presents the client certificate it signed. */
const WITH_CLIENT_CERT: IClientOptions = { ...TRUSTING, cert: certs.client.cert.pem, key: certs.client.key.pem };

describe('startMosquitto with TLS and WebSocket listeners', { skip: mosquittoSkip() }, () => {
    const brokers: MosquittoBroker[] = [];
    after(async () => {
        await Promise.all(brokers.map((broker) => broker.cleanup()));
    });

    async function start(options: MosquittoOptions): Promise<MosquittoBroker> {
        const broker = await startMosquitto(options);
        brokers.push(broker);
        return broker;
    }

    it('every listener routes messages, to each other too, and keeps its port across restart()', TEST, async () => {
        const broker = await start({ tls: SERVER_FILES, websockets: true, secureWebsockets: true });
        const { url, tlsUrl, wsUrl, wssUrl } = broker;
        assert.ok(tlsUrl && wsUrl && wssUrl);
        assert.match(tlsUrl, /^mqtts:\/\/127\.0\.0\.1:\d+$/);
        assert.match(wsUrl, /^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/);
        assert.match(wssUrl, /^wss:\/\/127\.0\.0\.1:\d+\/mqtt$/);
        const ports = [url, tlsUrl, wsUrl, wssUrl].map((u) => new URL(u).port);
        assert.equal(new Set(ports).size, 4, `one port per listener: ${ports.join(', ')}`);

        await roundTrip(tlsUrl, TRUSTING);
        await roundTrip(wsUrl);
        await roundTrip(wssUrl, TRUSTING);
        // One broker behind all four: a message crosses from one listener to another.
        await roundTrip(tlsUrl, TRUSTING, wsUrl, {});
        await roundTrip(url, {}, wssUrl, TRUSTING);

        await broker.restart();
        assert.deepEqual([broker.url, broker.tlsUrl, broker.wsUrl, broker.wssUrl], [url, tlsUrl, wsUrl, wssUrl]);
        await roundTrip(wssUrl, TRUSTING, tlsUrl, TRUSTING);
        await broker.kill();
        assert.equal((await refusal(tlsUrl, TRUSTING)).code, 'ECONNREFUSED');
        await broker.start();
        await roundTrip(wsUrl, {}, url, {});
    });

    it('a client that trusts another CA is refused by the TLS listeners', TEST, async () => {
        const broker = await start({ tls: SERVER_FILES, secureWebsockets: true });
        assert.equal(broker.wsUrl, undefined);
        for (const url of [broker.tlsUrl, broker.wssUrl]) {
            assert.ok(url);
            assert.match(String((await refusal(url, { ca: certs.otherCa.cert.pem })).code), UNTRUSTED_SERVER);
        }
    });

    it('requireCertificate with passwords: both are needed on every listener, plain ones ask for passwords', TEST, async () => {
        const broker = await start({
            passwords: { alice: 'secret' },
            tls: { ...SERVER_FILES, cafile: certs.ca.cert.path, requireCertificate: true },
            websockets: true,
            secureWebsockets: true,
        });
        const alice: IClientOptions = { username: 'alice', password: 'secret' };
        const config = readFileSync(broker.configFile, 'utf8');
        assert.equal(config.match(/^require_certificate true$/gm)?.length, 2, config);

        for (const url of [broker.tlsUrl, broker.wssUrl]) {
            assert.ok(url);
            await roundTrip(url, { ...WITH_CLIENT_CERT, ...alice });
            await roundTrip(url, {
                ...WITH_CLIENT_CERT,
                ...alice,
                key: [{ pem: certs.client.keyEncrypted.pem, passphrase: CLIENT_KEY_PASSPHRASE }],
            });
            // Unlike Node's TLS server, Mosquitto refuses an unknown client certificate with an alert.
            assert.equal((await refusal(url, { ...TRUSTING, ...alice })).code, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
            const other = { ...TRUSTING, ...alice, cert: certs.otherClient.cert.pem, key: certs.otherClient.key.pem };
            assert.equal((await refusal(url, other)).code, 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA');
            // A certificate is no password: allow_anonymous false holds on every listener.
            assert.equal((await refusal(url, WITH_CLIENT_CERT)).code, 5);
        }
        assert.ok(broker.wsUrl);
        await roundTrip(broker.wsUrl, alice);
        assert.equal((await refusal(broker.wsUrl)).code, 5);
        assert.equal((await refusal(broker.url)).code, 5);
    });

    it('secureWebsockets without tls is refused before anything starts', async () => {
        await assert.rejects(startMosquitto({ secureWebsockets: true }), /secureWebsockets needs the certificate files of options.tls/);
    });
});
