import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection } from '../../../src';
import { MQTT_CONFIG_KEYS, MQTT_CONNECTION_DEFAULTS, URI_QUERY_KEYS } from '../../../src/connect/config/MqttConfigKeys';

/** The table's fixed defaults, as ConfigParams holds them (text). */
function tableDefaults(): Record<string, string> {
    return Object.fromEntries(MQTT_CONFIG_KEYS.flatMap((k) => k.default === undefined ? [] : [[k.key, String(k.default)]]));
}

/** Opens up what configure() made of the configuration. */
class ConfiguredConnection extends MqttConnection {
    public seen() {
        return {
            options: this._options.getAsObject() as Record<string, string>,
            retryConnect: this._retryConnect,
            connectTimeout: this._connectTimeout,
            reconnectTimeout: this._reconnectTimeout,
            keepAliveTimeout: this._keepAliveTimeout,
            cleanSession: this._cleanSession,
        };
    }
}

describe('MqttConfigKeys', () => {
    it('builds the defaults MqttConnectionSettings.ts had as a literal list, key by key and in order', () => {
        const literal = ConfigParams.fromTuples(
            'options.retry_connect', true,
            'options.connect_timeout', 30000,
            'options.reconnect_timeout', 1000,
            'options.max_reconnect_timeout', 30000,
            'options.keepalive_timeout', 60000,
            'options.clean_session', true,
            'options.max_offline_messages', 10000,
            'options.protocol_version', 4,
            'options.broker_assigns_client_id', false,
            'options.topic_alias_maximum', 0,
            'options.ssl_reject_unauthorized', true,
            'options.max_qos', 2,
            'options.will_qos', 0,
            'options.will_retain', false,
        );
        assert.deepEqual(MQTT_CONNECTION_DEFAULTS.getKeys(), literal.getKeys());
        for (const key of literal.getKeys()) {
            assert.equal(MQTT_CONNECTION_DEFAULTS.getAsNullableString(key), literal.getAsString(key), key);
        }
    });

    it('builds the uri query keys MqttConnectionResolver.ts had as a literal map, in order', () => {
        assert.deepEqual(Object.entries(URI_QUERY_KEYS), Object.entries({
            client_id: 'client_id',
            clientId: 'client_id',
            retry_connect: 'options.retry_connect',
            connect_timeout: 'options.connect_timeout',
            reconnect_timeout: 'options.reconnect_timeout',
            max_reconnect_timeout: 'options.max_reconnect_timeout',
            keepalive_timeout: 'options.keepalive_timeout',
            clean_session: 'options.clean_session',
            max_offline_messages: 'options.max_offline_messages',
            protocol_version: 'options.protocol_version',
            session_expiry: 'options.session_expiry',
            broker_assigns_client_id: 'options.broker_assigns_client_id',
            topic_alias_maximum: 'options.topic_alias_maximum',
            ssl_server_name: 'options.ssl_server_name',
            ssl_reject_unauthorized: 'options.ssl_reject_unauthorized',
        }));
    });

    it('is frozen and names each key once', () => {
        assert.ok(Object.isFrozen(MQTT_CONFIG_KEYS) && MQTT_CONFIG_KEYS.every((k) => Object.isFrozen(k)));
        assert.ok(Object.isFrozen(URI_QUERY_KEYS));
        const names = MQTT_CONFIG_KEYS.flatMap((k) => [k.key, ...(k.aliases ?? [])]);
        assert.deepEqual(names.filter((name, i) => names.indexOf(name) !== i), [], 'keys named twice');
        for (const k of MQTT_CONFIG_KEYS.filter((e) => e.mqtt5 === true)) {
            assert.ok(k.key.startsWith('options.'), `${k.key}: only options are MQTT 5 only`);
        }
    });

    it('MqttConnection uses the table\'s defaults', () => {
        assert.deepEqual(MqttConnection.defaultConfig.getAsObject(), tableDefaults(),
            'MqttConnection.defaultConfig differs from the defaults of MqttConfigKeys');

        const connection = new ConfiguredConnection();
        connection.configure(new ConfigParams());
        const seen = connection.seen();
        const options = Object.fromEntries(Object.entries(tableDefaults())
            .filter(([key]) => key.startsWith('options.')).map(([key, value]) => [key.substring('options.'.length), value]));
        assert.deepEqual(seen.options, options, 'the options MqttConnection sees with an empty configuration');
        const value = (key: string): number | boolean | undefined => MQTT_CONFIG_KEYS.find((k) => k.key === key)?.default;
        assert.equal(seen.retryConnect, value('options.retry_connect'), 'options.retry_connect');
        assert.equal(seen.connectTimeout, value('options.connect_timeout'), 'options.connect_timeout');
        assert.equal(seen.reconnectTimeout, value('options.reconnect_timeout'), 'options.reconnect_timeout');
        assert.equal(seen.keepAliveTimeout, value('options.keepalive_timeout'), 'options.keepalive_timeout');
        assert.equal(seen.cleanSession, value('options.clean_session'), 'options.clean_session');
        // No fixed default: at most 23 letters and digits, as documented.
        assert.match(connection.getStatus().clientId, /^[0-9A-Za-z]{1,23}$/, 'client_id');
    });
});
