import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

import { BooleanConverter, ConfigException, ConfigParams } from 'pip-services3-commons-nodex';

import { MQTT_CONNECTION_DEFAULTS } from './MqttConfigKeys';
import type { MqttConnectionResolver, MqttResolvedConnection } from './MqttConnectionResolver';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { badOption } from '../errors/MqttErrors';
import { loadTls, type MqttTlsOptions } from './MqttTls';
import { mqttBinaryProblem, mqttStringProblem } from '../MqttStrings';
import { checkTopicName } from '../MqttTopics';
import { nonEmpty, cid } from '../../shared/pip';

/** MQTT keepalive is sent in whole seconds as a 16-bit value. */
const MAX_KEEPALIVE_MS = 65535 * 1000;
/** Timeouts beyond this are certainly mistakes (Node timers overflow at 2^31-1 ms). */
const MAX_TIMEOUT_MS = 2147483647;
/** MQTT packet ids are 16-bit, but QoS 0 messages and queued publishes are not bounded by them. */
const MAX_OFFLINE_MESSAGES = 100_000_000;

/** The settings read from `client_id` and `options.*` (in the configuration or the uri query). */
export interface MqttConnectionOptions {
    readonly clientId: string;
    readonly retryConnect: boolean;
    readonly connectTimeout: number;
    /** The first wait between connection attempts; it doubles after each failed attempt. */
    readonly reconnectTimeout: number;
    /** The longest wait between connection attempts. */
    readonly maxReconnectTimeout: number;
    readonly keepAliveTimeout: number;
    /** False: the broker keeps the session (subscriptions, queued QoS 1/2 messages) across disconnects. */
    readonly cleanSession: boolean;
    /** How many publishes may wait for the broker while disconnected. */
    readonly maxOfflineMessages: number;
    /** 3 (MQTT 3.1), 4 (MQTT 3.1.1) or 5 (MQTT 5). */
    readonly protocolVersion: 3 | 4 | 5;
    /** MQTT 5: send an empty client id and use the one the broker assigns. */
    readonly brokerAssignsClientId: boolean;
    /** MQTT 5: topic aliases we accept from the broker; above 0 our publishes use aliases too. */
    readonly topicAliasMaximum: number;
    /** MQTT 5: seconds the broker keeps the session after a disconnect; undefined: by clean_session. */
    readonly sessionExpiry?: number;
    /** TLS: refuse a broker whose certificate is not trusted or does not name its host. */
    readonly sslRejectUnauthorized: boolean;
    /** TLS: the host name the broker's certificate must name (and SNI); undefined: the connection's host. */
    readonly sslServerName?: string;
    /** The highest QoS the broker supports, as configured (NATS and RabbitMQ 3.x: 1); publishes and subscribes above it are refused. */
    readonly maxQos: 0 | 1 | 2;
    /** The last will: what the broker publishes when the connection ends without DISCONNECT. */
    readonly will?: MqttWill;
}

/** A last will message (`options.will_*`). */
export interface MqttWill {
    readonly topic: string;
    readonly message: string;
    readonly qos: 0 | 1 | 2;
    readonly retain: boolean;
}

/** Everything a connection needs to start: where, who, how, and with which TLS material. Read once at open(), immutable. */
export interface MqttConnectionSettings extends MqttConnectionOptions {
    /** The brokers and credentials. */
    readonly connection: MqttResolvedConnection;
    /** The loaded TLS options when a server uses mqtts or wss. */
    readonly tls?: MqttTlsOptions;
    /**
     * True when the broker keeps the session across a lost connection, so a reconnect resumes it:
     * `clean_session` false, or MQTT 5 with a session expiry (a clean start at open(), resumed by reconnects).
     */
    readonly sessionOutlivesConnection: boolean;
}

/**
 * Reads and checks the whole configuration before any connection is made: brokers and
 * credentials (from config, discovery and credential stores), options, and TLS files.
 *
 * @param signal aborted by a close() meanwhile: then its reason, not what failed since, is the answer.
 * @throws ConfigException naming the key at fault, or the signal's reason.
 */
export async function resolveSettings(
    correlationId: string | null, resolver: MqttConnectionResolver, config: ConfigParams, generatedClientId: string, signal: AbortSignal,
): Promise<MqttConnectionSettings> {
    let settings: MqttConnectionSettings;
    try {
        settings = await readAllSettings(correlationId, resolver, config, generatedClientId);
    } catch (err) {
        signal.throwIfAborted();
        throw err;
    }
    signal.throwIfAborted();
    return settings;
}

