// TLS settings checked at open(): missing or unusable files, passphrases, keys that do not match, TLS settings on a plain connection.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { ConfigException, ConfigParams, type InvalidStateException } from 'pip-services3-commons-nodex';

import { type MqttConnection, MqttErrorCode } from '../../src';
import { CLIENT_KEY_PASSPHRASE, testCertificates } from '../helpers/certs';
import { newConnection } from '../helpers/components';
import { fixture } from '../helpers/fixture';

const certs = testCertificates();
const TRUST_CA = ['credential.ssl_ca_file', certs.ca.cert.path];
const tls = { key: certs.server.key.pem, cert: certs.server.cert.pem };

/** Expects open() to fail with a ConfigException `MQTT_BAD_TLS` naming `key`. */
async function rejectsBadTls(connection: MqttConnection, key: string, message?: RegExp): Promise<void> {
    await assert.rejects(connection.open(null), (err: ConfigException) => {
        assert.ok(err instanceof ConfigException, String(err));
        assert.equal(err.code, MqttErrorCode.BadTls);
        assert.equal(err.details.getAsString('key'), key);
        if (message) assert.match(err.message, message);
        assert.ok(!err.message.includes(CLIENT_KEY_PASSPHRASE) && !err.message.includes('wr0ng-pass'), 'no passphrase in the message');
        return true;
    }, key);
    assert.equal(connection.isOpen(), false);
}

describe('MqttConnection TLS configuration errors', { timeout: 30000 }, () => {
    const url = 'mqtts://127.0.0.1:8883';
    const client = ['credential.ssl_crt_file', certs.client.cert.path];

    it('names the key of a missing or unusable file', async () => {
        await rejectsBadTls(newConnection(url, 'credential.ssl_ca_file', '/no/such/ca.pem'), 'credential.ssl_ca_file', /ENOENT/);
        await rejectsBadTls(newConnection(url, 'credential.ssl_ca_file', certs.client.key.path), 'credential.ssl_ca_file', /no PEM certificate/);
        await rejectsBadTls(newConnection(url, 'credential.ssl_crt_file', '/no/such/cert.pem', 'credential.ssl_key_file', certs.client.key.path),
            'credential.ssl_crt_file');
        await rejectsBadTls(newConnection(url, 'credential.ssl_cert_file', '/no/such/cert.pem', 'credential.ssl_key_file', certs.client.key.path),
            'credential.ssl_cert_file');
        await rejectsBadTls(newConnection(url, ...client, 'credential.ssl_key_file', '/no/such/key.pem'), 'credential.ssl_key_file');
        await rejectsBadTls(newConnection(url, ...client, 'credential.ssl_key_file', certs.client.cert.path), 'credential.ssl_key_file',
            /no usable PEM private key/);
    });

    it('names the passphrase when it is wrong or missing, and the key when it does not match the certificate', async () => {
        const encrypted = ['credential.ssl_key_file', certs.client.keyEncrypted.path];
        await rejectsBadTls(newConnection(url, ...client, ...encrypted, 'credential.ssl_passphrase', 'wr0ng-pass'),
            'credential.ssl_passphrase', /does not decrypt/);
        await rejectsBadTls(newConnection(url, ...client, ...encrypted), 'credential.ssl_passphrase', /is encrypted/);
        await rejectsBadTls(newConnection(url, ...client, 'credential.ssl_key_file', certs.otherClient.key.path), 'credential.ssl_key_file',
            /does not match/);
    });

    it('asks for the certificate and key together, and a passphrase only with a key', async () => {
        await rejectsBadTls(newConnection(url, ...client), 'credential.ssl_key_file');
        await rejectsBadTls(newConnection(url, 'credential.ssl_key_file', certs.client.key.path), 'credential.ssl_crt_file');
        await rejectsBadTls(newConnection(url, 'credential.ssl_passphrase', 'x'), 'credential.ssl_passphrase');
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

    it('refuses TLS files for a connection that is not mqtts or wss, and two different certificate files', async () => {
        await rejectsBadTls(newConnection('mqtt://127.0.0.1:1883', ...TRUST_CA), 'credential.ssl_ca_file', /neither|no connection uses mqtts or wss/);
        await rejectsBadTls(newConnection('ws://127.0.0.1:80', ...client, 'credential.ssl_key_file', certs.client.key.path),
            'credential.ssl_crt_file');
        await assert.rejects(newConnection(url, ...client, 'credential.ssl_cert_file', certs.otherClient.cert.path,
            'credential.ssl_key_file', certs.client.key.path).open(null),
        (err: ConfigException) => err.code === MqttErrorCode.ConflictingConfig && err.details.getAsString('key') === 'credential.ssl_cert_file');
        await assert.rejects(newConnection(url, 'options.ssl_reject_unauthorized', 'perhaps').open(null),
            (err: ConfigException) => err.code === MqttErrorCode.BadOption && err.details.getAsString('key') === 'options.ssl_reject_unauthorized');
    });

    it('refuses options.ssl_server_name on a connection that is neither mqtts nor wss, as it refuses TLS files', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes();
        const connection = f.connection(broker.url, 'options.ssl_server_name', 'broker.example.com');
        const err = await connection.open(null).then(() => null, (e: ConfigException) => e);
        await connection.close(null);
        assert.equal(err?.code, MqttErrorCode.BadTls, `options.ssl_server_name was ignored on ${broker.url}`);
    });
});

describe('MqttConnection TLS files at open()', { timeout: 60000 }, () => {
    it('trusts a CA bundle of several certificates', async (t) => {
        const f = fixture(t);
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pip-mqtt-ca-bundle-'));
        f.defer(() => fs.rmSync(dir, { recursive: true, force: true }));
        const bundle = path.join(dir, 'bundle.pem');
        fs.writeFileSync(bundle, certs.otherCa.cert.pem + '\n' + certs.ca.cert.pem);
        const broker = await f.aedes({ tls });
        const c = f.connection(broker.url, 'credential.ssl_ca_file', bundle);
        await c.open(null);
        await c.close(null);
    });

    it('configure() twice: the second configuration\'s TLS settings are used', async (t) => {
        const f = fixture(t);
        const broker = await f.aedes({ tls });
        const connection = f.connection(broker.url, 'credential.ssl_ca_file', certs.otherCa.cert.path);
        connection.configure(ConfigParams.fromTuples('connection.uri', broker.url, ...TRUST_CA));
        await connection.open(null);
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
