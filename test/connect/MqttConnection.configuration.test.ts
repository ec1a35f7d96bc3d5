// How MqttConnection reads its configuration and references: defaults, option keys, the uri query, bad values, reconfiguration.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import { ConfigException, ConfigParams, Descriptor, References } from 'pip-services3-commons-nodex';
import { ConnectionParams, MemoryDiscovery } from 'pip-services3-components-nodex';

import { MqttConnection, MqttErrorCode } from '../../src';
import { type AedesTestBroker, delay } from '../helpers/brokers';
import { newConnection, testReferences } from '../helpers/components';
import { fixture, suiteFixture } from '../helpers/fixture';

/** Exposes the fields the specification lists. */
class InspectableConnection extends MqttConnection {
    public fields(): Record<string, unknown> {
        return {
            clientId: this._clientId,
            retryConnect: this._retryConnect,
            connectTimeout: this._connectTimeout,
            reconnectTimeout: this._reconnectTimeout,
            keepAliveTimeout: this._keepAliveTimeout,
            options: this._options.getAsObject() as unknown,
        };
    }
}

/** The first reconnect wait is reconnect_timeout shortened by up to a quarter at random. */
function assertFirstWait(period: number | undefined, reconnectTimeout: number): void {
    assert.ok(period !== undefined && period >= reconnectTimeout * 0.75 && period <= reconnectTimeout,
        `first reconnect wait ${period} should be within 75..100% of ${reconnectTimeout}`);
}

