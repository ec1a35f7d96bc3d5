import { ConfigException } from 'pip-services3-commons-nodex';
import type { ConnectionParams } from 'pip-services3-components-nodex';

import { cid, nonEmpty } from '../../shared/pip';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { configConflict } from '../errors/MqttErrors';
import { URI_QUERY_KEYS } from './MqttConfigKeys';

// Broker addresses: a connection section's uri and keys, read into servers (for MqttConnectionResolver).

/** The MQTT transports, with their default ports. */
export type MqttProtocol = 'mqtt' | 'mqtts' | 'ws' | 'wss';

const DEFAULT_PORTS: Readonly<Record<MqttProtocol, number>> = { mqtt: 1883, mqtts: 8883, ws: 80, wss: 443 };

const PROTOCOL_ALIASES: Readonly<Record<string, MqttProtocol>> = {
    mqtt: 'mqtt', tcp: 'mqtt',
    mqtts: 'mqtts', ssl: 'mqtts', tls: 'mqtts',
    ws: 'ws',
    wss: 'wss',
};

/** The default WebSocket path when neither the uri nor `path` names one. */
const DEFAULT_WS_PATH = '/mqtt';

/** One broker address. */
export interface MqttServer {
    readonly protocol: MqttProtocol;
    readonly host: string;
    readonly port: number;
    /** The WebSocket path (ws and wss only). */
    readonly path?: string;
}

/** Converts a configured protocol or uri scheme to an MQTT protocol, or null when unknown. */
function toMqttProtocol(value: string): MqttProtocol | null {
    return PROTOCOL_ALIASES[value.toLowerCase()] ?? null;
}

/** The default port of an MQTT protocol: 1883, 8883, 80 or 443. */
function defaultPort(protocol: MqttProtocol): number {
    return DEFAULT_PORTS[protocol];
}

/** One connection section read: its server, the user info of its uri, and the uri query by configuration key. */
export interface ParsedConnection {
    server: MqttServer;
    username?: string;
    password?: string;
    query: Record<string, string>;
}

/**
 * Reads one `connection.*` (or `connections.N.*`) section: its uri and the keys beside it, which
 * must agree with the uri. @throws ConfigException naming the key.
 */
export function parseConnection(correlationId: string | null, connection: ConnectionParams, key: string): ParsedConnection {
    const explicitProtocol = nonEmpty(connection.getAsNullableString('protocol'));
    const explicitHost = nonEmpty(connection.getAsNullableString('host'));
    const explicitPortText = nonEmpty(connection.getAsNullableString('port'));
    const explicitPath = nonEmpty(connection.getAsNullableString('path'));
    const uri = nonEmpty(connection.getAsNullableString('uri'));

    let protocol: MqttProtocol | null = null;
    if (explicitProtocol != null) {
        protocol = toMqttProtocol(explicitProtocol);
        if (protocol == null) throw unknownProtocol(correlationId, `${key}.protocol`, explicitProtocol);
    }
    const explicitPort = explicitPortText == null ? null : checkPort(correlationId, `${key}.port`, explicitPortText);

    if (uri == null) {
        if (explicitHost == null) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.NoHost,
                `MQTT connection has no host: set ${key}.host or ${key}.uri`).withDetails('key', `${key}.host`);
        }
        const p = protocol ?? 'mqtt';
        return {
            server: makeServer(p, stripBrackets(explicitHost), explicitPort ?? defaultPort(p), explicitPath ?? null),
            query: {},
        };
    }

    let url: URL;
    try {
        url = new URL(uri);
    } catch (err) {
        throw new ConfigException(cid(correlationId), MqttErrorCode.BadUri, `MQTT connection uri cannot be parsed: ${key}.uri`)
            .withDetails('key', `${key}.uri`).withCause(err as Error);
    }
    if (url.username === '' && url.password === '' && uri.includes('@') && !atOnlyInKnownQuery(uri, url)) {
        // A password holding '/', '?' or '#' ends the address early: the parser then finds no user
        // info, takes part of the password for a host or port, and the rest would show in errors.
        // The message repeats nothing of the uri.
        throw new ConfigException(cid(correlationId), MqttErrorCode.BadUri,
            `MQTT connection uri has an '@' outside its user info: ${key}.uri. Percent-encode '/', '?', '#' and '@' ` +
            'in a user name or password (and \'@\' anywhere else)').withDetails('key', `${key}.uri`);
    }
    const scheme = url.protocol.replace(/:$/, '');
    const uriProtocol = toMqttProtocol(scheme);
    if (uriProtocol == null) throw unknownProtocol(correlationId, `${key}.uri`, scheme);
    if (protocol != null && protocol !== uriProtocol) {
        throw configConflict(correlationId, `${key}.protocol`, `protocol '${explicitProtocol}' differs from the uri scheme '${scheme}'`);
    }
    const host = stripBrackets(url.hostname);
    if (host === '') {
        throw new ConfigException(cid(correlationId), MqttErrorCode.NoHost, `MQTT connection uri has no host: ${key}.uri`)
            .withDetails('key', `${key}.uri`);
    }
    if (explicitHost != null && stripBrackets(explicitHost).toLowerCase() !== host.toLowerCase()) {
        throw configConflict(correlationId, `${key}.host`, `host '${explicitHost}' differs from the uri host '${host}'`);
    }
    const port = url.port === '' ? defaultPort(uriProtocol) : checkPort(correlationId, `${key}.uri`, url.port);
    if (explicitPort != null && explicitPort !== port) {
        throw configConflict(correlationId, `${key}.port`, `port ${explicitPort} differs from the uri port ${port}`);
    }
    const uriPath = url.pathname !== '' && url.pathname !== '/' ? url.pathname : null;
    if (explicitPath != null && uriPath != null && explicitPath !== uriPath) {
        throw configConflict(correlationId, `${key}.path`, `path '${explicitPath}' differs from the uri path '${uriPath}'`);
    }

    const query: Record<string, string> = {};
    for (const [name, value] of url.searchParams) {
        const configKey = URI_QUERY_KEYS[name];
        if (configKey == null) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.BadUri,
                `MQTT ${key}.uri has an unknown query parameter '${name}' (known: ${Object.keys(URI_QUERY_KEYS).join(', ')})`)
                .withDetails('key', `${key}.uri`).withDetails('parameter', name);
        }
        if (query[configKey] !== undefined && query[configKey] !== value) {
            throw configConflict(correlationId, `${key}.uri`, `query parameter for '${configKey}' is given twice`);
        }
        query[configKey] = value;
    }

    return {
        server: makeServer(uriProtocol, host, port, explicitPath ?? uriPath ?? null),
        username: decodeUserInfo(correlationId, key, url.username),
        password: decodeUserInfo(correlationId, key, url.password),
        query,
    };
}

