import { ConfigParams } from 'pip-services3-commons-nodex';

/** One configuration key that [[MqttConnection]] reads. */
export interface MqttConfigKey {
    /**
     * The key as configured. `connections.N.*` and `credentials.N.*` stand for the numbered
     * sections, which take the keys of `connection.*` and `credential.*`.
     */
    readonly key: string;
    /**
     * The fixed default. Absent when there is none or when it is not a plain value (`client_id`
     * is made per connection, `options.session_expiry` follows `clean_session`, ...).
     */
    readonly default?: number | boolean;
    /** The names the query of a `connection.uri` may give it under; absent: the uri cannot carry it. */
    readonly uriQuery?: readonly string[];
    /** True for the MQTT 5 options: set with an older `options.protocol_version`, they are refused. */
    readonly mqtt5?: boolean;
    /** Other keys read as this one. */
    readonly aliases?: readonly string[];
}

/**
 * Every configuration key of [[MqttConnection]], the one list the README's configuration table
 * and the doc comments of MqttConnection and MqttConnectionResolver are checked against.
 * Ordered so that the defaults and uri query keys built from it keep their historic order.
 */
const KEYS = [
    { key: 'client_id', uriQuery: ['client_id', 'clientId'] },

    { key: 'connection.uri' },
    { key: 'connection.protocol' },
    { key: 'connection.host' },
    { key: 'connection.port' },
    { key: 'connection.path' },
    { key: 'connection.discovery_key' },
    { key: 'connections.N.*' },

    { key: 'credential.username' },
    { key: 'credential.password' },
    { key: 'credential.store_key' },
    { key: 'credential.ssl_ca_file' },
    { key: 'credential.ssl_crt_file', aliases: ['credential.ssl_cert_file'] },
    { key: 'credential.ssl_key_file' },
    { key: 'credential.ssl_passphrase' },
    { key: 'credentials.N.*' },

    { key: 'options.retry_connect', default: true, uriQuery: ['retry_connect'] },
    { key: 'options.connect_timeout', default: 30000, uriQuery: ['connect_timeout'] },
    { key: 'options.reconnect_timeout', default: 1000, uriQuery: ['reconnect_timeout'] },
    { key: 'options.max_reconnect_timeout', default: 30000, uriQuery: ['max_reconnect_timeout'] },
    { key: 'options.keepalive_timeout', default: 60000, uriQuery: ['keepalive_timeout'] },
    { key: 'options.clean_session', default: true, uriQuery: ['clean_session'] },
    { key: 'options.max_offline_messages', default: 10000, uriQuery: ['max_offline_messages'] },
    { key: 'options.protocol_version', default: 4, uriQuery: ['protocol_version'] },
    { key: 'options.session_expiry', uriQuery: ['session_expiry'], mqtt5: true },
    { key: 'options.broker_assigns_client_id', default: false, uriQuery: ['broker_assigns_client_id'], mqtt5: true },
    { key: 'options.topic_alias_maximum', default: 0, uriQuery: ['topic_alias_maximum'], mqtt5: true },
    { key: 'options.ssl_server_name', uriQuery: ['ssl_server_name'] },
    { key: 'options.ssl_reject_unauthorized', default: true, uriQuery: ['ssl_reject_unauthorized'] },
    { key: 'options.max_qos', default: 2 },
    { key: 'options.will_topic' },
    { key: 'options.will_message' },
    { key: 'options.will_qos', default: 0 },
    { key: 'options.will_retain', default: false },
] as const satisfies readonly MqttConfigKey[];

/** The name of a configuration key of [[MqttConnection]]. */
export type MqttConfigKeyName = (typeof KEYS)[number]['key'];

/** The configuration keys of [[MqttConnection]] (frozen, entries and their lists too). */
export const MQTT_CONFIG_KEYS: readonly MqttConfigKey[] = Object.freeze(KEYS.map((entry): MqttConfigKey => {
    const frozen: MqttConfigKey = { ...entry };
    for (const list of [frozen.uriQuery, frozen.aliases]) if (list !== undefined) Object.freeze(list);
    return Object.freeze(frozen);
}));

/**
 * The defaults of [[MqttConnection]]'s options, by configuration key: the keys of
 * [[MQTT_CONFIG_KEYS]] with a fixed default. `client_id` has none: each connection makes its own.
 */
export const MQTT_CONNECTION_DEFAULTS: ConfigParams = ConfigParams.fromTuples(
    ...MQTT_CONFIG_KEYS.flatMap((entry) => entry.default === undefined ? [] : [entry.key, entry.default]),
);

/** Query parameters a `uri` may carry, each mapped to the configuration key it stands for. */
export const URI_QUERY_KEYS: Readonly<Record<string, string>> = Object.freeze(Object.fromEntries(
    MQTT_CONFIG_KEYS.flatMap((entry) => (entry.uriQuery ?? []).map((name) => [name, entry.key])),
));