async function readAllSettings(
    correlationId: string | null, resolver: MqttConnectionResolver, config: ConfigParams, generatedClientId: string,
): Promise<MqttConnectionSettings> {
    const connection = await resolver.resolve(correlationId);
    const options = readSettings(correlationId, config, connection.uriOptions, generatedClientId);
    if (connection.password !== undefined && connection.username === undefined) {
        // MQTT 3.1.1 section 3.1.2.9 (and 3.1): a broker closes the connection on it, with no reason
        // given. MQTT 5 allows it, but MQTT.js's packet writer refuses it in every version.
        throw badOption(correlationId, `${connection.credentialKey}.username`,
            'must be set when a password is: MQTT 3.1 and 3.1.1 send no password without a user name, and MQTT.js does not under MQTT 5 either');
    }
    const sessionOutlivesConnection = !options.cleanSession || (options.sessionExpiry ?? 0) > 0;
    const usesTls = connection.servers.some((s) => s.protocol === 'mqtts' || s.protocol === 'wss');
    if (!usesTls) {
        if (options.sslServerName !== undefined) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.BadTls,
                'MQTT TLS setting options.ssl_server_name is set, but no connection uses mqtts or wss')
                .withDetails('key', 'options.ssl_server_name');
        }
        return Object.freeze({ ...options, connection, sessionOutlivesConnection });
    }
    const tls = await loadTls(correlationId, connection.tls, options.sslServerName, options.sslRejectUnauthorized);
    return Object.freeze({ ...options, connection, tls, sessionOutlivesConnection });
}

/** MQTT 5 session expiry meaning "never" (section 3.1.2.11.2). */
export const SESSION_NEVER_EXPIRES = 0xFFFFFFFF;

/**
 * Makes a client id that no other connection shares: the host name's letters and digits (at
 * most 11) and 12 random hex digits. At most 23 characters from [0-9a-zA-Z], which every MQTT
 * 3.1.1 broker must accept (section 3.1.3.1).
 */
export function makeClientId(): string {
    const host = hostname().replace(/[^A-Za-z0-9]/g, '').substring(0, 11) || 'mqtt';
    return `${host}${randomBytes(6).toString('hex')}`;
}

/**
 * What readSettings() makes of the configuration alone (no uri query, discovery or credential
 * store), as [[MqttConnection]]'s fields show it before open(); a configuration it refuses shows the defaults.
 */
export function previewSettings(config: ConfigParams, defaultClientId: string): MqttConnectionOptions {
    const none = new ConfigParams();
    try {
        return readSettings(null, config, none, defaultClientId);
    } catch {
        return readSettings(null, none, none, defaultClientId);
    }
}

/**
 * Reads and checks the connection settings. A key may be set in the configuration or in the
 * uri query; when both are set they must agree.
 *
 * @throws ConfigException `MQTT_BAD_OPTION` or `MQTT_CONFLICTING_CONFIG`, naming the key.
 */