describe('MqttConnection configuration and references', { timeout: 60000 }, () => {
    const suite = suiteFixture();
    let broker: AedesTestBroker;
    before(async () => { broker = await suite.aedes(); });

    it('uses the documented defaults', async (t) => {
        const f = fixture(t);
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
        const connection = f.connection(broker.url);
        await connection.open(null);
        const options = connection.getConnection()!.options;
        assert.equal(options.keepalive, 60);
        assert.equal(options.connectTimeout, 30000);
        assertFirstWait(options.reconnectPeriod, 1000);
        assert.equal(options.clean, true);
        assert.equal(options.protocolVersion, 4);
        assert.match(options.clientId ?? '', /^[A-Za-z0-9]{1,11}[0-9a-f]{12}$/, 'at most 23 characters from [0-9a-zA-Z]');
    });

    it('sets the specified fields from configuration, with the documented defaults', () => {
        const connection = new InspectableConnection();
        connection.configure(new ConfigParams());
        const defaults = connection.fields();
        assert.match(String(defaults.clientId), /^[A-Za-z0-9]{1,11}[0-9a-f]{12}$/);
        assert.deepEqual({ ...defaults, clientId: undefined }, {
            clientId: undefined,
            retryConnect: true,
            connectTimeout: 30000,
            reconnectTimeout: 1000,
            keepAliveTimeout: 60000,
            options: {
                retry_connect: 'true', connect_timeout: '30000', reconnect_timeout: '1000', max_reconnect_timeout: '30000',
                keepalive_timeout: '60000', clean_session: 'true', max_offline_messages: '10000', protocol_version: '4',
                broker_assigns_client_id: 'false', topic_alias_maximum: '0', ssl_reject_unauthorized: 'true',
                max_qos: '2', will_qos: '0', will_retain: 'false',
            },
        });
        connection.configure(ConfigParams.fromTuples('client_id', 'c1', 'options.retry_connect', false,
            'options.connect_timeout', 1, 'options.reconnect_timeout', 2, 'options.keepalive_timeout', 3));
        assert.deepEqual({ ...connection.fields(), options: undefined }, {
            clientId: 'c1', retryConnect: false, connectTimeout: 1, reconnectTimeout: 2, keepAliveTimeout: 3, options: undefined,
        });
    });

    it('reads every option key and client_id', async (t) => {
        const f = fixture(t);
        const connection = f.connection(broker.url,
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
        const withRetry = f.connection(broker.url, 'options.reconnect_timeout', 250, 'options.keepalive_timeout', 0,
            'options.clean_session', false, 'client_id', 'persistent-one');
        await withRetry.open(null);
        assertFirstWait(withRetry.getConnection()!.options.reconnectPeriod, 250);
        assert.equal(withRetry.getConnection()!.options.keepalive, 0);
        assert.equal(withRetry.getConnection()!.options.clean, false);
        await withRetry.close(null);
    });

    it('reads client_id and options from the uri query, and rejects a conflicting key', async (t) => {
        const f = fixture(t);
        const connection = f.connection(`${broker.url}?client_id=from-uri&connect_timeout=4000`);
        await connection.open(null);
        assert.equal(connection.getConnection()!.options.clientId, 'from-uri');
        assert.equal(connection.getConnection()!.options.connectTimeout, 4000);
        await connection.close(null);

        const conflicting = f.connection(`${broker.url}?connect_timeout=4000`, 'options.connect_timeout', 5000);
        await assert.rejects(conflicting.open(null), { code: MqttErrorCode.ConflictingConfig });
        assert.equal(conflicting.isOpen(), false);
    });

    it('gives two default connections different client ids, and both stay connected', async (t) => {
        const f = fixture(t);
        const a = f.connection(broker.url);
        const b = f.connection(broker.url);
        await a.open(null);
        await b.open(null);
        assert.notEqual(a.getConnection()!.options.clientId, b.getConnection()!.options.clientId);
        await delay(200);
        assert.equal(a.getConnection()!.connected, true);
        assert.equal(b.getConnection()!.connected, true);
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

    it('rejects at open what MQTT cannot carry in CONNECT, naming the key: over 65535 bytes, control characters, noncharacters, lone surrogates', async () => {
        const long = 'x'.repeat(65536);
        const cases: [key: string, value: string, extra: unknown[]][] = [
            ['client_id', 'a\u0001b', []],
            ['client_id', 'a\uFFFE', []],
            ['client_id', 'a\uD800', []],
            ['credential.username', long, []],
            ['credential.username', 'user\n', []],
            ['credential.username', 'us\u009Fer', []],
            ['credential.username', '\uDC00', []],
            ['credential.password', long, ['credential.username', 'user']],
            ['options.will_topic', 'will/\u0007', []],
            ['options.will_topic', 'will/\uFDD0', []],
            ['options.will_message', long, ['options.will_topic', 'will/topic']],
        ];
        for (const [key, value, extra] of cases) {
            const connection = newConnection(broker.url, key, value, ...extra);
            const label = `${key}=${JSON.stringify(value.substring(0, 12))}`;
            const err = await connection.open(null).then(() => null, (e: ConfigException) => e);
            await connection.close(null);
            assert.ok(err instanceof ConfigException, `${label}: ${err?.message ?? 'opened'}`);
            assert.equal(err.code, MqttErrorCode.BadOption, label);
            assert.equal(err.details.getAsNullableString('key'), key, label);
            assert.ok(err.message.includes(key), `${label}: ${err.message}`);
            assert.ok(!err.message.includes(value), `${label}: the value is not repeated`);
        }
    });

    it('rejects a password without a user name at open: MQTT 3.1 and 3.1.1 do not allow it, and MQTT.js cannot send it under MQTT 5', async () => {
        for (const version of [3, 4, 5]) {
            for (const tuples of [['credential.password', 'secret'], ['connection.uri', broker.url.replace('mqtt://', 'mqtt://:secret@')]]) {
                const connection = newConnection(broker.url, 'options.protocol_version', version, ...tuples);
                const err = await connection.open(null).then(() => null, (e: ConfigException) => e);
                await connection.close(null);
                const label = `protocol_version ${version}, ${tuples[0]}`;
                assert.ok(err instanceof ConfigException, `${label}: ${err?.message ?? 'opened'}`);
                assert.equal(err.code, MqttErrorCode.BadOption, label);
                assert.equal(err.details.getAsNullableString('key'), 'credential.username', label);
                assert.ok(!err.message.includes('secret'), err.message);
            }
        }
    });

    it('uses the latest configuration when configured again, credentials included', async (t) => {
        const f = fixture(t);
        const users: (string | undefined)[] = [];
        const auth = await f.aedes({ authenticate: (_id, username) => { users.push(username); return true; } });
        const connection = f.closing(new MqttConnection());
        connection.configure(ConfigParams.fromTuples('connection.uri', auth.url, 'credential.username', 'old'));
        await connection.open(null);
        await connection.close(null);
        connection.configure(ConfigParams.fromTuples('connection.uri', auth.url, 'credential.username', 'new'));
        await connection.open(null);
        assert.deepEqual(users, ['old', 'new']);
    });

    it('resolves the broker through a referenced discovery service', async (t) => {
        const f = fixture(t);
        const discovery = new MemoryDiscovery();
        await discovery.register(null as unknown as string, 'mqtt-broker', ConnectionParams.fromTuples('host', '127.0.0.1', 'port', broker.port));
        const connection = f.closing(new MqttConnection());
        connection.configure(ConfigParams.fromTuples('connection.discovery_key', 'mqtt-broker'));
        connection.setReferences(References.fromTuples(new Descriptor('pip-services', 'discovery', 'memory', 'default', '1.0'), discovery));
        await connection.open(null);
        assert.equal(connection.isOpen(), true);
        await connection.close(null);
    });

    it('stops logging and counting after unsetReferences', async (t) => {
        const f = fixture(t);
        const { references, logger, counters } = testReferences();
        const connection = f.connection(broker.url);
        connection.setReferences(references);
        await connection.open(null);
        const lines = logger.entries.length;
        assert.ok(lines > 0);
        connection.unsetReferences();
        await connection.publish('unset/refs', 'x');
        await connection.close(null);
        assert.equal(logger.entries.length, lines);
        assert.equal(counters.increments.get('mqtt.published_messages'), undefined);
    });
});