/**
 * True when every '@' of a uri without user info is in a query made of known parameters (an
 * '@' in a client_id, say). Otherwise the '@' most likely ended a password holding '/', '?' or '#'.
 */
function atOnlyInKnownQuery(uri: string, url: URL): boolean {
    const queryStart = uri.indexOf('?');
    if (queryStart < 0 || uri.indexOf('@') < queryStart || url.hash.includes('@')) return false;
    return [...url.searchParams.keys()].every((name) => URI_QUERY_KEYS[name] !== undefined);
}

function decodeUserInfo(correlationId: string | null, key: string, value: string): string | undefined {
    if (value === '') return undefined;
    try {
        return decodeURIComponent(value);
    } catch {
        // The message does not repeat the value: it may be a password.
        throw new ConfigException(cid(correlationId), MqttErrorCode.BadUri,
            `MQTT connection uri has malformed percent-encoding in its user info: ${key}.uri`).withDetails('key', `${key}.uri`);
    }
}

/**
 * MQTT.js fails over between servers that share one transport setting: TCP or TLS servers,
 * or WebSocket servers with one path. Mixing them would connect some servers wrongly.
 */
export function checkFailover(correlationId: string | null, keys: string[], servers: MqttServer[]): void {
    if (servers.length < 2) return;
    const first = servers[0];
    const isWs = (s: MqttServer): boolean => s.protocol === 'ws' || s.protocol === 'wss';
    servers.forEach((server, i) => {
        if (isWs(server) !== isWs(first)) {
            throw configConflict(correlationId, keys[i], 'failover servers must all use WebSocket (ws, wss) or all use TCP (mqtt, mqtts)');
        }
        if (server.path !== first.path) {
            throw configConflict(correlationId, `${keys[i]}.path`, `failover WebSocket servers must share one path ('${first.path}')`);
        }
    });
}

function makeServer(protocol: MqttProtocol, host: string, port: number, path: string | null): MqttServer {
    if (protocol === 'ws' || protocol === 'wss') return { protocol, host, port, path: path ?? DEFAULT_WS_PATH };
    return { protocol, host, port };
}

function checkPort(correlationId: string | null, key: string, text: string): number {
    const port = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new ConfigException(cid(correlationId), MqttErrorCode.BadPort,
            `MQTT connection port must be an integer from 1 to 65535: ${key} is '${text}'`).withDetails('key', key);
    }
    return port;
}

function unknownProtocol(correlationId: string | null, key: string, value: string): ConfigException {
    return new ConfigException(cid(correlationId), MqttErrorCode.UnknownProtocol,
        `MQTT protocol '${value}' is not supported (${key}); use mqtt, mqtts, ws or wss (aliases tcp, ssl, tls)`)
        .withDetails('key', key);
}


function stripBrackets(host: string): string {
    return host.startsWith('[') && host.endsWith(']') ? host.substring(1, host.length - 1) : host;
}

/** A server for logs and messages: `protocol://host:port[/path]`. */
export function displayServer(server: MqttServer): string {
    const host = server.host.includes(':') ? `[${server.host}]` : server.host;
    return `${server.protocol}://${host}:${server.port}${server.path ?? ''}`;
}