export function readSettings(
    correlationId: string | null, config: ConfigParams, uriOptions: ConfigParams, defaultClientId: string,
): MqttConnectionOptions {
    /** The value set in the configuration or the uri query, or undefined. */
    const given = (key: string): string | undefined => {
        const fromConfig = nonEmpty(config.getAsNullableString(key));
        const fromUri = nonEmpty(uriOptions.getAsNullableString(key));
        if (fromConfig != null && fromUri != null && fromConfig !== fromUri) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.ConflictingConfig,
                `MQTT configuration conflict at ${key}: '${fromConfig}' differs from the uri query value '${fromUri}'`)
                .withDetails('key', key);
        }
        return fromConfig ?? fromUri;
    };
    const raw = (key: string): string | undefined => given(key) ?? nonEmpty(MQTT_CONNECTION_DEFAULTS.getAsNullableString(key));
    const integer = (key: string, min: number, max: number, unit = 'milliseconds'): number => {
        const text = raw(key) ?? '';
        const value = /^\s*\d+\s*$/.test(text) ? Number(text) : NaN;
        if (!Number.isSafeInteger(value) || value < min || value > max) {
            throw badOption(correlationId, key, `must be an integer from ${min} to ${max} (${unit}), not '${text}'`);
        }
        return value;
    };

    const boolean = (key: string): boolean => {
        const text = raw(key);
        const value = BooleanConverter.toNullableBoolean(text);
        if (value == null) throw badOption(correlationId, key, `must be true or false, not '${text}'`);
        return value;
    };

    const clientId = raw('client_id') ?? defaultClientId;
    const clientIdProblem = mqttStringProblem(clientId);
    if (clientIdProblem !== null) throw badOption(correlationId, 'client_id', clientIdProblem);

    const retryConnect = boolean('options.retry_connect');
    const reconnectTimeout = integer('options.reconnect_timeout', 1, MAX_TIMEOUT_MS);
    // Unset, the maximum follows a reconnect_timeout raised above the default maximum.
    const maxReconnectTimeout = given('options.max_reconnect_timeout') !== undefined
        ? integer('options.max_reconnect_timeout', reconnectTimeout, MAX_TIMEOUT_MS)
        : Math.max(reconnectTimeout, integer('options.max_reconnect_timeout', 1, MAX_TIMEOUT_MS));
    const versionText = raw('options.protocol_version')?.trim();
    const protocolVersion = versionText === '5' ? 5 : versionText === '4' ? 4 : versionText === '3' ? 3 : null;
    if (protocolVersion === null) {
        throw badOption(correlationId, 'options.protocol_version', `must be 3 (MQTT 3.1), 4 (MQTT 3.1.1) or 5 (MQTT 5), not '${versionText}'`);
    }
    /** Reads an MQTT 5 option: set with an older protocol version, it is a mistake, not something to ignore. */
    const mqtt5 = <T>(key: string, read: () => T, unset: T): T => {
        if (given(key) === undefined) return unset;
        if (protocolVersion !== 5) throw badOption(correlationId, key, 'needs options.protocol_version 5: it is an MQTT 5 feature');
        return read();
    };
    const sessionExpiry = mqtt5<number | undefined>('options.session_expiry',
        () => integer('options.session_expiry', 0, SESSION_NEVER_EXPIRES, 'seconds'), undefined);
    const brokerAssignsClientId = mqtt5('options.broker_assigns_client_id', () => boolean('options.broker_assigns_client_id'), false);
    if (brokerAssignsClientId && given('client_id') !== undefined) {
        throw new ConfigException(cid(correlationId), MqttErrorCode.ConflictingConfig,
            'MQTT configuration conflict at options.broker_assigns_client_id: client_id is set too; set one of them')
            .withDetails('key', 'options.broker_assigns_client_id');
    }
    const topicAliasMaximum = mqtt5('options.topic_alias_maximum', () => integer('options.topic_alias_maximum', 0, 65535, 'aliases'), 0);
    const sslServerName = given('options.ssl_server_name');
    const will = readWill(correlationId, given, integer, boolean);
    return {
        clientId,
        retryConnect,
        connectTimeout: integer('options.connect_timeout', 1, MAX_TIMEOUT_MS),
        reconnectTimeout,
        maxReconnectTimeout,
        keepAliveTimeout: integer('options.keepalive_timeout', 0, MAX_KEEPALIVE_MS),
        cleanSession: boolean('options.clean_session'),
        maxOfflineMessages: integer('options.max_offline_messages', 0, MAX_OFFLINE_MESSAGES, 'messages'),
        protocolVersion,
        brokerAssignsClientId,
        topicAliasMaximum,
        ...(sessionExpiry !== undefined ? { sessionExpiry } : {}),
        sslRejectUnauthorized: boolean('options.ssl_reject_unauthorized'),
        ...(sslServerName !== undefined ? { sslServerName: sslServerName.trim() } : {}),
        maxQos: integer('options.max_qos', 0, 2, 'QoS') as 0 | 1 | 2,
        ...(will !== undefined ? { will } : {}),
    };
}

/**
 * Reads `options.will_topic` (a topic name), `will_message` (text, default empty), `will_qos`
 * and `will_retain`. The other will keys without a topic are a mistake, not something to ignore.
 */
function readWill(
    correlationId: string | null,
    given: (key: string) => string | undefined,
    integer: (key: string, min: number, max: number, unit?: string) => number,
    boolean: (key: string) => boolean,
): MqttWill | undefined {
    const topic = given('options.will_topic');
    if (topic === undefined) {
        const orphan = ['options.will_message', 'options.will_qos', 'options.will_retain'].find((key) => given(key) !== undefined);
        if (orphan !== undefined) throw badOption(correlationId, orphan, 'needs options.will_topic: there is no will without a topic');
        return undefined;
    }
    const topicError = checkTopicName(topic);
    if (topicError !== null) throw badOption(correlationId, 'options.will_topic', `is not a valid topic name: ${topicError}`);
    const message = given('options.will_message') ?? '';
    const messageProblem = mqttBinaryProblem(message);
    if (messageProblem !== null) throw badOption(correlationId, 'options.will_message', messageProblem);
    return {
        topic,
        message,
        qos: integer('options.will_qos', 0, 2, 'QoS') as 0 | 1 | 2,
        retain: boolean('options.will_retain'),
    };
}
